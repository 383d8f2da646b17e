"""``fix_mask_conflict``: make filter masks agree across convs whose output channels are tied.

Convs in one dependency set (their outputs are added, e.g. a residual block's last conv and its
shortcut) can only lose a channel together. Masks computed layer by layer disagree there; this
keeps, in every member of a set, each channel that *any* member keeps (NNI's rule: the union of the
remaining channels), so a later shrink removes only the channels all members dropped. Sets come from
:func:`aup.compression.torch.graph.dependency.conv_dependency_sets` (torch-pruning's graph).
Fine-grained (element-wise) masks have no channel structure and are returned unchanged, as in NNI.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from aup.compression.torch.graph.dependency import conv_dependency_sets

Masks = dict[str, dict[str, Any]]


def fix_mask_conflict(masks: Masks | str | os.PathLike[str], model: nn.Module, dummy_input: Any,
                      traced: Any = None) -> Masks:
    """Aligned copies of ``masks`` (a dict in NNI's format or the path of a mask file).

    ``traced`` (NNI's pre-traced graph) is accepted for signature compatibility and not used.
    """
    if isinstance(masks, (str, os.PathLike)):
        masks = torch.load(masks, weights_only=True)
    fixed = {name: dict(entry) for name, entry in masks.items()}
    modules = dict(model.named_modules())
    convs = [n for n in fixed if isinstance(modules.get(n), nn.Conv2d)]
    if len(convs) < 2:
        return fixed
    for group in conv_dependency_sets(model, dummy_input, convs):
        members = [n for n in group if n in fixed]
        kept = [_kept_channels(fixed[n].get("weight")) for n in members]
        if len(members) < 2 or any(k is None for k in kept):
            continue  # a lone layer, or a fine-grained mask: nothing to align
        union = torch.stack(kept).any(dim=0)  # type: ignore[arg-type]
        for name in members:
            fixed[name] = _with_channels(fixed[name], union)
    return fixed


def _kept_channels(weight_mask: Any) -> torch.Tensor | None:
    """Per output channel: kept (True) or removed; None when the mask is not whole filters."""
    if not isinstance(weight_mask, torch.Tensor) or weight_mask.dim() < 2:
        return None
    flat = weight_mask.reshape(weight_mask.shape[0], -1) != 0
    whole = flat.all(dim=1) | (~flat).all(dim=1)
    return flat.all(dim=1) if bool(whole.all()) else None


def _with_channels(entry: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    out = dict(entry)
    weight = entry["weight"]
    shape = (-1,) + (1,) * (weight.dim() - 1)
    out["weight"] = keep.view(shape).expand_as(weight).to(weight.dtype).clone()
    bias = entry.get("bias")
    if isinstance(bias, torch.Tensor):
        out["bias"] = keep.to(bias.dtype).clone()
    return out


__all__ = ["fix_mask_conflict"]
