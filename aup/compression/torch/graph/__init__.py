"""The dependency graph service: which layers are tied, traced once per pruner on the meta device.

Used by the pruners (dependency-aware masks), the physical shrink and the analysis tools."""
from __future__ import annotations

from aup.compression.torch.graph.dependency import ChannelDependency, SharedGraph

__all__ = ['ChannelDependency', 'SharedGraph']
