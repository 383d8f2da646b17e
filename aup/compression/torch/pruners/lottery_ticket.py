"""``lottery_ticket``: iterative magnitude pruning with rewinding (Frankle & Carbin, ICLR 2019).

The Lottery Ticket Hypothesis: a dense network contains a sparse subnetwork that, trained from the
*same initial weights*, matches the dense accuracy. To find it, train, prune the smallest-magnitude
weights, rewind the survivors to their initial values, and repeat. NNI 2.0's schedule:
``prune_iterations + 1`` rounds; round 0 trains the dense network; round k >= 1 prunes each layer to
the cumulative sparsity ``1 - ((1 - s) ** (1 / prune_iterations)) ** k`` (so each round keeps the same
fraction of what was left and the last round reaches ``s``), using the level criterion on the trained
weights, then, with ``reset_weights=True``, reloads the model state, the optimizer state and the
lr-scheduler state saved when the pruner was created. The masks are fine-grained (no speedup).

Usage (the seed's)::

    pruner = aup.create_compressor(model, config, optimizer=opt, lr_scheduler=sched)
    pruner.compress()
    for _ in pruner.get_prune_iterations():
        pruner.prune_iteration_start()
        for epoch in range(epochs):
            train(...)
"""
from __future__ import annotations

import copy
import logging
from typing import Any, ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.magnitude import LevelPruner

__all__ = ["LotteryTicketPruner", "lottery_round_sparsity"]

logger = logging.getLogger(__name__)


def lottery_round_sparsity(final_sparsity: float, prune_iterations: int, round_index: int) -> float:
    """Cumulative sparsity after ``round_index`` pruning rounds (0 for the dense round 0)."""
    keep_once = (1.0 - final_sparsity) ** (1.0 / prune_iterations)
    return max(1.0 - keep_once ** round_index, 0.0)


class LotteryTicketPruner(LevelPruner):
    """``LotteryTicketPruner(model, config_list, optimizer=None, lr_scheduler=None, reset_weights=True)``.

    The initial model state (and optimizer / lr-scheduler state) is the one at construction: create
    the pruner before training. Without an ``optimizer`` only the model is rewound (NNI required one).
    """

    compressor_name: ClassVar[str] = "lottery_ticket"

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        reset_weights: bool = True,
    ) -> None:
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"lottery_ticket: optimizer must be a torch.optim optimizer or None, got {optimizer!r}")
        if lr_scheduler is not None and not hasattr(lr_scheduler, "state_dict"):
            raise ValueError(f"lottery_ticket: lr_scheduler must be a torch lr scheduler or None, got {lr_scheduler!r}")
        super().__init__(model, config_list, optimizer=optimizer)
        iterations = {int(layer.config["prune_iterations"]) for layer in self.layers.values()}
        if len(iterations) != 1:
            raise ValueError(f"config_list: prune_iterations must be the same in every entry, got {sorted(iterations)}")
        self.prune_iterations = iterations.pop()
        self.reset_weights = bool(reset_weights)
        self.lr_scheduler = lr_scheduler
        self.curr_prune_iteration: int | None = None
        self.initial_state = copy.deepcopy(model.state_dict())
        self.initial_optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        self.initial_scheduler_state = copy.deepcopy(lr_scheduler.state_dict()) if lr_scheduler is not None else None

    # ------------------------------------------------------------------ schedule
    def get_prune_iterations(self) -> range:
        """``range(prune_iterations + 1)``: round 0 is dense, then one round per pruning step."""
        return range(self.prune_iterations + 1)

    def layer_sparsities(self) -> dict[str, float]:
        """Each layer's cumulative sparsity for the current round."""
        k = self.curr_prune_iteration or 0
        return {name: lottery_round_sparsity(float(layer.config["sparsity"]), self.prune_iterations, k)
                for name, layer in self.layers.items()}

    def compress(self) -> nn.Module:
        """Attach the (all-ones) masks; pruning happens in :meth:`prune_iteration_start`."""
        self._attach_masks()
        return self.model

    def prune_iteration_start(self) -> None:
        """Begin the next round: prune the trained weights further, then rewind to the initial state."""
        k = 0 if self.curr_prune_iteration is None else self.curr_prune_iteration + 1
        if k > self.prune_iterations:
            raise ValueError(f"lottery_ticket: all {self.prune_iterations + 1} rounds are done "
                             "(loop over get_prune_iterations() and call prune_iteration_start() once per round)")
        self.curr_prune_iteration = k
        self.compute_masks()
        logger.info("lottery_ticket: round %d/%d, sparsity %.4f", k, self.prune_iterations, self.sparsity())
        if self.reset_weights:
            self.rewind()

    def rewind(self) -> None:
        """Reload the initial weights (masked), optimizer state and lr-scheduler state."""
        self.model.load_state_dict(self.initial_state)
        self.masks.apply_all()
        if self.optimizer is not None and self.initial_optimizer_state is not None:
            self.optimizer.load_state_dict(self.initial_optimizer_state)
        if self.lr_scheduler is not None and self.initial_scheduler_state is not None:
            self.lr_scheduler.load_state_dict(self.initial_scheduler_state)
