"""The result channel between a trial process and the runner.

Auptimizer parsed ``#Auptimizer:<value>`` lines out of the trial's merged stdout/stderr, which is
fragile (any line containing the marker counts, the marker must be at column 0, the exit code is
ignored). aup keeps that legacy protocol for old scripts but adds a structured channel: the runner
sets the environment variable ``AUP_CHANNEL`` to a file path, and the trial appends one JSON object
per line to it. The runner tails the file while the trial runs (intermediate results drive early
stopping) and reads it completely when the trial exits.

Records (every record has ``"kind"`` and ``"time"``):

``{"kind": "result", "value": 0.93}``
    One call of ``aup.print_result``. ``value`` is a float or a list of floats (main value first,
    then the values named by ``multi_res_labels``). Every result is an intermediate result; the
    last one is the trial's final result (Auptimizer semantics).
``{"kind": "metrics", "metrics": {"accuracy": 0.93, "param_count": 1234}}``
    Named metrics (``aup.log_metrics`` and the compressors' own size report). Later values of the
    same name overwrite earlier ones.
``{"kind": "model_mismatch", "compressor": "fpgm", "entry": 1, "message": "...", "layers": [[name, type]...]}``
    Written by ``create_compressor`` when the config_list does not fit the model (an unknown op
    name, a layer the compressor cannot handle, nothing selected); the runner stops the experiment.

This module is imported by trial scripts, so it must stay free of heavy imports.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

CHANNEL_ENV = "AUP_CHANNEL"
# Set by the runner when a rung ranks trials by their size (multi-objective early stopping): the
# compressors then report their size as soon as it is known, not only at export / the trial's end.
EARLY_SIZE_ENV = "AUP_EARLY_SIZE"
LEGACY_MARKER = "#Auptimizer:"


def channel_path() -> str | None:
    """The channel file of the current trial, or None when the script runs by hand."""
    return os.environ.get(CHANNEL_ENV) or None


def early_size_wanted() -> bool:
    """Whether this trial's runner ranks it by its size before it ends (``EARLY_SIZE_ENV``)."""
    return channel_path() is not None and os.environ.get(EARLY_SIZE_ENV) == "1"


def emit(record: dict[str, Any]) -> bool:
    """Append one record to the channel; returns False when there is no channel.

    Each record is written with a single ``write`` call on a file opened in append mode, so
    concurrent writers (a script and a compressor in the same process, or child processes) never
    interleave within a line.
    """
    path = channel_path()
    if path is None:
        return False
    record = {**record, "time": time.time()}
    line = json.dumps(record, default=_jsonable) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
    return True


def _jsonable(value: Any) -> Any:
    """Turn numpy / torch scalars and other number-likes into plain Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def parse_record(line: str) -> dict[str, Any] | None:
    """One channel line as a record; None for a blank line or a torn write of a killed trial."""
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a ``result`` or ``metrics`` record, in one line; None when it is usable.

    Records of other kinds are ignored by the runner (room for later kinds), so they are fine here.
    """
    kind = record.get("kind")
    if kind == "result":
        if "value" not in record:
            return "a result record without 'value'"
        value = record["value"]
        values = value if isinstance(value, list) else [value]
        if not values:
            return "a result with no value (expected a number or a non-empty list of numbers)"
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            return f"a result must be a number or a list of numbers, got {_short(value)}"
    elif kind == "metrics":
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            return f"'metrics' must be an object {{name: value}}, got {_short(metrics)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_legacy_line(line: str) -> float | list[float] | None:
    """Parse one output line of Auptimizer's protocol; None if the line carries no result.

    Unlike Auptimizer, the marker may appear anywhere in the line (e.g. after a logging prefix),
    and a malformed value is ignored instead of crashing the runner.
    """
    index = line.find(LEGACY_MARKER)
    if index < 0:
        return None
    payload = line[index + len(LEGACY_MARKER):].strip()
    try:
        values = [float(part) for part in payload.split(",")]
    except ValueError:
        return None
    return values[0] if len(values) == 1 else values


def is_finite_result(value: float | list[float] | None) -> bool:
    if value is None:
        return False
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
