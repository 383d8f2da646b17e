"""Auptimizer's module path ``aup.compression.counter``: ``count_flops_params(model, x, verbose=True)``.

The counter is aup's mask-aware one (:func:`aup.compression.torch.base.count_flops_params`): "flops"
are MACs per sample, masked weights count as removed. Importing this module imports torch.
"""
from aup.compression.torch.base import count_flops_params

__all__ = ["count_flops_params"]
