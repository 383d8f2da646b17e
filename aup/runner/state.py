"""The state one running trial carries between the runner's loop, its recorder and its recovery.

Kept in its own module below everything else in ``aup.runner`` so that the loop (``experiment``),
the recorder and the recovery code share it without importing each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aup.runner.contracts import TrialAttempt
from aup.runner.orphans import PROCESS_KEY_ENV  # the same key in the environment of the trial and its children

INTERRUPTED = "interrupted"
PROCESS_KEY = "process_key"  # trial attribute, written before the trial's process starts
STOP_GRACE_S = 3.0
# Trial user attributes the runner owns; a metric of the same name reported by a script is dropped.
RUNNER_ATTRS = frozenset({"job_config", "job_config_path", "log_path", "attempts", "status_reason", "budget",
                          INTERRUPTED, "requeued_from", PROCESS_KEY, "runner"})


@dataclass
class ActiveTrial:
    """A trial whose process is running (possibly on a retry)."""

    trial: Any  # optuna.Trial
    params: dict[str, Any]
    trial_id: str
    job_config: dict[str, Any]
    job_path: Path
    process: TrialAttempt
    device: str | None
    attempt: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    steps_reported: int = 0
    intermediate: list[float] = field(default_factory=list)
    held: list[Any] = field(default_factory=list)  # results not yet reported (no live reporting)
    process_key: str = ""
    stop_reason: str | None = None  # why early stopping stopped it (several objectives)


def remove_trial_files(active: ActiveTrial) -> None:
    """Delete a finished trial's job config, logs and channel files (its record stays in the store)."""
    paths = [active.job_path]
    for attempt in active.attempts:
        log = Path(attempt["log"])
        paths += [log, log.with_suffix(".channel.jsonl")]
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def finite(value: float) -> bool:
    return math.isfinite(value)


def iso(timestamp: float) -> str:
    """Local time with offset, millisecond precision (attempt start/end)."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


def jsonable(value: Any) -> Any:
    """``json.dumps`` default for numpy / torch scalars and arrays in a job config."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
