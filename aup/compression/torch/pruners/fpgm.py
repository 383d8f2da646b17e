"""``fpgm``: Filter Pruning via Geometric Median (He et al., CVPR 2019).

Filters near the geometric median of a layer's filters are the most replaceable by the others.
The score of filter i is ``sum_j ||W[i] - W[j]||_2``; the filters with the smallest sum (closest to
the median) are pruned, as in NNI 2.0's FPGM masker.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.structured import FilterPruner

__all__ = ["FPGMPruner", "distance_sums"]


def distance_sums(weight: torch.Tensor) -> torch.Tensor:
    """Sum of Euclidean distances from each filter to all filters of the layer."""
    flat = weight.detach().flatten(1).double()
    return torch.cdist(flat, flat).sum(1).float()


class FPGMPruner(FilterPruner):
    """``FPGMPruner(model, config_list, optimizer=None, dependency_aware=False, dummy_input=None)``."""

    compressor_name: ClassVar[str] = "fpgm"

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        return distance_sums(self.masked_weight(name, module))
