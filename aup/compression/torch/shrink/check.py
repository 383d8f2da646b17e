"""The output check of a physical shrink: shrunk vs masked outputs, and on a mismatch the model
restored to its masked state and the first layer whose activations differ named."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from aup.compression.torch.measure import call_model, first_tensor
from aup.compression.torch.shrink.module_state import ModuleState, restore_modules
from aup.compression.torch.shrink.report import ShrinkError, ShrinkReport, drop_indices
from aup.compression.torch.shrink.zero_channels import CHANNELWISE


def verify(model: nn.Module, dummy_input: Any, reference: torch.Tensor, atol: float, report: ShrinkReport,
            snapshot: Mapping[nn.Module, ModuleState], removed_out: Mapping[nn.Module, list[int]]) -> None:
    out = first_tensor(call_model(model, dummy_input))
    if out.shape != reference.shape:
        diff = float("inf")
    else:
        diff = float((out - reference).abs().max()) if out.numel() else 0.0
    report.max_abs_diff = diff
    if diff <= atol:
        return
    shrunk = _layer_summaries(model, dummy_input)
    restore_modules(snapshot)
    masked = _layer_summaries(model, dummy_input)
    layer = _first_difference(model, masked, shrunk, removed_out, atol)
    raise ShrinkError(f"shrunk and masked outputs differ (max abs diff {diff:.3g} > atol {atol:g}); first differing "
                      f"layer: {layer}. The model was restored to its masked state.")


def _layer_summaries(model: nn.Module, dummy_input: Any) -> dict[str, torch.Tensor]:
    """Per layer, per output channel: (mean, max, min) of the activations, in execution order."""
    summaries: dict[str, torch.Tensor] = {}

    def record(module: nn.Module, _inputs: Any, out: Any, name: str) -> None:  # None: output unchanged
        summaries.setdefault(name, _summary(module, out))

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, CHANNELWISE):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: record(m, i, o, name)))
    try:
        call_model(model, dummy_input)
    finally:
        for h in handles:
            h.remove()
    return summaries


def _summary(module: nn.Module, out: Any) -> torch.Tensor:
    out = first_tensor(out).detach().float()
    channels = out.movedim(-1, 0) if isinstance(module, nn.Linear) else out.movedim(1, 0)
    flat = channels.reshape(channels.shape[0], -1)
    return torch.stack([flat.mean(1), flat.amax(1), flat.amin(1)], 1)


def _first_difference(model: nn.Module, masked: Mapping[str, torch.Tensor], shrunk: Mapping[str, torch.Tensor],
                      removed_out: Mapping[nn.Module, list[int]], atol: float) -> str:
    modules = dict(model.named_modules())
    for name, ref in masked.items():  # dicts keep execution order
        if name not in shrunk:
            return name
        ref = drop_indices(ref, 0, removed_out.get(modules[name], []))
        if ref.shape != shrunk[name].shape or float((ref - shrunk[name]).abs().max()) > atol:
            return name
    return "(none of the conv/linear/norm layers; the difference arises after them)"
