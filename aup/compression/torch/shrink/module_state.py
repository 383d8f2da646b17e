"""A restorable record of a model's modules, so that a failed physical shrink can be undone.

Both shrinks (torch-pruning's for filters and channels, aup's own for transformer heads) replace
parameters, buffers or child modules and set shape attributes (``out_features``, ``num_heads``);
neither edits a tensor in place, so keeping references is enough to put everything back.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from torch import nn

__all__ = ["ModuleState", "restore_modules", "snapshot_modules"]

_PLAIN = (int, float, bool, tuple, type(None))  # the shape attributes a shrink may set


class ModuleState(NamedTuple):
    params: dict[str, Any]
    buffers: dict[str, Any]
    children: dict[str, Any]
    attrs: dict[str, Any]


def snapshot_modules(model: nn.Module) -> dict[nn.Module, ModuleState]:
    """References to every module's parameters, buffers, children and plain public attributes."""
    return {m: ModuleState(dict(m._parameters), dict(m._buffers), dict(m._modules),
                           {k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, _PLAIN)})
            for m in model.modules()}


def restore_modules(snapshot: Mapping[nn.Module, ModuleState]) -> None:
    """Put every recorded module back as :func:`snapshot_modules` saw it."""
    for module, state in snapshot.items():
        for live, saved in ((module._parameters, state.params), (module._buffers, state.buffers),
                            (module._modules, state.children)):
            live.clear()
            live.update(saved)
        for key, value in state.attrs.items():
            setattr(module, key, value)
