"""Latency ratios measured side by side: the trial's model and the dense baseline, interleaved.

A latency measured alone depends on the machine's load at that moment; a ratio of two latencies
measured minutes apart (the baseline by the first trial, the model by a later one) mixes two loads
and is noise (the same model read 0.41x and 0.88x in two runs). Here both run in the same process,
in alternating rounds: each round times a few calls of the model, then a few of the baseline (the
order flips every round), and keeps the round's ratio of medians. Load that comes and goes slows both
sides of a round alike, so the per-round ratios agree; their median is the stored ratio and their
interquartile range its spread (``latency_ms_ratio``, ``latency_ms_ratio_iqr``).

Cost: ``rounds`` x ``per_round`` calls of each model after warm-up; ``per_round`` is chosen so a
round lasts about ``round_ms`` (at least one call), so a 50 ms model costs about 2 x 15 calls.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

__all__ = ["SideBySide", "interleaved", "torch_caller", "ort_caller"]

_clock = time.perf_counter  # a module attribute so a test can drive the timing deterministically


@dataclass(frozen=True)
class SideBySide:
    """Medians (ms) of both models over the interleaved rounds, the median per-round ratio and its IQR."""

    model_ms: float
    baseline_ms: float
    ratio: float
    ratio_iqr: float

    def metrics(self, *names: str) -> dict[str, float]:
        """Trial metrics: the model's and the baseline's latency under each of ``names`` (e.g.
        ``latency_ms``), plus ``latency_ms_ratio`` and ``latency_ms_ratio_iqr``."""
        from aup import metrics as M

        out = {M.LATENCY_MS_RATIO: self.ratio, M.LATENCY_MS_RATIO_IQR: self.ratio_iqr}
        for name in names:
            out[name] = self.model_ms
            out[M.BASELINE_PREFIX + name] = self.baseline_ms
        return out


def _time(call: Callable[[], Any], runs: int) -> float:
    """Median wall time (ms) of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = _clock()
        call()
        times.append((_clock() - start) * 1000.0)
    return statistics.median(times)


def interleaved(model: Callable[[], Any], baseline: Callable[[], Any], rounds: int = 15, round_ms: float = 2.0,
                warmup: int = 3, max_per_round: int = 25) -> SideBySide:
    """Time ``model()`` against ``baseline()`` in ``rounds`` alternating rounds (see the module docstring)."""
    single = max(_time(model, warmup), _time(baseline, warmup), 1e-3)
    per_round = max(1, min(max_per_round, int(round_ms / single)))
    ratios, model_ms, baseline_ms = [], [], []
    for index in range(max(rounds, 2)):
        if index % 2:
            b = _time(baseline, per_round)
            m = _time(model, per_round)
        else:
            m = _time(model, per_round)
            b = _time(baseline, per_round)
        model_ms.append(m)
        baseline_ms.append(b)
        ratios.append(m / b if b > 0 else float("inf"))
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return SideBySide(statistics.median(model_ms), statistics.median(baseline_ms), statistics.median(ratios), q3 - q1)


@contextlib.contextmanager
def torch_caller(model: nn.Module, example: Any, threads: int) -> Iterator[Callable[[], Any]]:
    """``model`` on ``example`` (batch 1) as a zero-argument call: eval mode, ``inference_mode``, fixed
    threads, all restored on exit."""
    from aup.compression.torch.measure import call_model, first_sample, timing_mode

    x = first_sample(example)
    with timing_mode(model, threads):
        yield lambda: call_model(model, x)


def ort_caller(deployed: Any, example: Any) -> Callable[[], Any]:
    """``session.run`` of a deployed model on ``example`` (batch 1) as a zero-argument call."""
    from aup.compression.torch.deploy.runtime import as_args

    if isinstance(example, Mapping):
        feeds = deployed.feeds(**{k: v[:1] for k, v in example.items()})
    else:
        feeds = deployed.feeds(*(x[:1] for x in as_args(example)))
    run = deployed.session.run
    return lambda: run(None, feeds)
