"""The transformer pruner's masks, kept as removed indices per parameter and enforced by hooks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["UnitMasks", "ZeroRows"]


class ZeroRows:
    """Forward pre-hook: zero the removed rows/columns of the module's parameters (one index_fill each)."""

    def __init__(self, slices: list[tuple[str, int, torch.Tensor]]) -> None:
        self.slices = slices

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        with torch.no_grad():
            for key, dim, rows in self.slices:
                param = module._parameters.get(key)
                if param is not None:
                    param.index_fill_(dim, rows.to(param.device), 0)


class _ZeroGrad:
    """Tensor hook: no gradient for removed rows/columns (so optimizers never move them)."""

    def __init__(self, dim: int, rows: torch.Tensor) -> None:
        self.dim, self.rows = dim, rows

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.index_fill(self.dim, self.rows.to(grad.device), 0)


class UnitMasks:
    """The pruner's masks as removed indices per parameter, enforced like :class:`..masking.MaskStore`.

    Why not full mask tensors: whole heads and channels are index sets, and on a BERT-base model
    materialising, copying and multiplying a float mask per projection cost more than the shrink
    itself.  Zeroing touches only the removed elements.  ``to_nni()`` builds NNI-format masks on
    request (mask file, metrics).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows: dict[tuple[str, str, int], torch.Tensor] = {}
        self.shapes: dict[tuple[str, str], torch.Size] = {}
        self._handles: list[Any] = []
        self._optimizer_handles: list[Any] = []
        self.on_optimizer = False

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def set(self, rows: dict[tuple[str, str, int], torch.Tensor]) -> None:
        """Replace the removed indices, (re)attach the hooks and zero the removed elements now."""
        self.detach_modules()
        self.rows = dict(rows)
        modules = dict(self.model.named_modules())
        per_module: dict[str, list[tuple[str, int, torch.Tensor]]] = {}
        for (name, key, dim), index in self.rows.items():
            param = modules[name]._parameters[key]
            self.shapes[(name, key)] = param.shape
            per_module.setdefault(name, []).append((key, dim, index))
            self._handles.append(param.register_hook(_ZeroGrad(dim, index)))
        for name, slices in per_module.items():
            self._handles.append(modules[name].register_forward_pre_hook(ZeroRows(slices)))
        self.apply_all()

    @torch.no_grad()
    def apply_all(self) -> None:
        modules = dict(self.model.named_modules())
        for (name, key, dim), index in self.rows.items():
            param = modules.get(name)._parameters.get(key) if name in modules else None
            if param is not None and param.shape == self.shapes.get((name, key)):
                param.index_fill_(dim, index.to(param.device), 0)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-zero after each ``optimizer.step()`` (weight decay moves zeros)."""
        self._optimizer_handles.append(optimizer.register_step_post_hook(lambda *_: self.apply_all()))
        self.on_optimizer = True

    def detach_modules(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def detach(self) -> None:
        """Remove every hook (the removed elements stay zero)."""
        self.detach_modules()
        for handle in self._optimizer_handles:
            handle.remove()
        self._optimizer_handles.clear()

    def to_nni(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """``{module: {"weight": mask, "bias": mask or None, ...}}`` for the original shapes."""
        out: dict[str, dict[str, torch.Tensor | None]] = {}
        for (name, key, dim), index in self.rows.items():
            entry = out.setdefault(name, {"weight": None, "bias": None})
            mask = entry.get(key)
            if mask is None:
                mask = entry[key] = torch.ones(self.shapes[(name, key)])
            mask.index_fill_(dim, index, 0)
        return out

