"""What a physical shrink did: :class:`ShrinkReport`, :class:`ShrinkError`, and the masks
re-indexed for the shrunk shapes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from aup.compression.torch.shrink.module_state import ModuleState
from aup.compression.torch.shrink.zero_channels import is_depthwise

__all__ = ["ShrinkError", "ShrinkReport"]

Masks = Mapping[str, Mapping[str, "torch.Tensor | None"]]


class ShrinkError(RuntimeError):
    """The shrunk model's outputs differ from the masked model's (the model was restored)."""


@dataclass
class ShrinkReport:
    """What :func:`shrink_model` did.

    ``removed``: output channels removed per module; ``kept_dense``: masked modules that could not
    be shrunk at all, with the reason; ``kept_masked``: masked-out channels that had to stay (their
    group was not all zero there), explained in ``notes``; ``arch_changes``: new shapes per module;
    ``masks``: the remaining (element-wise) masks, re-indexed for the shrunk shapes.
    """

    removed: dict[str, int] = field(default_factory=dict)
    kept_dense: dict[str, str] = field(default_factory=dict)
    kept_masked: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    max_abs_diff: float = 0.0
    seconds: float = 0.0
    check_seconds: float = 0.0  # of ``seconds``: the forward passes of the output check (masked reference, shrunk)
    arch_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _masks: Any = field(default_factory=dict, repr=False)

    @property
    def masks(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """Remaining masks for the shrunk shapes (computed on first use: slicing big masks costs time)."""
        if callable(self._masks):
            self._masks = self._masks()
        return self._masks

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (without the mask tensors), for meta data and trial records."""
        return {
            "removed": dict(self.removed), "kept_dense": dict(self.kept_dense),
            "kept_masked": dict(self.kept_masked), "notes": dict(self.notes),
            "params_before": self.params_before, "params_after": self.params_after,
            "max_abs_diff": self.max_abs_diff, "seconds": self.seconds, "check_seconds": self.check_seconds,
            "arch_changes": {k: dict(v) for k, v in self.arch_changes.items()},
        }


def finish_report(report: ShrinkReport, modules: Mapping[str, nn.Module], masks: Masks,
                   removed_out: Mapping[nn.Module, list[int]], removed_in: Mapping[nn.Module, list[int]],
                   snapshot: Mapping[nn.Module, ModuleState]) -> None:
    for name, module in modules.items():
        if module in removed_out:
            report.removed[name] = len(set(removed_out[module]))
        old_params = snapshot[module].params
        change = {k: list(p.shape) for k, p in module._parameters.items()
                  if p is not None and old_params.get(k) is not None and p.shape != old_params[k].shape}
        if change:
            for attr in ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features"):
                if hasattr(module, attr):
                    change[attr] = getattr(module, attr)
            report.arch_changes[name] = change
    removed_out, removed_in = dict(removed_out), dict(removed_in)
    report._masks = lambda: {name: _slice_entry(modules[name], entry, removed_out.get(modules[name], []),
                                                removed_in.get(modules[name], []))
                             for name, entry in masks.items()}


def _slice_entry(module: nn.Module, entry: Mapping[str, torch.Tensor | None], out_idx: list[int],
                 in_idx: list[int]) -> dict[str, torch.Tensor | None]:
    """The module's masks for its new shapes (removed channels dropped, element zeros kept)."""
    out: dict[str, torch.Tensor | None] = {}
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    for key, mask in entry.items():
        param = getattr(module, key, None)
        if mask is None or not isinstance(param, torch.Tensor):
            out[key] = None
            continue
        sliced = mask.detach()
        out_dim, in_dim = (1, 0) if transposed and key == "weight" else (0, 1)
        sliced = drop_indices(sliced, out_dim, out_idx)
        if key == "weight" and sliced.dim() > 1 and not is_depthwise(module):
            sliced = drop_indices(sliced, in_dim, in_idx)
        if sliced.shape != param.shape:  # an unusual layout: fall back to the zeros of the weights
            sliced = (param.detach() != 0).to(mask.dtype)
        out[key] = sliced.clone()
    return out


def drop_indices(t: torch.Tensor, dim: int, idxs: Iterable[int]) -> torch.Tensor:
    drop = set(idxs)
    if not drop or t.dim() <= dim:
        return t
    keep = [i for i in range(t.shape[dim]) if i not in drop]
    return t.index_select(dim, torch.tensor(keep, dtype=torch.long, device=t.device))
