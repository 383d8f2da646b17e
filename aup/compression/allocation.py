"""Per-layer allocation: one searched global sparsity, split over the layers by a sensitivity profile.

A CNN with N pruned convolutions is an N-dimensional search when every layer's sparsity is sampled
on its own, and the proposer has no idea that some layers are fragile. A stage with ``allocation``
instead searches one value per config_list entry, the *global* sparsity (the fraction of the entry's
weights to prune), and the trial splits it per layer:

* ``"sensitivity"``: each layer alone is pruned at 0.1 .. 0.9 with the stage's criterion, without
  fine-tuning, and the damage is measured (the profile, measured once per experiment by
  :mod:`aup.compression.torch.allocation`); then every layer gets the largest sparsity whose damage
  stays under one common threshold, the threshold chosen so that the weighted mean is the global
  value. Fragile layers get less, robust ones more.
* ``"uniform"``: every layer gets the global value (the control the benchmark compares against).

This module is torch-free: the option's parsing (the config validator calls it before any trial)
and the split itself (pure arithmetic over a profile).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import aup.compression.catalog as catalog

METHODS = ("sensitivity", "uniform")
GRID = tuple(round(0.1 * i, 2) for i in range(1, 10))  # the profile's sparsities
DEFAULT_MAX_SPARSITY = 0.9
# one-shot pruners whose config_list entries hold a plain ``sparsity`` per layer: the catalog's criteria
# (a base criterion of schedules) whose sparsity may differ per entry (not slim's one global sparsity)
PRUNERS = tuple(e.name for e in catalog.entries("torch", "pruning")
                if e.nni_alias is not None and "sparsity" not in e.schema.same_value)
JOB_KEY = "compression_allocation"  # where the job config carries the option to the trial
ATTR = "allocated_sparsity"  # the trial attribute holding {layer: sparsity used}
_MIN_SPARSITY = 0.005  # below this a layer is left dense (a sparsity of 0 is not a legal config value)


MODES = ("global", "seed")
MAX_SEEDS = 20
# seed mode's queued trials: 3 gave a smaller front share at 10 and 20 trials than 5, 8 and 10 no larger
# (benchmarks/search_efficiency.py, docs/search-efficiency.md)
DEFAULT_SEEDS = 5
PROFILE_ATTR = "allocation_profile"  # seed mode: the trial attribute holding the profile the runner seeds from


@dataclass(frozen=True)
class Allocation:
    """The parsed ``allocation`` option of one stage.

    ``mode``: ``"global"`` searches one global sparsity per entry (split in the trial); ``"seed"``
    keeps one dimension per layer and queues ``seeds`` trials whose per-layer values are the split of
    global targets spread over the range (the first trial measures the profile they need).
    """

    method: str
    max_sparsity: float = DEFAULT_MAX_SPARSITY
    mode: str = "global"
    seeds: int = DEFAULT_SEEDS

    def to_job(self) -> dict[str, Any]:
        return {"method": self.method, "max_sparsity": self.max_sparsity, "mode": self.mode}

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(s for s in GRID if s <= self.max_sparsity + 1e-9)


def parse_allocation(value: Any, where: str = "compression.allocation") -> Allocation:
    """``"sensitivity"`` / ``"uniform"`` or ``{"method": ..., "max_sparsity": x}``; one-line ValueError."""
    if isinstance(value, str):
        value = {"method": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected \"sensitivity\", \"uniform\" or {{\"method\": ..., \"max_sparsity\": "
                         f"number}}, got {value!r}")
    unknown = [k for k in value if k not in ("method", "max_sparsity", "mode", "seeds")]
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: method, max_sparsity, mode, seeds)")
    method = value.get("method")
    if method not in METHODS:
        raise ValueError(f"{where}.method: expected one of {', '.join(METHODS)}, got {method!r}")
    cap = value.get("max_sparsity", DEFAULT_MAX_SPARSITY)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.1 <= cap < 1:
        raise ValueError(f"{where}.max_sparsity: expected a number in [0.1, 1), got {cap!r}")
    mode = value.get("mode", "global")
    if mode not in MODES:
        raise ValueError(f"{where}.mode: expected \"global\" (one searched sparsity per entry) or \"seed\" (one per "
                         f"layer, seeded with the allocation), got {mode!r}")
    seeds = value.get("seeds", DEFAULT_SEEDS)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"{where}.seeds: expected an integer from 1 to {MAX_SEEDS}, got {seeds!r}")
    if "seeds" in value and mode != "seed":
        raise ValueError(f"{where}.seeds: applies to \"mode\": \"seed\" only")
    return Allocation(method, float(cap), mode, seeds)


def seed_targets(low: float, high: float, count: int) -> list[float]:
    """``count`` global targets spread evenly inside ``[low, high]`` (never on the bounds)."""
    return [round(low + (high - low) * (i + 1) / (count + 1), 4) for i in range(count)]


def allocate(allocation: Allocation, target: float, sizes: Mapping[str, int],
             profile: Mapping[str, Mapping[float, float]] | None = None) -> dict[str, float]:
    """Per-layer sparsities whose mean weighted by ``sizes`` (weights per layer) is ``target``.

    ``profile``: ``{layer: {sparsity: damage}}`` (damage grows with harm, 0 for the dense layer);
    needed for ``sensitivity``. No layer exceeds ``max_sparsity``; a target above it is capped.
    """
    cap = allocation.max_sparsity
    target = min(max(float(target), 0.0), cap)
    if allocation.method == "uniform" or len(sizes) <= 1:
        return {name: _tidy(target) for name in sizes}
    if profile is None or any(name not in profile for name in sizes):
        raise ValueError("allocation: the sensitivity profile does not cover every layer")
    curves = {name: _envelope(profile[name], cap) for name in sizes}
    total = float(sum(sizes.values()))

    def spread(level: float) -> dict[str, float]:
        return {name: _largest_within(curve, level) for name, curve in curves.items()}

    def mean(split: Mapping[str, float]) -> float:
        return sum(split[name] * sizes[name] for name in sizes) / total

    low, high = 0.0, max(max(d for _, d in curve) for curve in curves.values())
    if mean(spread(low)) >= target:  # free layers alone reach the target: share it among them
        high = low
        below = {name: 0.0 for name in sizes}
    else:
        for _ in range(60):
            middle = (low + high) / 2
            if mean(spread(middle)) >= target:
                high = middle
            else:
                low = middle
        below = spread(low)
    above = spread(high)
    gap = mean(above) - mean(below)
    share = 0.0 if gap <= 0 else (target - mean(below)) / gap  # layers that jump at the threshold share it
    return {name: _tidy(below[name] + share * (above[name] - below[name])) for name in sizes}


def _envelope(curve: Mapping[float, float], cap: float) -> list[tuple[float, float]]:
    """The profile as points ``(sparsity, damage)`` from ``(0, 0)`` to ``cap``, never decreasing."""
    points = [(0.0, 0.0)] + sorted((float(s), max(float(d), 0.0)) for s, d in curve.items() if 0 < float(s) <= cap)
    if points[-1][0] < cap:  # the sweep stopped early (or the grid ends below the cap): flat beyond
        points.append((cap, points[-1][1] if len(points) > 1 else 0.0))
    out, peak = [], 0.0
    for sparsity, damage in points:
        peak = max(peak, damage)
        out.append((sparsity, peak))
    return out


def _largest_within(curve: list[tuple[float, float]], level: float) -> float:
    """The largest sparsity whose (interpolated) damage is at most ``level``."""
    best = 0.0
    for (s0, d0), (s1, d1) in zip(curve, curve[1:]):
        if d1 <= level:
            best = s1
            continue
        if d0 <= level < d1:
            best = s0 + (s1 - s0) * (level - d0) / (d1 - d0)
        break
    return best


def _tidy(value: float) -> float:
    return 0.0 if value < _MIN_SPARSITY else round(value, 4)


def is_dense(value: float) -> bool:
    """A share too small to prune (the layer is excluded instead)."""
    return value < _MIN_SPARSITY
