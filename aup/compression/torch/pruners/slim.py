"""``slim``: Network Slimming (Liu et al., ICCV 2017) on BatchNorm scales.

All configured BatchNorm2d layers share ONE threshold: their ``|gamma|`` are pooled, the
``int(sparsity * total)``-th smallest is the threshold, and every channel with ``|gamma|`` not above
it is pruned, on the BN weight and bias (NNI 2.0's rule, ties included). Per-layer sparsity therefore
varies, and a layer may lose all channels unless excluded. Best after training with an L1 penalty on
gamma (the user's training loop). With several entries the sparsity must be the same (schema).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import Pruner

__all__ = ["SlimPruner"]


class SlimPruner(Pruner):
    """``SlimPruner(model, config_list, optimizer=None)``: BatchNorm2d channels by one global |gamma| threshold."""

    compressor_name: ClassVar[str] = "slim"
    supported_op_types: ClassVar[tuple[str, ...] | None] = ("BatchNorm2d",)

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        super().__init__(model, config_list, optimizer=optimizer)

    def _gammas(self, name: str) -> torch.Tensor:
        module = self.layers[name].module
        gamma = module.weight.detach().abs().float().cpu()
        current = self.masks.masks.get(name, {}).get("weight")
        return gamma * current.float().cpu() if current is not None else gamma

    def global_threshold(self, sparsities: dict[str, float]) -> float | None:
        """The pooled-|gamma| threshold; the sparsity is the channel-weighted mean of ``sparsities``."""
        gammas = [self._gammas(name) for name in sparsities]
        pooled = torch.cat(gammas) if gammas else torch.zeros(0)
        sizes = [g.numel() for g in gammas]
        sparsity = sum(s * n for s, n in zip(sparsities.values(), sizes)) / max(sum(sizes), 1)
        k = int(pooled.numel() * sparsity)
        if k < 1:
            return None
        return float(torch.topk(pooled, k, largest=False).values.max())

    def calc_mask(self, name: str, module: nn.Module, sparsity: float, *, threshold: float | None = None,
                  **context: Any) -> dict[str, torch.Tensor | None]:
        if threshold is None:
            return {"weight": None, "bias": None}
        keep = (self._gammas(name) > threshold).to(module.weight)
        return {"weight": keep, "bias": keep.clone() if module.bias is not None else None}

    def calc_masks(self, sparsities: dict[str, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        threshold = self.global_threshold(sparsities)
        return {name: self.calc_mask(name, self.layers[name].module, s, threshold=threshold)
                for name, s in sparsities.items()}
