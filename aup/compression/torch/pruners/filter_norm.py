"""``l1_filter`` / ``l2_filter``: prune the conv filters with the smallest norm (Li et al., ICLR 2017).

The score of output filter i is ``sum |W[i]|`` (L1) or ``sqrt(sum W[i]^2)`` (L2) over its input
channels and kernel; the ``int(sparsity * n_filters)`` lowest go, and, as in NNI 2.0's threshold
masker, every other filter tied with the last of them (``prune_exactly=True``: exactly that many;
see :mod:`.structured`).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.structured import FilterPruner

__all__ = ["L1FilterPruner", "L2FilterPruner"]


class L1FilterPruner(FilterPruner):
    """``L1FilterPruner(model, config_list, optimizer=None, dependency_aware=False, dummy_input=None,
    *, prune_exactly=False)``."""

    compressor_name: ClassVar[str] = "l1_filter"
    prunes_ties: ClassVar[bool] = True

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        return self.masked_weight(name, module).flatten(1).abs().sum(1)


class L2FilterPruner(FilterPruner):
    """``L2FilterPruner(model, config_list, optimizer=None, dependency_aware=False, dummy_input=None,
    *, prune_exactly=False)``."""

    compressor_name: ClassVar[str] = "l2_filter"
    prunes_ties: ClassVar[bool] = True

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        return self.masked_weight(name, module).flatten(1).pow(2).sum(1).sqrt()
