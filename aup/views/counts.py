"""Trial counts that add up: how many of the planned trials ran, and how they ended.

An interrupted trial (Ctrl-C, or the runner stopping after a failure) is recorded as FAIL with an
``interrupted`` mark and, for most proposers, queued again as a WAITING copy with the same
parameters, which ``aup resume`` runs. Counting every stored trial against ``n_samples`` therefore
read "3 trials of 2 planned" after one failure; here the interrupted attempt is listed on its own
and the planned count covers the configurations (complete, pruned, failed, running, queued).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

ORDER = ("complete", "pruned", "failed", "running", "queued")


@dataclass
class TrialCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0  # WAITING: queued to run (an interrupted trial's configuration, re-queued for resume)
    interrupted: int = 0

    @property
    def counted(self) -> int:
        """Trials that count against the plan (an interrupted attempt does not: its copy is queued)."""
        return self.complete + self.pruned + self.failed + self.running + self.queued

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (*ORDER, "interrupted")}


def count(trials: Iterable[tuple[str, Mapping[str, Any]]]) -> TrialCounts:
    """Counts from ``(state name, user attributes)`` pairs (Optuna state names: COMPLETE, FAIL...)."""
    counts = TrialCounts()
    for state, attrs in trials:
        if state == "FAIL" and attrs.get("interrupted"):
            counts.interrupted += 1
        elif state == "COMPLETE":
            counts.complete += 1
        elif state == "PRUNED":
            counts.pruned += 1
        elif state == "FAIL":
            counts.failed += 1
        elif state == "RUNNING":
            counts.running += 1
        elif state == "WAITING":
            counts.queued += 1
    return counts


def describe(counts: TrialCounts, planned: int | None = None) -> str:
    """``2 trials of 2 planned: 1 failed, 1 interrupted (queued to resume)``."""
    head = f"{counts.counted} trial{'s' if counts.counted != 1 else ''}"
    if planned:
        head += f" of {planned} planned"
    parts = [f"{getattr(counts, name)} {name}" for name in ORDER[:4] if getattr(counts, name)]
    requeued = min(counts.queued, counts.interrupted)
    if requeued:
        parts.append(f"{requeued} interrupted (queued to resume)")
    if counts.queued > requeued:
        parts.append(f"{counts.queued - requeued} queued")
    text = f"{head}: {', '.join(parts) or 'none yet'}"
    if counts.interrupted > requeued:
        text += f"; {counts.interrupted - requeued} interrupted"
    return text
