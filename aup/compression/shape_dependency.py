"""Auptimizer's module path ``aup.compression.shape_dependency`` (its utility docs and example use it).

The implementation is :mod:`aup.compression.torch.graph.dependency` (torch-pruning's dependency
graph); importing this module imports torch.
"""
from aup.compression.torch.graph.dependency import ChannelDependency

__all__ = ["ChannelDependency"]
