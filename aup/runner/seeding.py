"""``"allocation": {"mode": "seed"}``: queue trials whose per-layer sparsities are the allocation's split.

In seed mode the search keeps one sparsity dimension per layer, and the proposer's first guesses
are informed instead of random: ``seeds`` trials are queued (``study.enqueue_trial``; the sampler
fills the other dimensions) whose per-layer values split global targets spread evenly over the
layers' ranges, fragile layers getting less. The sensitivity profile they need is measured by the
first trial (``aup.compression.torch.allocation``) and read back from its ``allocation_profile``
attribute, so it works on every resource; a ``uniform`` allocation needs none and seeds at once.
The study attribute ``allocation_seeded`` records that it was done, so a resumed run does not
seed again. Only proposers that ask the sampler (random, tpe, gp, cmaes, qmc, nsga2) take seeds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from aup.compression.allocation import PROFILE_ATTR, Allocation, allocate, seed_targets
from aup.runner.jobconfig import JobConfigBuilder, Plan

if TYPE_CHECKING:
    import optuna


SEEDED_ATTR = "allocation_seeded"
SEED_ATTR = "allocation_seed"  # on each seeded trial: its global target



def seed_plan(builder: "JobConfigBuilder") -> Plan:
    """The seed-mode stages of an experiment (empty for anything else)."""
    return builder.allocation_seeds()


def seed_trials(study: "optuna.Study", plan: Plan, trials: Sequence[Any],
                room: int | None = None) -> list[dict[str, float]] | None:
    """Queue the seeded trials once their profiles are known; returns their params (None: not yet).

    ``room``: how many trials the budget still has (no more seeds than that are queued).
    """
    if not plan or study.user_attrs.get(SEEDED_ATTR):
        return []
    count = min(allocation.seeds for allocation, _ in plan)
    if room is not None:
        count = min(count, max(room, 0))
    seeds: list[dict[str, float]] = [{} for _ in range(count)]
    targets: list[float] = []
    for allocation, dims in plan:
        layers = {layer: (low, high) for _, layer, low, high in dims}
        sizes, curves = _profile(allocation, layers, trials)
        if sizes is None:
            return None  # the first trial has not reported the profile yet
        low = sum(lo for lo, _ in layers.values()) / len(layers)
        high = sum(hi for _, hi in layers.values()) / len(layers)
        targets = seed_targets(low, high, count)
        for seed, target in zip(seeds, targets):
            split = allocate(allocation, target, sizes, curves)
            for name, layer, lo, hi in dims:
                seed[name] = round(min(max(split[layer], lo), hi), 4)
    for seed, target in zip(seeds, targets):
        study.enqueue_trial(seed, user_attrs={SEED_ATTR: target})
    study.set_user_attr(SEEDED_ATTR, len(seeds))
    return seeds


def _profile(allocation: Allocation, layers: dict[str, tuple[float, float]],
             trials: Sequence[Any]) -> tuple[dict[str, int] | None, dict[str, dict[float, float]] | None]:
    """Layer sizes and curves from the first trial that reported them (uniform: equal sizes, no curves)."""
    if allocation.method == "uniform":
        return {layer: 1 for layer in layers}, None
    for trial in sorted(trials, key=lambda t: t.number):
        reported = trial.user_attrs.get(PROFILE_ATTR)
        if not isinstance(reported, dict):
            continue
        sizes, curves = reported.get("sizes") or {}, reported.get("curves") or {}
        if all(layer in sizes and layer in curves for layer in layers):
            return ({layer: int(sizes[layer]) for layer in layers},
                    {layer: {float(s): float(d) for s, d in curves[layer].items()} for layer in layers})
    return None, None
