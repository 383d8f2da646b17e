"""``taylor_fo_weight_filter``: first-order Taylor importance (Molchanov et al., CVPR 2019).

The importance of filter i is ``sum over its elements of (w * dL/dw)^2``, accumulated over the
first ``statistics_batch_num`` training batches. The gradients are the user's: the pruner hooks the
given ``optimizer`` (required) and reads ``w`` and ``w.grad`` just before each step, i.e. the
weights that produced the gradient; once enough batches were seen the masks are computed right
after that step. Until then the model is dense (NNI 2.0's one-shot Taylor pruner). NNI 2.0 read the
weights *after* ``optimizer.step()`` (its hook ran after the step) with the gradient of the weights
before it; aup pairs each gradient with the weights it was computed at, the product the Taylor
expansion is about.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.structured import FilterPruner

__all__ = ["TaylorFOWeightFilterPruner"]


class TaylorFOWeightFilterPruner(FilterPruner):
    """``TaylorFOWeightFilterPruner(model, config_list, optimizer, statistics_batch_num=1,
    dependency_aware=False, dummy_input=None)``."""

    compressor_name: ClassVar[str] = "taylor_fo_weight_filter"

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        statistics_batch_num: int = 1,
        dependency_aware: bool = False,
        dummy_input: Any = None,
    ) -> None:
        if optimizer is None:
            raise ValueError("taylor_fo_weight_filter: optimizer is required (the importance is gathered from "
                             "the gradients of your training steps); pass optimizer=<your optimizer>")
        if isinstance(statistics_batch_num, bool) or not isinstance(statistics_batch_num, int) or statistics_batch_num < 1:
            raise ValueError(f"taylor_fo_weight_filter: statistics_batch_num must be an integer >= 1, "
                             f"got {statistics_batch_num!r}")
        super().__init__(model, config_list, optimizer=optimizer, dependency_aware=dependency_aware,
                         dummy_input=dummy_input)
        self.statistics_batch_num = statistics_batch_num
        self.batches = 0
        self.contributions: dict[str, torch.Tensor] = {}

    def before_optimizer_step(self) -> None:
        """Accumulate ``(w * grad)^2`` per filter from this batch's gradients."""
        if self.batches >= self.statistics_batch_num or not self.masks.attached:
            return
        with torch.no_grad():
            for name, layer in self.layers.items():
                weight = layer.module.weight
                if weight.grad is None:
                    return  # no backward pass happened for this step; do not count it
            for name, layer in self.layers.items():
                weight = layer.module.weight
                contribution = (weight.detach() * weight.grad.detach()).pow(2).flatten(1).sum(1).double().cpu()
                previous = self.contributions.get(name)
                self.contributions[name] = contribution if previous is None else previous + contribution
        self.batches += 1

    def statistics_ready(self) -> bool:
        return self.batches >= self.statistics_batch_num

    def reset_statistics(self) -> None:
        """Forget the gathered importance and collect again (for schedules)."""
        self.batches = 0
        self.contributions.clear()
        self.masks_calculated = False

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        if name not in self.contributions:
            raise ValueError(f"taylor_fo_weight_filter: no gradient statistics for {name!r} yet; "
                             "run a training step with the optimizer first")
        return self.contributions[name].float()
