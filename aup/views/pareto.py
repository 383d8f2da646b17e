"""The one Pareto front of aup: every view (run end, ``show``, ``pareto``, ``compare``'s ``*``,
``plot``, ``list``) and the run's recommendation take their front from :func:`pareto_front`.

Feasibility comes first, as Optuna's constrained optimisation defines it (``trial.set_constraint``,
the constrained domination of NSGA-II): a feasible trial dominates an infeasible one; of two
infeasible trials the one with the smaller total violation (sum of the positive constraint values)
dominates; two feasible trials compare by their objectives. So the front is the non-dominated
feasible trials, or, when no trial is feasible, the least-violating ones: never empty while a
trial recorded the objectives (Optuna's ``best_trials`` is then empty).

The objectives are chosen at view time (``score:max,model_bytes:min``), not fixed by the study's
directions: a single-objective experiment that recorded ``model_bytes`` still has an accuracy/size
front, which is exactly the choice a user compressing a model has to make. Optuna's own
``study.best_trials`` only covers the study's objectives, hence this small module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from aup import metrics as M
from aup.errors import UserError
from aup.numbers import is_finite_number

FEASIBLE = "feasible"  # user attribute the runner records when the experiment has constraints
VIOLATION = "violation"  # flat-row column: total constraint violation (0 when feasible)


@dataclass(frozen=True)
class Objective:
    """A metric (any flat-row column) and whether more or less of it is better."""

    name: str
    direction: str  # "max" | "min"

    @property
    def sign(self) -> float:
        """Multiplier that turns the metric into something to minimise."""
        return -1.0 if self.direction == "max" else 1.0

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"


def default_direction(name: str, study_directions: Mapping[str, str] | None = None) -> str:
    """The study's direction for its objectives, ``min`` for size/latency metrics, else ``max``."""
    if study_directions and name in study_directions:
        return "max" if study_directions[name].startswith("max") else "min"
    return M.direction(name)


def parse_objectives(spec: str, study_directions: Mapping[str, str] | None = None) -> list[Objective]:
    """``"score:max,model_bytes:min"`` -> Objectives; the direction may be left out (see default_direction)."""
    objectives = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, direction = part.rpartition(":") if ":" in part else (part, "", "")
        name, direction = name.strip(), direction.strip().lower()
        if direction in ("maximize", "minimize"):
            direction = direction[:3]
        if direction and direction not in ("max", "min"):
            raise UserError(f"--objectives: {part!r}: expected NAME:max or NAME:min")
        objectives.append(Objective(name, direction or default_direction(name, study_directions)))
    if not objectives:
        raise UserError("--objectives: expected at least one NAME:max|min")
    if len({o.name for o in objectives}) != len(objectives):
        raise UserError(f"--objectives: {spec!r} names a metric twice")
    return objectives


def default_objectives(objective_names: Sequence[str], directions: Sequence[str],
                       rows: Sequence[Mapping[str, Any]]) -> list[Objective]:
    """The study's objectives when it has several; for one objective, add ``model_bytes`` when recorded.

    A single-objective compression experiment is still a trade-off between its score and the size
    of the model; when no size was recorded, the front is simply the best trial(s).
    """
    objectives = [Objective(n, "max" if d.startswith("max") else "min") for n, d in zip(objective_names, directions)]
    if len(objectives) == 1:
        for size in M.ranked("front"):
            if size != objectives[0].name and any(is_finite_number(r.get(size)) for r in rows):
                objectives.append(Objective(size, "min"))
                break
    return objectives


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points (all coordinates to minimise) that no other point dominates.

    Point q dominates p when it is no worse everywhere and better somewhere; equal points do not
    dominate each other, so ties on the front are all kept. One and two objectives (the usual
    accuracy/size case) use an O(n log n) sweep in plain Python, which keeps numpy out of the fast
    commands; three or more use a vectorised O(n^2 k) check.
    """
    if not points:
        return []
    k = len(points[0])
    if k == 1:
        best = min(p[0] for p in points)
        return [i for i, p in enumerate(points) if p[0] == best]
    if k == 2:
        return _sweep_2d(points)
    return _numpy_front(points)


def _sweep_2d(points: Sequence[Sequence[float]]) -> list[int]:
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    keep: list[int] = []
    best_second = math.inf  # smallest 2nd coordinate among points lexicographically before the current group
    start = 0
    while start < len(order):
        end = start
        first = points[order[start]]
        while end < len(order) and tuple(points[order[end]]) == tuple(first):
            end += 1
        if best_second > first[1]:  # nobody before is at least as good in both and better in one
            keep.extend(order[start:end])
        best_second = min(best_second, first[1])
        start = end
    return sorted(keep)


def _numpy_front(points: Sequence[Sequence[float]]) -> list[int]:
    import numpy as np

    array = np.asarray(points, dtype=float)
    keep = []
    for i in range(len(array)):
        no_worse = np.all(array <= array[i], axis=1)
        better = np.any(array < array[i], axis=1)
        if not np.any(no_worse & better):
            keep.append(i)
    return keep


def violation(constraints: Mapping[str, float] | Sequence[float]) -> float:
    """Total constraint violation as Optuna counts it: the sum of the positive constraint values."""
    values = constraints.values() if isinstance(constraints, Mapping) else constraints
    return float(sum(v for v in values if v > 0))


def row_violation(row: Mapping[str, Any]) -> float:
    """A flat row's total violation: its ``violation`` column, else inf when ``feasible`` is False, else 0."""
    value = row.get(VIOLATION)
    if is_finite_number(value) or value == math.inf:
        return max(float(value), 0.0)
    return math.inf if row.get(FEASIBLE) is False else 0.0


def constrained_front(points: Sequence[Sequence[float]], violations: Sequence[float]) -> list[int]:
    """Indices of the points (coordinates to minimise) that no point constrained-dominates.

    The feasible points' ordinary front when one is feasible; otherwise every point with the
    smallest violation (two infeasible points with equal violations do not dominate each other).
    """
    if not points:
        return []
    feasible = [i for i, v in enumerate(violations) if v <= 0]
    if feasible:
        return sorted(feasible[j] for j in non_dominated([points[i] for i in feasible]))
    least = min(violations)
    return [i for i, v in enumerate(violations) if v == least]


def pareto_front(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[int]:
    """Indices into ``rows`` of the rows on the constrained front, first objective best first.

    Feasibility first (see the module docstring): a row is infeasible when its ``feasible`` column
    is False or its ``violation`` column is positive. Rows missing any objective (failed trials,
    metrics not recorded) take no part. A name that no row has is a user error naming the metrics
    that do exist.
    """
    if rows and not any(all(is_finite_number(r.get(o.name)) for o in objectives) for r in rows):
        missing = [o.name for o in objectives if not any(is_finite_number(r.get(o.name)) for r in rows)]
        known = sorted({k for r in rows for k, v in r.items() if is_finite_number(v)})
        raise UserError(f"no trial recorded {', '.join(missing) or 'all of ' + ', '.join(map(str, objectives))}"
                        f" (numeric columns: {', '.join(known)})")
    eligible = [i for i, r in enumerate(rows) if all(is_finite_number(r.get(o.name)) for o in objectives)]
    if not eligible:
        return []
    points = [[float(rows[i][o.name]) * o.sign for o in objectives] for i in eligible]
    front = [eligible[j] for j in constrained_front(points, [row_violation(rows[i]) for i in eligible])]
    first = objectives[0]
    return sorted(front, key=lambda i: (float(rows[i][first.name]) * first.sign, rows[i].get("number", i)))


def frozen_front(trials: Sequence[Any], directions: Sequence[Any]) -> list[Any]:
    """The front of Optuna FrozenTrials over the study's objectives (the run's end, its recommendation).

    Same rule as :func:`pareto_front`; COMPLETE trials only; best first by the first objective.
    ``directions`` are ``"maximize"``/``"minimize"`` or Optuna's StudyDirection.
    """
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]
    names = [f"objective {i}" for i in range(len(directions))]
    objectives = [Objective(n, "max" if str(getattr(d, "name", d)).lower().startswith("max") else "min")
                  for n, d in zip(names, directions)]
    rows = [{**dict(zip(names, t.values)), "number": t.number, VIOLATION: violation(t.constraints),
             FEASIBLE: t.user_attrs.get(FEASIBLE)} for t in complete]
    if not rows:
        return []
    return [complete[i] for i in pareto_front(rows, objectives)]
