"""Auptimizer's module path ``aup.compression.mask_conflict``: ``fix_mask_conflict(masks, model, dummy_input)``.

The implementation is :mod:`aup.compression.torch.graph.mask_conflict`; importing this module imports torch.
"""
from aup.compression.torch.graph.mask_conflict import fix_mask_conflict

__all__ = ["fix_mask_conflict"]
