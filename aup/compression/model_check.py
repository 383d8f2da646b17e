"""Op names and op types of a ``compression`` section checked against the model, before any trial.

A wrong ``op_names`` entry used to pass validation and fail inside every trial (after the script had
loaded its data and model), with an error naming the *expanded* entry (``config_list[1]`` for the
second op name of the user's first entry). Two ways to catch it once:

* the experiment names the model: ``"compression": {..., "model": "module:callable"}``; the
  callable (found from the working directory) builds it, weights not needed. Before the first trial
  aup lists its layers in a child process (:mod:`aup.compression.model_probe`, so the runner never
  imports torch or user code) and checks every entry: one line per problem, exit status 2;
* otherwise the first trial that hits a mismatch reports the model's layers through the result
  channel (a ``model_mismatch`` record written by ``create_compressor``); the runner stops the
  experiment at once with one line (:func:`mismatch_line`) instead of failing every trial.

Both name the user's own entry (``compression.config_list[0].op_names``) and list the layers.
This module is torch-free.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from aup.errors import did_you_mean

if TYPE_CHECKING:  # typing only: the builder is the compression section's
    from aup.compression.search_space import CompressionJobConfigBuilder

# NNI's "default" op types per framework (compared case-insensitively)
DEFAULT_OP_TYPES = {
    "torch": ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
              "Linear", "Bilinear", "PReLU", "Embedding", "EmbeddingBag"),
    "tensorflow": ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                   "Dense", "PReLU", "Embedding"),
}
PROBE_TIMEOUT_S = 300
LISTED_LAYERS = 40

Layers = Sequence[Sequence[str]]  # [(name, type name), ...]


def listing(layers: Layers, limit: int = LISTED_LAYERS) -> str:
    """``conv1 (Conv2d), conv2 (Conv2d), ...`` for messages."""
    shown = ", ".join(f"{name} ({kind})" for name, kind in layers[:limit])
    return shown + (f", ... ({len(layers)} layers)" if len(layers) > limit else "")


def probe_layers(reference: str, workingdir: str | os.PathLike[str], timeout: float = PROBE_TIMEOUT_S) -> list[list[str]]:
    """Build the model named ``module:callable`` in a child process in ``workingdir``; its layers.

    Raises ValueError with one line when it cannot be built.
    """
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the aup package
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workingdir), package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        done = subprocess.run([sys.executable, "-m", "aup.compression.model_probe", reference], cwd=workingdir,
                              env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ValueError(f"building the model {reference!r} took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ValueError(f"cannot build the model {reference!r} in {workingdir}: {last}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ValueError(f"building the model {reference!r} printed no layer list") from None


def _types(entry: Mapping[str, Any], framework: str) -> set[str] | None:
    op_types = entry.get("op_types")
    if not isinstance(op_types, list):
        return None
    out: set[str] = set()
    for op_type in op_types:
        if op_type == "default":
            out.update(t.lower() for t in DEFAULT_OP_TYPES.get(framework, DEFAULT_OP_TYPES["torch"]))
        elif isinstance(op_type, str):
            out.add(op_type.lower())
    return out


def _selected(entries: Sequence[Any], layers: Layers, framework: str) -> list[str]:
    """Layers the config_list picks under NNI's rule (the last matching entry wins; ``exclude`` skips)."""
    picked = []
    for name, kind in layers:
        winner = None
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            types = _types(entry, framework)
            names = entry.get("op_names")
            if types is not None and kind.lower() not in types:
                continue
            if isinstance(names, list) and name not in names:
                continue
            winner = entry
        if winner is not None and winner.get("exclude") is not True:
            picked.append(name)
    return picked


def check_entries(builder: Any, layers: Layers, model: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) of every config_list entry of ``builder`` against the model's layers."""
    names = [name for name, _ in layers]
    known = set(names)
    present = {kind.lower() for _, kind in layers}
    problems: dict[str, None] = {}
    warnings: dict[str, None] = {}
    shown = listing(layers)
    for stage, _compressor, _index, entry, origin in builder.entries():
        if not isinstance(entry, dict):
            continue
        for op_name in entry.get("op_names") or ():
            if isinstance(op_name, str) and op_name not in known:
                hint = did_you_mean(op_name, names)
                problems[f"{origin}.op_names: the model {model} has no layer {op_name!r}{hint}; its layers: {shown}"] = None
        for op_type in entry.get("op_types") or ():
            if isinstance(op_type, str) and op_type != "default" and op_type.lower() not in present:
                warnings[f"{origin}.op_types: the model {model} has no {op_type} layer (the entry selects nothing "
                         f"of that type)"] = None
    for stage in builder.stages:
        for name in stage.compressors:
            entries = stage.lists.get(name, [])
            if entries and not _selected(entries, layers, stage.framework):
                where = f"{stage.where}.config_list" + (f".{name}" if stage.choice else "")
                kinds = ", ".join(sorted({kind for _, kind in layers}))
                problems[f"{where}: no layer of the model {model} matches any entry for {name!r}; "
                         f"layer types present: {kinds}"] = None
    return list(problems), list(warnings)


def check_model(builder: "CompressionJobConfigBuilder",
                workingdir: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """(problems, warnings) when the compression section names its model; nothing to check otherwise."""
    reference = builder.model_ref
    if not reference:
        return [], []
    where = next(f"{s.where}.model" for s in builder.stages if s.model)
    try:
        layers = probe_layers(reference, workingdir)
    except ValueError as exc:
        return [f"{where}: {exc}"], []
    return check_entries(builder, layers, reference)


def mismatch_line(builder: Any, job_config: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    """One line for a trial's ``model_mismatch`` record, naming the user's entry and the model's layers."""
    compressor = str(record.get("compressor") or job_config.get("compressor") or "")
    index = record.get("entry")
    message = str(record.get("message") or "the config_list does not fit the model")
    layers = record.get("layers") or []
    stage_index = _stage_of(job_config, compressor)
    origin = builder.user_entry(compressor, index, stage_index) if isinstance(index, int) and builder else None
    head, sep, rest = message.partition(": ")
    if origin and sep and head.startswith("config_list["):
        message = f"{origin}{head.split(']', 1)[1]}: {rest}"  # the expanded index -> the user's entry
    elif builder is not None and message.startswith("config_list"):
        where = next((s.where for s in builder.stages if compressor in s.compressors
                      and (stage_index is None or s.index == stage_index)), "compression")
        message = f"{where}.{message}"
    return f"{message}; the model's layers: {listing(layers)}" if layers else message


def _stage_of(job_config: Mapping[str, Any], compressor: str) -> int | None:
    stages = job_config.get("compression_pipeline")
    if not isinstance(stages, list):
        return None
    for index, stage in enumerate(stages):
        if isinstance(stage, Mapping) and stage.get("compressor") == compressor:
            return index
    return None


def report_mismatch(compressor: str, entry: int | None, message: str, layers: Iterable[Sequence[str]]) -> None:
    """Inside a trial: tell the runner that the config_list does not fit the model (then the caller raises)."""
    from aup import channel

    channel.emit({"kind": "model_mismatch", "compressor": compressor, "entry": entry, "message": message,
                  "layers": [list(layer) for layer in layers]})


__all__ = ["check_model", "check_entries", "probe_layers", "mismatch_line", "report_mismatch", "listing"]
