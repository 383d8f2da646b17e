"""``slim``: Network Slimming (Liu et al., ICCV 2017) on BatchNorm scales.

All configured BatchNorm2d layers share ONE threshold: their ``|gamma|`` are pooled and the
``int(sparsity * total)`` smallest are pruned, on the BN weight and bias (NNI 2.0's rule). NNI pruned
every channel with ``|gamma| <= threshold``, so ties at the threshold went too; on a freshly
initialised network (all gammas 1) that pruned *everything*. We prune exactly that many channels
(ties broken by position), which gives NNI's masks whenever there are no ties at the threshold.
Per-layer sparsity varies, and a layer may lose all its channels unless excluded. Best after training with an L1 penalty on
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

    def global_pruned(self, sparsities: dict[str, float]) -> dict[str, torch.Tensor]:
        """Per layer, which channels fall in the globally smallest ``int(sparsity * total)`` |gamma|.

        The sparsity is the channel-weighted mean of ``sparsities`` (the config's shared value).
        """
        gammas = {name: self._gammas(name) for name in sparsities}
        sizes = [g.numel() for g in gammas.values()]
        pooled = torch.cat(list(gammas.values())) if gammas else torch.zeros(0)
        sparsity = sum(s * n for s, n in zip(sparsities.values(), sizes)) / max(sum(sizes), 1)
        k = int(pooled.numel() * sparsity)
        pruned = torch.zeros(pooled.numel(), dtype=torch.bool)
        pruned[torch.argsort(pooled, stable=True)[:k]] = True
        return dict(zip(gammas, torch.split(pruned, sizes)))

    def calc_mask(self, name: str, module: nn.Module, sparsity: float, *, pruned: torch.Tensor | None = None,
                  **context: Any) -> dict[str, torch.Tensor | None]:
        if pruned is None:
            raise ValueError("slim prunes all its layers together; use compute_masks()")
        keep = (~pruned).to(module.weight)
        return {"weight": keep, "bias": keep.clone() if module.bias is not None else None}

    def calc_masks(self, sparsities: dict[str, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        pruned = self.global_pruned(sparsities)
        return {name: self.calc_mask(name, self.layers[name].module, s, pruned=pruned[name])
                for name, s in sparsities.items()}
