"""``baseline_<metric>``: the dense model's metrics, measured once per experiment.

Every trial of an experiment usually starts from the same dense model, so measuring it in every
trial (a deep copy, a MAC count, an export and a latency run) is wasted work. The first trial that
needs the baseline measures it and writes it to ``<jobs folder>/<experiment slug>.baseline.json``
(next to the trial's result channel, so no runner change is needed); later trials read it. Entries
are keyed by a fingerprint of the model's structure (module types and parameter shapes), the input
shape and whether the deployed (ONNX) or the torch model is measured: a trial whose model differs
(an architecture hyperparameter) measures its own. Outside a trial nothing is copied or measured.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from typing import Any, Callable, Iterator

import torch
from torch import nn

from aup import metrics as M
from aup.compression.torch.deploy.settings import DeploySettings

logger = logging.getLogger(__name__)

__all__ = ["snapshot_baseline", "dense_snapshot", "deferred", "baseline_metrics", "baseline_file", "model_fingerprint",
           "baseline_artifact"]

_state: dict[str, Any] = {"model": None, "fingerprint": None, "metrics": {}, "deferred": 0}


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's structure: module names and types, parameter and buffer shapes."""
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__qualname__};".encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype};".encode())
    return digest.hexdigest()[:16]


def baseline_file() -> str | None:
    """``<jobs folder>/<study slug>.baseline.json`` for the current trial, None outside a trial."""
    from aup import channel

    path = channel.channel_path()
    if path is None:
        return None
    folder, name = os.path.split(path)
    trial = os.environ.get("AUP_TRIAL")
    for suffix in ([f"-{trial}.channel.jsonl"] if trial else []) + [".channel.jsonl", ".jsonl"]:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return os.path.join(folder, f"{name}.baseline.json")


def read_json_object(path: str | None) -> dict[str, Any]:
    """A cache file's JSON object, or {} when it is missing, unreadable or not an object."""
    if path is None or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: str, key: str, metrics: dict[str, float]) -> None:
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_json_object(path)
        data[key] = metrics
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)


def snapshot_baseline(model: nn.Module, kind: Callable[[], str | None] | str | None = None) -> None:
    """Called by the first compressor of a trial: keep a dense copy unless the experiment has the
    baseline this trial will report.

    ``kind``: ``"onnx"`` (the trial reports a deployed file) or ``"torch"``, or a callable giving it,
    asked only when the experiment already has a baseline of this model (None: unknown, any kind
    counts). A baseline of the other kind does not count: an experiment re-run after installing
    onnxruntime, or whose trials choose between a pruner and a quantizer, measures the missing kind
    once, from the copy taken here. Inside :func:`deferred` (``create_compressor``, which knows the
    kind only once the compressor is built) nothing happens; the factory calls this again after.
    """
    from aup import channel

    if channel.channel_path() is None or _state["fingerprint"] is not None or _state["deferred"]:
        return
    fingerprint = model_fingerprint(model)
    _state["fingerprint"] = fingerprint
    measured = [key for key in read_json_object(baseline_file()) if key.startswith(fingerprint + "|")]
    if measured:
        wanted = kind() if callable(kind) else kind
        # measured by an earlier trial, and its deployed file is cached for the side-by-side latency
        # (a torch-latency trial times the dense model itself, so it keeps its copy)
        if wanted == "onnx" and any(key.endswith("|onnx") and os.path.exists(_onnx_path(key) or "")
                                    for key in measured):
            return
        if wanted == "torch" and _model_bytes(model) > _COPY_LIMIT_MB * 1e6:
            logger.info("aup: the dense model is over AUP_SIDE_BY_SIDE_MAX_MB=%s MB: this trial's latency "
                        "ratio divides by the experiment's cached baseline instead of a side-by-side run",
                        _COPY_LIMIT_MB)
            return
    try:
        _state["model"] = _plain_copy(model)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be copied just has no baseline
        logger.info("aup: no baseline metrics (the model cannot be deep-copied: %s)", exc)


# A torch-latency trial keeps a dense copy to time it side by side, unless the model is bigger than
# this (an LLM would double the trial's memory); distillation copies it whatever its size.
_COPY_LIMIT_MB = float(os.environ.get("AUP_SIDE_BY_SIDE_MAX_MB", "1024") or 1024)


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
               "_forward_hooks_always_called")


def _plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy without forward hooks: a compressor's calibration recorder or statistics hooks
    copied along would record the copy's batches and slow its timed forward passes."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks is not None:
                hooks.clear()
    return copied


def dense_snapshot(model: nn.Module) -> nn.Module:
    """The dense model as it is now, for a teacher: inside a trial the baseline's own snapshot (taken
    here if it was not yet, so the baseline measurement and the teacher share one copy), outside a
    trial a private copy (without forward hooks, :func:`_plain_copy`)."""
    from aup import channel

    fingerprint = model_fingerprint(model)
    in_trial = channel.channel_path() is not None
    if in_trial and _state["model"] is not None and _state["fingerprint"] == fingerprint:
        return _state["model"]
    copied = _plain_copy(model)
    if in_trial and _state["fingerprint"] in (None, fingerprint):
        _state["fingerprint"], _state["model"] = fingerprint, copied
    return copied


def dense_model() -> nn.Module | None:
    """The dense snapshot of this trial, when one was kept (the baseline's or a teacher's)."""
    return _state["model"]


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Compressors built inside do not snapshot the baseline (their builder does, knowing the kind)."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1


def _onnx_path(key: str) -> str | None:
    """The dense model's deployed file, cached once per experiment next to ``baseline.json``."""
    path = baseline_file()
    if path is None:
        return None
    return f"{path[:-len('.json')]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def baseline_artifact(example: Any, settings: DeploySettings | None) -> tuple[str, Any] | None:
    """What the trial times its model against, side by side: ``("onnx", path)`` of the dense model's
    deployed file (exported once per experiment, by the first trial holding the dense copy) when the
    trial's model is deployed, else ``("torch", dense model)``; None outside a trial or without a copy."""
    key = _key(example, settings)
    if key is None:
        return None
    if settings is None:
        return ("torch", _state["model"]) if _state["model"] is not None else None
    path = _onnx_path(key)
    if path is None:
        return None
    if not os.path.exists(path):
        if _state["model"] is None:
            return None
        try:
            _export_dense(path, example)
        except Exception as exc:  # noqa: BLE001 - the trial keeps its latency measured alone
            logger.warning("aup: could not export the dense baseline for side-by-side timing: %s", exc)
            return None
    return "onnx", path


def _export_dense(path: str, example: Any) -> None:
    """Export the dense copy to ``path`` (float, as the baseline's latency is defined), atomically."""
    from aup.compression.torch.deploy.settings import export_onnx

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return
        tmp = f"{path}.{os.getpid()}.tmp.onnx"
        try:
            export_onnx(_state["model"], example[:1], tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _key(example: Any, settings: DeploySettings | None) -> str | None:
    if not isinstance(example, torch.Tensor) or _state["fingerprint"] is None:
        return None
    shape = "x".join(str(d) for d in example.shape[1:])
    return f"{_state['fingerprint']}|{shape}|{'onnx' if settings is not None else 'torch'}"


def baseline_metrics(example: Any, settings: DeploySettings | None) -> dict[str, float]:
    """``baseline_<metric>`` of the dense model, measured the way the trial's model was (ONNX or torch)."""
    from aup.metrics import BASELINE_PREFIX

    key = _key(example, settings)
    if key is None:
        return {}
    if key not in _state["metrics"]:
        cached = read_json_object(baseline_file()).get(key)
        if cached is None:
            cached = _measure(example, settings)
            if cached and baseline_file() is not None:
                with contextlib.suppress(OSError):
                    _write(baseline_file(), key, cached)  # type: ignore[arg-type]
        _state["metrics"][key] = cached or {}
    return {f"{BASELINE_PREFIX}{k}": v for k, v in _state["metrics"][key].items()}


def _measure(example: Any, settings: DeploySettings | None) -> dict[str, float]:
    from aup.compression.torch.measure import measure_model

    model = _state["model"]
    if model is None:
        return {}
    try:
        measured = measure_model(model, example)
        measured.pop(M.SPARSITY, None)
        measured[M.LATENCY_MS_TORCH] = measured.pop(M.LATENCY_MS)
        if settings is None:
            measured[M.LATENCY_MS] = measured[M.LATENCY_MS_TORCH]
        else:
            from aup.compression.torch.deploy.metrics import deployed_file_metrics
            from aup.compression.torch.deploy.settings import export_onnx

            with tempfile.TemporaryDirectory(prefix="aup-baseline-") as tmp:
                artifact = baseline_artifact(example, settings)  # the cached file, exported once
                path = artifact[1] if artifact else export_onnx(model, example[:1], os.path.join(tmp, "dense.onnx"))
                measured[M.MODEL_BYTES_PACKED] = measured[M.MODEL_BYTES]
                measured.update(deployed_file_metrics(path, None, example, []))
    except Exception as exc:  # noqa: BLE001 - never break the trial over the baseline
        logger.warning("aup: could not measure the uncompressed baseline: %s", exc)
        return {}
    return measured
