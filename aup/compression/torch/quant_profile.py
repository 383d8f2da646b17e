"""One-shot per-layer quantization sensitivity: the score with only that layer's weight quantized.

Why: a per-layer precision search ({32, 8, 4} per layer) spends trials finding which layers cannot
take 4 bits; one evaluation per layer tells that up front (HAWQ and HAQ rank layers the same way,
by the loss of quantizing one at a time). The profile is computed once per experiment by the first
trial that asks (:func:`quantization_sensitivity_once`), stored next to the trial's result channel
(``<jobs>/<experiment>.quant_sensitivity.json``) and reported as the metric ``quant_sensitivity``;
the runner copies it into the experiment's metadata (study user attribute of the same name), which
``aup show`` prints.

The grid is the ``qat`` quantizer's (per-tensor affine, the range of the weight), applied to the
weight without fine-tuning, so the numbers are an upper bound on the loss a trained trial sees.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Iterable

import torch
from torch import nn

from aup import metrics as M
from aup.compression.torch.quantization.primitives import quantize_affine

__all__ = ["quantization_sensitivity", "quantization_sensitivity_once", "profile_file"]

METRIC = M.QUANT_SENSITIVITY


def _weighted_layers(model: nn.Module) -> dict[str, str]:
    """``{module: parameter}`` of the layers a quantizer can select (conv, linear, attention's packed q/k/v)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            found[name] = "weight"
        elif isinstance(module._parameters.get("in_proj_weight"), nn.Parameter):
            found[name] = "in_proj_weight"
    return found


def quantization_sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float], bits: int = 4,
                             layers: Iterable[str] | None = None) -> dict[str, Any]:
    """``{"bits", "baseline", "layers": {module: score with only that module's weight at ``bits``}}``.

    ``evaluate(model)`` returns the score (e.g. test accuracy); each layer's weight is replaced in
    place by its ``bits``-bit grid, evaluated, and restored, so the model is unchanged afterwards.
    """
    params = _weighted_layers(model)
    selected = list(params) if layers is None else list(layers)
    unknown = [name for name in selected if name not in params]
    if unknown:
        raise ValueError(f"quantization_sensitivity: no conv/linear/attention layer named {unknown[0]!r}")
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    try:
        baseline = float(evaluate(model))
        scores = {}
        for name in selected:
            weight = getattr(modules[name], params[name])
            saved = weight.detach().clone()
            with torch.no_grad():
                weight.copy_(quantize_affine(saved, bits)[0])
            try:
                scores[name] = float(evaluate(model))
            finally:
                with torch.no_grad():
                    weight.copy_(saved)
    finally:
        model.train(was_training)
    return {"bits": int(bits), "baseline": baseline, "layers": scores}


def profile_file() -> str | None:
    """``<jobs folder>/<experiment>.quant_sensitivity.json`` inside a trial, None outside one."""
    from aup.compression.torch.deploy.baseline import baseline_file

    path = baseline_file()
    return None if path is None else path[: -len(".baseline.json")] + ".quant_sensitivity.json"


def quantization_sensitivity_once(model: nn.Module, evaluate: Callable[[nn.Module], float], bits: int = 4,
                                  layers: Iterable[str] | None = None) -> dict[str, Any]:
    """:func:`quantization_sensitivity`, computed by the experiment's first trial that asks and read by
    the others; reported as the ``quant_sensitivity`` metric (the runner stores it on the experiment)."""
    from aup import client

    path = profile_file()
    profile = None
    if path is not None and os.path.exists(path):
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="utf-8") as handle:
                profile = json.load(handle)
    if not isinstance(profile, dict) or profile.get("bits") != bits:
        profile = quantization_sensitivity(model, evaluate, bits, layers)
        if path is not None:
            with contextlib.suppress(OSError):
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(profile, handle, indent=1, sort_keys=True)
                os.replace(tmp, path)
    client.log_metrics(**{METRIC: profile})
    return profile
