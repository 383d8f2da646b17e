"""``CriterionSchedule``: a schedule or search that prunes by calling a base criterion.

AGP, ADMM, the sensitivity pruner and the search pruners (NetAdapt, simulated annealing,
AutoCompress) decide *how much* each layer loses and *when*; a criterion (level, l1, l2, fpgm, slim,
taylorfo, apoz, mean_activation: any filter or element scorer) decides *which* elements or filters go.
They are composed, not inherited:

- the criterion is an ordinary :class:`~.base.Pruner` on the same model (``self.base``), built by the
  schedule and called through its public API (``check_module``, ``calc_masks``, ``compute_masks``,
  ``statistics_ready``);
- the schedule owns the one :class:`~..masking.MaskStore` and lends it to the criterion
  (:meth:`Pruner.use_masks`), so the criterion sees the masks already applied (a schedule only grows
  the pruned set) and writes its new masks where the schedule enforces, reports and exports them.

A new criterion therefore works under every schedule without touching them: it needs its class and
its catalog entry (``nni_alias`` makes it selectable as ``pruning_algorithm`` / ``base_algo``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aup.compression.torch.masking import Masks
from aup.compression.torch.pruners.base import Pruner

__all__ = ["CriterionSchedule"]


class CriterionSchedule(Pruner):
    """Base of the schedules and searches over a criterion; ``self.base`` is the criterion.

    Pass the criterion to the constructor when it can be built before the layers are selected (its
    ``check_module`` then decides which layers the schedule accepts); otherwise override
    :meth:`check_module` and call :meth:`attach_criterion` once the layers are known.
    """

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], base: Pruner | None = None,
                 optimizer: torch.optim.Optimizer | None = None, dummy_input: Any = None) -> None:
        self.base: Pruner = base  # type: ignore[assignment]  # None only until attach_criterion
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)
        if base is not None:
            self.attach_criterion(base)

    def attach_criterion(self, base: Pruner) -> None:
        """Make ``base`` this schedule's criterion, working on this schedule's mask store."""
        self.base = base
        base.use_masks(self.masks)

    def check_module(self, name: str, module: nn.Module) -> str | None:
        """The criterion decides which layers can be pruned."""
        return self.base.check_module(name, module)

    def calc_masks(self, sparsities: dict[str, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        return self.base.calc_masks(sparsities)

    def prune_to(self, sparsities: dict[str, float]) -> Masks:
        """Apply the criterion's full rule (e.g. filters and their BatchNorm) at ``sparsities``."""
        return self.base.compute_masks(sparsities)
