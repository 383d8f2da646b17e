"""Masks on a model's own parameters, without renaming or wrapping anything.

NNI 2.0 replaced every compressed module by a wrapper (``conv1.module.weight``, ``conv1.weight_mask``),
which changed the state_dict keys and broke saving. Here each ``weight``/``bias`` Parameter stays in
place; the masks live in a :class:`MaskStore` and are enforced three ways:

- a forward pre-hook zeroes the masked elements in place (on ``.data``, as NNI 2.0 did), so the
  forward pass always sees pruned weights even if something wrote into them;
- a tensor hook on each masked Parameter zeroes its gradient, so optimizers (momentum, Adam
  moments) never accumulate updates for pruned elements;
- :meth:`MaskStore.apply_all` re-zeroes after every optimizer step (weight decay) when an optimizer
  is attached, and whenever the compressor's ``step()`` is called.

Hooks are small picklable objects, so ``torch.save(model)`` and ``copy.deepcopy(model)`` still work.
Masks are float tensors of the parameter's shape (1 = keep, 0 = pruned), NNI's mask format. They may
be broadcast views rather than full copies: an untouched mask is one element expanded to the shape,
and a filter mask one value per filter (ResNet-50: 100 MB of masks become 100 KB, and building them
was a fifth of the whole prune-and-shrink path). Masks are never written in place.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

Masks = dict[str, dict[str, "torch.Tensor | None"]]
MASKABLE = ("weight", "bias")


class ForwardMask:
    """Forward pre-hook: zero the module's masked parameters before it runs."""

    def __init__(self, store: "MaskStore", name: str) -> None:
        self.store = store
        self.name = name

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        self.store.apply(self.name)


class _GradMask:
    """Tensor hook: zero the gradient of masked elements."""

    def __init__(self, store: "MaskStore", name: str, key: str) -> None:
        self.store = store
        self.name = name
        self.key = key

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        mask = self.store.masks[self.name][self.key]
        if mask is None:
            return grad
        return grad * mask.to(device=grad.device, dtype=grad.dtype)


def ones_mask(like: torch.Tensor) -> torch.Tensor:
    """An all-ones mask of ``like``'s shape, dtype and device: one element, expanded (no memory)."""
    return torch.ones((), dtype=like.dtype, device=like.device).expand_as(like)


def filter_mask(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The mask keeping whole filters (dim 0) where ``keep`` is True: one value per filter, expanded."""
    return keep.to(like)[(...,) + (None,) * (like.dim() - 1)].expand_as(like)


def per_filter(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as (filters, elements per filter), without copying a mask built by :func:`filter_mask`."""
    if mask.dim() > 1 and not any(mask.stride()[1:]):  # constant along every dim but the first
        return mask[(slice(None),) + (0,) * (mask.dim() - 1)].unsqueeze(1)
    return mask.flatten(1)


def pruned_channels(mask: torch.Tensor) -> torch.Tensor:
    """Per output channel (dim 0) of a weight mask: True where the whole filter is masked out.

    The one answer to "which channels are pruned" for criteria, schedules, searches and shrink: a
    1-D mask (a bias or BatchNorm scale) is per channel already; a mask built by :func:`filter_mask`
    is read once per filter, without a copy; a fine-grained mask counts a channel only when every
    element of its filter is zero. Masks are on the tensor's own device; the result is too.
    """
    if mask.dim() <= 1:
        return mask == 0
    rows = per_filter(mask)
    if rows.dtype == torch.bool:
        return ~rows.any(dim=1)
    low, high = torch.aminmax(rows, dim=1)  # one read of the mask, no copy (masks may hold any sign)
    return (low == 0) & (high == 0)


class MaskStore:
    """Masks of the compressed modules (by their ``named_modules()`` name) and the hooks enforcing them."""

    def __init__(self) -> None:
        self.masks: Masks = {}
        self.modules: dict[str, nn.Module] = {}
        self._handles: list[Any] = []
        self._optimizer_handles: list[Any] = []
        self._ones: set[tuple[str, str]] = set()  # masks still all ones (attached or reset, never set)

    def __getstate__(self) -> dict[str, Any]:
        """Hook handles point at the optimizer's hooks; a copied/saved model does not take them along."""
        state = dict(self.__dict__)
        state["_handles"] = []
        state["_optimizer_handles"] = []
        return state

    # -------------------------------------------------------------- attach / detach
    def attach(self, name: str, module: nn.Module, keys: Iterable[str] = MASKABLE) -> None:
        """Start masking ``module`` (all-ones masks until :meth:`set` is called)."""
        if name in self.modules:
            return
        self.modules[name] = module
        self.masks[name] = {}
        for key in dict.fromkeys((*MASKABLE, *keys)):  # weight/bias, or other parameters by name
            param = getattr(module, key, None)
            if key in keys and isinstance(param, nn.Parameter):
                self.masks[name][key] = ones_mask(param)
                self.__dict__.setdefault("_ones", set()).add((name, key))
                self._handles.append(param.register_hook(_GradMask(self, name, key)))
            else:
                self.masks[name][key] = None
        self._handles.append(module.register_forward_pre_hook(ForwardMask(self, name)))

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply all masks after each ``optimizer.step()`` (weight decay moves zeros)."""
        self._optimizer_handles.append(optimizer.register_step_post_hook(lambda *_: self.apply_all()))

    def detach(self) -> None:
        """Remove every hook (masks are kept, parameters keep their masked values)."""
        for handle in self._handles + self._optimizer_handles:
            handle.remove()
        self._handles.clear()
        self._optimizer_handles.clear()
        self.modules.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # -------------------------------------------------------------- masks
    def is_ones(self, name: str, key: str = "weight") -> bool:
        """Whether the mask is known to be all ones without reading it (attached or reset, not set
        since): criteria skip multiplying by it and looking for pruned filters in it."""
        return (name, key) in getattr(self, "_ones", ())

    def set(self, name: str, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
            copy: bool = True, **others: torch.Tensor | None) -> None:
        """Replace the masks of one module (None keeps the current mask) and apply them.

        ``copy=False``: the caller hands over tensors nobody else keeps (they are stored as given
        when already on the parameter's device and dtype)."""
        module = self.modules[name]
        for key, mask in (("weight", weight), ("bias", bias), *others.items()):
            if mask is None:
                continue
            param = getattr(module, key, None)
            if self.masks[name].get(key) is None or param is None:
                raise ValueError(f"cannot mask {name}.{key}: it is not a masked parameter")
            if mask.shape != param.shape:
                raise ValueError(f"mask for {name}.{key} has shape {tuple(mask.shape)}, expected {tuple(param.shape)}")
            stored = mask.to(device=param.device, dtype=param.dtype)  # the same tensor when it fits
            stored = stored.detach() if stored.requires_grad else stored
            self.masks[name][key] = stored.clone() if copy else stored
            getattr(self, "_ones", set()).discard((name, key))
        self.apply(name)

    def reset(self) -> None:
        """All masks back to ones (weights already zeroed stay zero until retrained or restored)."""
        ones = self.__dict__.setdefault("_ones", set())
        for name, entry in self.masks.items():
            for key, mask in entry.items():
                if mask is not None:
                    entry[key] = ones_mask(mask)
                    ones.add((name, key))

    @torch.no_grad()
    def apply(self, name: str) -> None:
        """Zero the masked elements of one module in place."""
        module = self.modules.get(name)
        if module is None:
            return
        entry = self.masks[name]
        ones = getattr(self, "_ones", ())
        for key, mask in entry.items():
            param = getattr(module, key, None)
            if mask is None or param is None or param.is_meta or (name, key) in ones:  # nothing to zero
                continue
            if mask.device != param.device or mask.dtype != param.dtype:
                mask = entry[key] = mask.to(device=param.device, dtype=param.dtype)
            param.data.mul_(mask)

    def apply_all(self) -> None:
        for name in self.modules:
            self.apply(name)

    def to_nni(self, copy: bool = True) -> Masks:
        """``{module: {"weight": mask, "bias": mask or None}}`` (copies, on CPU), NNI's mask-file format.

        ``copy=False`` hands out the stored tensors themselves (on CPU): cheaper for callers that
        only read them; the store replaces a mask on every change, it never edits one in place.
        """
        def out(mask: torch.Tensor) -> torch.Tensor:
            mask = mask.detach().cpu()
            return mask.clone() if copy else mask

        return {name: {key: (out(mask) if mask is not None else None) for key, mask in entry.items()}
                for name, entry in self.masks.items()}

    def sparsity(self, names: Iterable[str] | None = None) -> float:
        """Fraction of masked weight elements over ``names`` (default: all masked modules)."""
        total = pruned = 0
        for name in names if names is not None else self.masks:
            mask = self.masks[name].get("weight")
            if mask is not None:
                total += mask.numel()
                pruned += int((mask == 0).sum())
        return pruned / total if total else 0.0
