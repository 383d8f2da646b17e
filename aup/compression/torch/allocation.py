"""The trial's side of per-layer allocation: measure the sensitivity profile once, split the target.

``apply_allocation`` rewrites a stage's config_list before the compressor is built: every entry
holding a ``sparsity`` (the searched global value) becomes one entry per layer with its share
(:func:`aup.compression.allocation.allocate`). The profile it needs is measured on the dense model as
the script hands it to ``create_compressor`` (no fine-tuning): each layer alone is pruned at 0.1 ..
0.9 with the stage's criterion (:class:`~aup.compression.torch.analysis.SensitivityAnalysis`), and the
damage is

* with example inputs (the ``dummy_input`` the script passes to ``create_compressor``): the relative
  change of the model's outputs, ``||f(x) - f_dense(x)|| / ||f_dense(x)||``;
* without: the fraction of the layer's weight energy that the pruning removes (data-free).

Like the dense baseline, the profile is measured by the first trial that needs it and cached in
``<jobs folder>/<experiment slug>.sensitivity.json`` under a file lock, keyed by the model's
structure, the criterion, the measure, the input shape and the layers; parallel trials wait for it
instead of measuring it again. Outside a trial it is kept in memory for the process.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from typing import Any, Mapping

import torch
from torch import nn

from aup.compression import catalog
from aup.compression.allocation import ATTR, PROFILE_ATTR, Allocation, allocate, is_dense, parse_allocation

from aup.compression.torch.analysis import BASE_ALGOS, WEIGHT_ALGOS, SensitivityAnalysis
from aup.compression.torch.deploy.baseline import baseline_file, model_fingerprint, read_json_object
from aup.compression.torch.config_list import ModuleCheck, validate_against_model

logger = logging.getLogger(__name__)

__all__ = ["apply_allocation", "profile_file", "sensitivity_profile", "criterion_for"]

_memory: dict[str, dict[str, dict[float, float]]] = {}
measurements = 0  # profiles measured by this process (tests check the cache with it)


def criterion_for(compressor: str) -> str:
    """The data-free criterion profiling a compressor: its own, else l1 (filters) or level (elements)."""
    short = {name: alias for alias, name in BASE_ALGOS.items()}.get(compressor)
    if short in WEIGHT_ALGOS:
        return short
    return "l1" if catalog.is_structured("torch", "pruning", compressor) else "level"


def profile_file() -> str | None:
    """``<jobs folder>/<experiment slug>.sensitivity.json`` inside a trial, else None."""
    path = baseline_file()
    return None if path is None else path[: -len(".baseline.json")] + ".sensitivity.json"


def apply_allocation(model: nn.Module, compressor: str, config_list: list[dict[str, Any]], option: Any,
                     dummy_input: Any = None, check: ModuleCheck | None = None) -> list[dict[str, Any]]:
    """``config_list`` with every ``sparsity`` entry split per layer; the split is logged as a trial metric.

    ``check``: the compressor's own test of a layer, so that a layer it cannot prune is reported as
    it would be without allocation (before any profiling).
    """
    allocation = option if isinstance(option, Allocation) else parse_allocation(option, "compression_allocation")
    selected = validate_against_model(model, config_list, compressor=compressor, check=check)
    if allocation.mode == "seed":
        _report_profile(model, compressor, config_list, selected, allocation, dummy_input)
        return config_list
    out: list[dict[str, Any]] = []
    used: dict[str, float] = {}
    for index, entry in enumerate(config_list):
        layers = [layer for layer in selected if layer.entry_index == index]
        if "sparsity" not in entry or entry.get("exclude") is True or not layers:
            out.append(entry)
            continue
        sizes = {layer.name: int(layer.module.weight.numel()) for layer in layers}
        profile = None
        if allocation.method == "sensitivity" and len(sizes) > 1:
            profile = sensitivity_profile(model, list(sizes), criterion_for(compressor), allocation, dummy_input)
        split = allocate(allocation, float(entry["sparsity"]), sizes, profile)
        rest = {k: v for k, v in entry.items() if k not in ("sparsity", "op_names")}
        for name, value in split.items():
            out.append({**rest, "op_names": [name], **({"exclude": True} if is_dense(value) else {"sparsity": value})})
        used.update(split)
    _report(used)
    return out


def _report_profile(model: nn.Module, compressor: str, config_list: list[dict[str, Any]], selected: list[Any],
                    allocation: Allocation, dummy_input: Any) -> None:
    """Seed mode: the trial keeps its per-layer values and reports the profile the runner seeds from."""
    from aup import channel
    from aup.client import log_metrics

    sizes = {layer.name: int(layer.module.weight.numel()) for layer in selected
             if "sparsity" in config_list[layer.entry_index]}
    if allocation.method != "sensitivity" or len(sizes) < 2 or channel.channel_path() is None:
        return
    profile = sensitivity_profile(model, list(sizes), criterion_for(compressor), allocation, dummy_input)
    curves = {name: {str(s): d for s, d in curve.items()} for name, curve in profile.items()}
    log_metrics(**{PROFILE_ATTR: {"sizes": sizes, "curves": curves}})


def _report(used: Mapping[str, float]) -> None:
    from aup import channel
    from aup.client import log_metrics

    if not used:
        return
    logger.info("aup allocation: %s", ", ".join(f"{k} {v:.3f}" for k, v in used.items()))
    if channel.channel_path() is not None:
        log_metrics(**{ATTR: dict(used)})


def sensitivity_profile(model: nn.Module, layers: list[str], criterion: str, allocation: Allocation,
                        dummy_input: Any = None) -> dict[str, dict[float, float]]:
    """``{layer: {sparsity: damage}}``, measured once per experiment (cached, see the module doc)."""
    inputs = dummy_input if isinstance(dummy_input, torch.Tensor) else None
    measure = "outputs" if inputs is not None else "weights"
    shape = "x".join(str(d) for d in inputs.shape) if inputs is not None else "-"
    digest = hashlib.sha256("|".join(layers).encode()).hexdigest()[:12]
    key = f"{model_fingerprint(model)}|{criterion}|{measure}|{shape}|{digest}|{allocation.max_sparsity}"
    path = profile_file()
    if path is None:
        if key not in _memory:
            _memory[key] = _measure(model, layers, criterion, allocation, inputs)
        return _memory[key]
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first trial measures, the others wait and read
        data = read_json_object(path)
        if key not in data:
            data[key] = {name: {str(s): d for s, d in curve.items()}
                         for name, curve in _measure(model, layers, criterion, allocation, inputs).items()}
            with contextlib.suppress(OSError):
                _write(path, data)
    return {name: {float(s): float(d) for s, d in curve.items()} for name, curve in data[key].items()}




def _write(path: str, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _measure(model: nn.Module, layers: list[str], criterion: str, allocation: Allocation,
             inputs: torch.Tensor | None) -> dict[str, dict[float, float]]:
    """Each layer alone at every grid sparsity; the model's weights and mode are restored after."""
    global measurements
    measurements += 1
    training = model.training
    model.eval()
    modules = dict(model.named_modules())
    dense = {name: float(modules[name].weight.detach().float().pow(2).sum()) for name in layers}
    try:
        with torch.no_grad():
            if inputs is not None:
                reference = _output(model(inputs))

                def damage() -> float:
                    out = _output(model(inputs))
                    return float((out - reference).norm() / reference.norm().clamp_min(1e-12))
            else:
                def damage() -> float:  # only one layer is pruned at a time: the others contribute 0
                    return sum(max(0.0, 1.0 - float(modules[n].weight.detach().float().pow(2).sum()) / dense[n])
                               for n in layers if dense[n] > 0)
            analysis = SensitivityAnalysis(model, damage, sparsities=list(allocation.grid), prune_type=criterion)
            with _quiet_recorders(model):
                curves = analysis.analysis(specified_layers=layers)
    finally:
        model.train(training)
    return {name: dict(curve) for name, curve in curves.items()}


def _output(value: Any) -> torch.Tensor:
    """The first tensor of a model's output (a tensor, a tuple, or an object with ``logits``)."""
    if isinstance(value, torch.Tensor):
        return value.detach().float()
    logits = getattr(value, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits.detach().float()
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0].detach().float()
    raise ValueError("allocation: the model's output is not a tensor; pass no dummy_input to profile by weights")


@contextlib.contextmanager
def _quiet_recorders(model: nn.Module) -> Any:
    """The profile's forward passes are not calibration data (another compressor's recorder)."""
    from aup.compression.torch.deploy.calibration import CalibrationRecorder

    hooks = [h for h in model._forward_pre_hooks.values() if isinstance(h, CalibrationRecorder)]
    for hook in hooks:
        hook.paused += 1
    try:
        yield
    finally:
        for hook in hooks:
            hook.paused -= 1
