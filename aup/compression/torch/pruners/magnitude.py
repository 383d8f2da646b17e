"""``level``: fine-grained magnitude pruning (Han et al., NeurIPS 2015).

Per layer, the ``int(sparsity * numel)`` weight elements with the smallest absolute value are
zeroed (NNI 2.0's count). NNI thresholds with ``|w| > kth smallest``, which also prunes every
element tied with the threshold; we prune exactly that many elements (ties broken by position), so
the achieved sparsity is the target's. Biases are not pruned. Elements masked before stay among the
smallest (they are zero), so a schedule that raises the sparsity only grows the pruned set.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.base import Pruner

__all__ = ["LevelPruner"]


def smallest_magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask zeroing the ``int(sparsity * numel)`` smallest ``|weight|`` elements."""
    flat = weight.detach().abs().flatten()
    k = int(flat.numel() * sparsity)
    mask = torch.ones_like(flat)
    if k > 0:
        order = torch.argsort(flat, stable=True)
        mask[order[:k]] = 0
    return mask.view_as(weight)


class LevelPruner(Pruner):
    """``LevelPruner(model, config_list, optimizer=None)``: any layer with a weight, element-wise."""

    compressor_name: ClassVar[str] = "level"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        super().__init__(model, config_list, optimizer=optimizer)

    def calc_mask(self, name: str, module: nn.Module, sparsity: float, **context: Any) -> dict[str, torch.Tensor | None]:
        weight = module.weight.detach()
        current = self.masks.masks.get(name, {}).get("weight")
        if current is not None:
            weight = weight * current.to(weight)
        return {"weight": smallest_magnitude_mask(weight, sparsity), "bias": None}
