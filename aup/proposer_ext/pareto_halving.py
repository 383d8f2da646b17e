"""Early stopping for several objectives: asynchronous successive halving over Pareto ranks.

Optuna's pruners compare one number per step (``trial.report`` refuses a vector), so a search for
accuracy *and* size could not stop anything. This policy (``"aup_policy": "successive_halving"``
with several objectives) follows the asynchronous successive halving rule (ASHA, Li et al. 2018)
with the multi-objective ranking of MOASHA (Schmucker et al. 2021):

* Rungs are at ``min_steps * reduction_factor ** k`` intermediate results (a trial's n-th
  ``aup.print_result`` is step n; for a fine-tuning script, its n-th epoch), below ``max_steps``
  (the results of a full trial, ASHA's maximum resource) when it is given: a trial at its last
  result has done its work, and stopping it then would only drop its final result.
* At a rung a trial's objectives are its intermediate score and every other objective as known
  *then*: a ``multi_res_labels`` value of that result, else the last reported metric of that name
  (the compressors report their size right after ``compress()`` / ``apply_speedup()``).
* The trials that reached the rung (running, complete or stopped; failed ones do not count, an
  interrupted trial is run again) are ranked by non-dominated sorting, ties inside a front broken by
  crowding distance (``tie_break: "crowding"``) or by exclusive hypervolume contribution
  (``"hypervolume"``), both on objectives normalised over the rung.
* A trial is stopped when at least ``ceil(n / reduction_factor)`` of the ``n`` trials at its rung
  rank strictly better than it (ties keep it; a rung with fewer than ``n_min_trials`` trials stops
  nobody). This is the "stopping" variant of ASHA: a trial is judged once per rung it reaches,
  against the trials that reached that rung before it.

A value missing at a rung (no size reported yet, a NaN score) ranks as worse than every value seen
at that rung in that objective; when no trial has it, the objective is left out of the ranking.

The rung state is the ``rung_values`` user attribute of each trial in the study (``{"<step>":
[one value per objective or null]}``), so a resumed run and runners joined to the same study decide
on the same records; the policy object holds no state of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from aup.numbers import is_finite_number
from aup.proposer_ext.common import ProposerError

RUNG_ATTR = "rung_values"
TIE_BREAKS = ("crowding", "hypervolume")
_COUNTED_STATES = ("RUNNING", "COMPLETE", "PRUNED")

Vector = Sequence[float | None]


@dataclass(frozen=True)
class Decision:
    """The outcome of one rung check: whether to stop, and the one-line reason when it does."""

    stop: bool
    reason: str | None = None


class ParetoHalving:
    """Asynchronous successive halving whose rungs rank trials by Pareto front (see the module doc)."""

    def __init__(self, maximize: Sequence[bool], min_steps: int = 1, reduction_factor: int = 3,
                 tie_break: str = "crowding", n_min_trials: int = 1, max_steps: int | None = None) -> None:
        if not maximize:
            raise ProposerError("early_stop: successive_halving needs at least one objective")
        if not (isinstance(min_steps, int) and min_steps >= 1):
            raise ProposerError(f"early_stop.aup_policy_steps: expected an integer >= 1, got {min_steps!r}")
        if not (isinstance(reduction_factor, int) and reduction_factor >= 2):
            raise ProposerError(f"early_stop.reduction_factor: expected an integer >= 2, got {reduction_factor!r}")
        if tie_break not in TIE_BREAKS:
            raise ProposerError(f"early_stop.tie_break: expected one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
        self.maximize = list(maximize)
        self.min_steps = min_steps
        self.eta = reduction_factor
        self.tie_break = tie_break
        self.n_min_trials = n_min_trials
        self.max_steps = max_steps

    # ---- rungs -----------------------------------------------------------------------------------
    def is_rung(self, step: int) -> bool:
        """Whether a trial with ``step`` intermediate results is at a rung."""
        if step < self.min_steps or step % self.min_steps or (self.max_steps is not None and step >= self.max_steps):
            return False
        ratio = step // self.min_steps
        while ratio % self.eta == 0:
            ratio //= self.eta
        return ratio == 1

    def observe(self, study: Any, trial: Any, step: int, vector: Vector, decide: bool = True) -> Decision:
        """Record ``vector`` (one value per objective) for ``trial`` at ``step``; at a rung, decide.

        ``trial`` is an ``optuna.Trial`` or ``FrozenTrial`` of ``study``. Off a rung nothing is written.
        """
        if not self.is_rung(step):
            return Decision(False)
        from aup import store

        # from the storage: the runner's trial object may be a FrozenTrial that does not see writes
        stored = study._storage.get_trial_user_attrs(store.trial_id(trial))
        rungs = dict(stored.get(RUNG_ATTR) or {})
        rungs[str(step)] = [_plain(v) for v in vector]
        store.set_trial_user_attrs(study, trial, {RUNG_ATTR: rungs})
        if not decide:
            return Decision(False)
        others = rung_population(study, step, exclude=trial.number)
        return self.judge(vector, others, step)

    def judge(self, vector: Vector, others: Sequence[Vector], step: int) -> Decision:
        """The decision for a trial with ``vector`` at rung ``step`` among the ``others`` there."""
        n = len(others) + 1
        if n < max(self.n_min_trials, 1):
            return Decision(False)
        keep = math.ceil(n / self.eta)
        keys = self.rank_keys([vector, *others])
        own = keys[0]
        better = sum(1 for key in keys[1:] if key < own)
        if better < keep:
            return Decision(False)
        return Decision(True, f"stopped at step {step} by successive halving: {better} of the {n} trials at this "
                              f"rung rank better (Pareto front {own[0] + 1}), the rung keeps {keep}")

    # ---- ranking ---------------------------------------------------------------------------------
    def rank_keys(self, vectors: Sequence[Vector]) -> list[tuple[int, float]]:
        """Per vector ``(front index, -tie score)``: smaller is better (front 0 is non-dominated)."""
        points = self._minimised(vectors)
        fronts = non_dominated_fronts(points)
        keys: list[tuple[int, float]] = [(0, 0.0)] * len(points)
        for index, front in enumerate(fronts):
            members = [points[i] for i in front]
            scores = crowding_distances(members) if self.tie_break == "crowding" else hv_contributions(members)
            for i, score in zip(front, scores):
                keys[i] = (index, -score)
        return keys

    def _minimised(self, vectors: Sequence[Vector]) -> list[list[float]]:
        """Vectors as minimisation problems normalised to [0, 1] per objective; a missing value is
        worse than every value present (1.5), an objective nobody has is left out."""
        columns = []
        for j, maximize in enumerate(self.maximize):
            raw = [v[j] if j < len(v) else None for v in vectors]
            vals = [(-x if maximize else x) if is_finite_number(x) else None for x in raw]
            present = [x for x in vals if x is not None]
            if not present:
                continue
            low, high = min(present), max(present)
            span = (high - low) or 1.0
            columns.append([1.5 if x is None else (x - low) / span for x in vals])
        if not columns:
            return [[0.0] for _ in vectors]
        return [list(row) for row in zip(*columns)]


def rung_population(study: Any, step: int, exclude: int | None = None) -> list[Vector]:
    """The vectors recorded at rung ``step`` by the study's running, complete and stopped trials."""
    from optuna.trial import TrialState

    states = tuple(getattr(TrialState, name) for name in _COUNTED_STATES)
    vectors = []
    for other in study.get_trials(deepcopy=False, states=states):
        if other.number == exclude:
            continue
        value = (other.user_attrs.get(RUNG_ATTR) or {}).get(str(step))
        if isinstance(value, list):
            vectors.append(value)
    return vectors


def non_dominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of ``points`` (minimised) grouped into successive non-dominated fronts."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining if j != i)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point of one front (boundary points: infinity)."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    distance = [0.0] * n
    for j in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][j])
        low, high = points[order[0]][j], points[order[-1]][j]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for k in range(1, n - 1):
            distance[order[k]] += (points[order[k + 1]][j] - points[order[k - 1]][j]) / (high - low)
    return distance


def hv_contributions(points: Sequence[Sequence[float]], reference: float = 2.0) -> list[float]:
    """Exclusive hypervolume contribution of each point of one front (minimised, normalised
    objectives; reference point ``reference`` in every objective, beyond the 1.5 of missing values)."""
    ref = [reference] * (len(points[0]) if points else 0)
    total = hypervolume(points, ref)
    return [total - hypervolume([p for k, p in enumerate(points) if k != i], ref) for i in range(len(points))]


def hypervolume(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """Volume dominated by ``points`` (minimised) and bounded by ``ref``, by slicing the last axis.

    Exact; O(n^d) which is fine for the few trials of a rung and two or three objectives.
    """
    inside = [list(p) for p in points if all(x < r for x, r in zip(p, ref))]
    if not inside:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in inside)
    inside.sort(key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(inside):
        upper = inside[i + 1][-1] if i + 1 < len(inside) else ref[-1]
        if upper > point[-1]:
            volume += (upper - point[-1]) * hypervolume([p[:-1] for p in inside[:i + 1]], ref[:-1])
    return volume



def _plain(value: Any) -> float | None:
    """A JSON-storable number (None for a missing or non-finite value)."""
    return float(value) if is_finite_number(value) else None


def build_pareto_halving(early_stop: Mapping[str, Any], maximize: Sequence[bool]) -> ParetoHalving:
    """The policy object for a validated ``early_stop`` section with ``aup_policy: successive_halving``."""
    return ParetoHalving(maximize, min_steps=early_stop.get("aup_policy_steps", 1),
                         reduction_factor=early_stop.get("reduction_factor", 3),
                         tie_break=early_stop.get("tie_break", "crowding"),
                         n_min_trials=early_stop.get("n_min_trials", 1), max_steps=early_stop.get("max_steps"))
