"""``agp``: Automated Gradual Pruning (Zhu & Gupta, "To prune, or not to prune", 2017).

The sparsity of each layer rises along a cubic curve, fast while redundant weights abound and slowly
near the end, while the network keeps training between pruning steps:

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / span)^3,  span = ((end - start - 1) // freq) * freq

with NNI 2.0's epoch semantics: masks are (re)computed at the epochs ``t`` with ``t >= start_epoch``
and ``(t - start_epoch) % frequency == 0``; from ``end_epoch`` on the target is ``final_sparsity``.
NNI 2.0 only recomputed the masks after the next optimizer step; we compute them as soon as
``update_epoch(epoch)`` announces a pruning epoch (weight criteria), or once the statistics of that
epoch are complete (taylorfo, apoz, mean_activation collect fresh statistics each pruning epoch
from the user's training batches). ``update_epoch(0)`` is ignored, as in NNI, since epoch 0 is
handled by ``compress()``. Where NNI asserted on a span of 0 (``end_epoch == start_epoch + 1``), the
single pruning step goes straight to ``final_sparsity``.

Any base criterion works (``pruning_algorithm``: level, slim, l1, l2, fpgm, taylorfo, apoz,
mean_activation); it sees the already-masked weights, so each step only grows the pruned set, and
with a structured base the masks are whole filters/channels that ``apply_speedup`` removes.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

import aup.compression.catalog as catalog
from aup.compression.torch.analysis import BASE_ALGOS, base_pruner_class
from aup.compression.torch.pruners.base import Pruner
from aup.compression.torch.pruners.schedule import CriterionSchedule

__all__ = ["AGPPruner", "agp_target_sparsity"]

logger = logging.getLogger(__name__)


def agp_target_sparsity(config: Mapping[str, Any], epoch: int) -> float:
    """The AGP target sparsity of one config entry at ``epoch`` (NNI 2.0's formula and defaults)."""
    start = int(config.get("start_epoch", 0))
    end = int(config.get("end_epoch", 1))
    freq = int(config.get("frequency", 1))
    final = float(config.get("final_sparsity", 0.0))
    initial = float(config.get("initial_sparsity", 0.0))
    if end <= start or initial >= final or epoch >= end:
        return final
    span = ((end - start - 1) // freq) * freq
    if span <= 0:
        return final
    progress = min(max((epoch - start) / span, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def is_pruning_epoch(config: Mapping[str, Any], epoch: int) -> bool:
    """Whether masks are recomputed at ``epoch`` (on the frequency grid from ``start_epoch``)."""
    start = int(config.get("start_epoch", 0))
    freq = int(config.get("frequency", 1))
    return epoch >= start and (epoch - start) % freq == 0


class AGPPruner(CriterionSchedule):
    """``AGPPruner(model, config_list, optimizer, pruning_algorithm='level', **algo_kwargs)``.

    ``optimizer`` is required (AGP prunes while training, as NNI asserts). ``algo_kwargs`` go to the
    base pruner, e.g. ``dependency_aware=True, dummy_input=x`` for l1/l2/fpgm or
    ``statistics_batch_num=4`` for taylorfo/apoz/mean_activation. Call ``update_epoch(epoch)`` at each
    epoch (the seed's example calls it after each epoch with epochs counted from 1).
    """

    compressor_name: ClassVar[str] = "agp"

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        pruning_algorithm: str = "level",
        **algo_kwargs: Any,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError("agp: optimizer is required (AGP is an iterative pruner that prunes while you train); "
                             f"pass optimizer=<your torch.optim optimizer>, got {optimizer!r}")
        base_cls = base_pruner_class(pruning_algorithm, tuple(BASE_ALGOS), key="pruning_algorithm")
        try:
            base: Pruner = base_cls(model, config_list, optimizer=optimizer, **algo_kwargs)
        except TypeError as exc:
            raise ValueError(f"agp: pruning_algorithm={pruning_algorithm!r} does not accept {sorted(algo_kwargs)}: {exc}") from None
        super().__init__(model, config_list, base, optimizer=optimizer, dummy_input=algo_kwargs.get("dummy_input"))
        self.pruning_algorithm = pruning_algorithm
        self.now_epoch = 0
        self.applied: dict[str, float] = {}
        self.pending: dict[str, float] = {}
        self.history: list[tuple[int, dict[str, float]]] = []

    # ------------------------------------------------------------------ schedule
    def target_sparsity(self, name: str, epoch: int | None = None) -> float:
        """The cubic-schedule target of layer ``name`` at ``epoch`` (default: the current epoch)."""
        return agp_target_sparsity(self.layers[name].config, self.now_epoch if epoch is None else epoch)

    def layer_sparsities(self) -> dict[str, float]:
        return {name: self.target_sparsity(name) for name in self.layers}

    def _due_now(self) -> dict[str, float]:
        """Layers whose masks this epoch must update, with their targets."""
        due = {
            name: self.target_sparsity(name)
            for name, layer in self.layers.items()
            if is_pruning_epoch(layer.config, self.now_epoch) and self.applied.get(name) != self.target_sparsity(name)
        }
        if due and catalog.base_entry(self.pruning_algorithm).ranks_together:
            due = self.layer_sparsities()  # e.g. slim ranks all its BN layers together
        return due

    def _schedule(self) -> None:
        due = self._due_now()
        if not due:
            return
        self.pending = due
        if self.masks_calculated:
            self.base.reset_statistics()  # rank on fresh statistics from this epoch's batches
        self._apply_if_ready()

    def _apply_if_ready(self) -> None:
        if not self.pending or self.speedup_applied or not self.base.statistics_ready():
            return
        self.prune_to(self.pending)
        self.applied.update(self.pending)
        self.history.append((self.now_epoch, dict(self.pending)))
        logger.info("agp: epoch %d sparsities %s", self.now_epoch,
                    ", ".join(f"{n}={s:.3f}" for n, s in self.pending.items()))
        self.pending = {}
        self.masks_calculated = True

    def update_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: on a pruning epoch raise the masks to the schedule's target."""
        epoch = int(epoch)
        if epoch <= 0:
            return
        self.now_epoch = self.epoch = epoch
        if self.masks.attached:
            self._schedule()

    # ------------------------------------------------------------------ lifecycle
    def compress(self) -> nn.Module:
        """Attach the masks and apply epoch ``now_epoch``'s targets (statistics bases: once collected)."""
        self._attach_masks()
        self._attach_training_hooks()
        self._schedule()
        return self.model

    def _attach_training_hooks(self) -> None:
        self.base._attach_training_hooks()

    def statistics_ready(self) -> bool:
        return self.base.statistics_ready()

    def before_optimizer_step(self) -> None:
        self.base.before_optimizer_step()

    def after_optimizer_step(self) -> None:
        self._apply_if_ready()

    def step(self) -> None:
        self._apply_if_ready()
        if not self.speedup_applied:
            self.masks.apply_all()
