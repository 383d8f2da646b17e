"""The one trial a run recommends: never nothing.

Every run ends by naming one trial, in one line, and ``aup show`` names the same one:

* Trials that met every ``constraints`` condition (all completed trials when there are none) compete
  on the *ranking objective*: the only objective, or with several the experiment's ``recommend`` key,
  else the first objective of ``target``. Ties go to the other objectives in ``target`` order, then
  to the earlier trial. The winner is therefore always on the feasible Pareto front (nothing
  feasible beats it in the ranking objective without losing in another).
* When no trial is feasible: the *least-violating* one, by the sum of its violations each relative
  to its bound (``aup.constraints``: so ``score >= 0.98`` and ``model_bytes <= 50000`` weigh alike;
  the same total the one Pareto front ranks infeasible trials by, so it is on that front), and the line
  says what nobody met: ``no trial met score >= 0.983; closest: trial 7, score 0.979``.
* When no trial completed (all failed or were stopped), the line says so.

Pure: trial rows and parsed constraints in, a :class:`Recommendation` out (optuna-free).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from aup.constraints import INFEASIBLE, Constraint, parse_constraints
from aup.numbers import is_finite_number
from aup.views import fmt
from aup.views.pareto import violation
from aup.views.rows import StudyRecord, TrialRow

__all__ = ["Recommendation", "recommend", "for_study", "ATTR"]

ATTR = "recommendation"  # the study user attribute holding Recommendation.to_attr()
_STATE_WORDS = {"FAIL": "failed", "PRUNED": "stopped early", "RUNNING": "running", "WAITING": "waiting"}


@dataclass(frozen=True)
class Recommendation:
    """The recommended trial (None: no trial completed), whether it is feasible, and the line shown."""

    trial: int | None
    feasible: bool
    line: str

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, value: Any) -> "Recommendation | None":
        if not isinstance(value, Mapping) or not isinstance(value.get("line"), str):
            return None
        trial = value.get("trial")
        return cls(trial if isinstance(trial, int) else None, bool(value.get("feasible")), value["line"])


def recommend(trials: Sequence[TrialRow], objectives: Sequence[str], directions: Sequence[str],
              constraints: Sequence[Constraint] = (), ranking: str | None = None) -> Recommendation:
    """The trial to recommend among ``trials`` (any states) of a study with these objectives."""
    ranked = ranking if ranking in objectives else objectives[0]
    order = [objectives.index(ranked)] + [i for i in range(len(objectives)) if objectives[i] != ranked]
    signs = [-1.0 if d.lower().endswith("maximize") else 1.0 for d in directions]
    candidates = [t for t in trials if t.state == "COMPLETE" and _usable(t.values, len(objectives))]
    if not candidates:
        return Recommendation(None, False, _nothing(trials))

    def merit(trial: TrialRow) -> tuple[float, ...]:
        values = trial.values or []
        return (*(signs[i] * values[i] for i in order), trial.number)

    values_of = {t.number: {**t.attrs, **dict(zip(objectives, t.values or []))} for t in candidates}
    feasible = [t for t in candidates if all(c.value(values_of[t.number]) <= 0 for c in constraints)]
    if feasible:
        best = min(feasible, key=merit)
        shown = _shown(list(objectives), constraints)
        among = (f"{len(feasible)} of {len(candidates)} completed trials met the constraints" if constraints
                 else f"{len(candidates)} completed trials")
        line = f"recommended: trial {best.number} ({_values(shown, values_of[best.number])}): best {ranked}; {among}"
        return Recommendation(best.number, True, line)
    closest = min(candidates, key=lambda t: (_violation(constraints, values_of[t.number]), merit(t)))
    values = values_of[closest.number]
    missed = [c for c in constraints if c.value(values) > 0]
    conditions = ", ".join(_condition(c, values) for c in missed)
    metrics = list(dict.fromkeys(c.metric for c in missed))
    line = f"no trial met {conditions}; closest: trial {closest.number}, {_values(metrics, values)}"
    return Recommendation(closest.number, False, line)


def for_study(experiment: StudyRecord, trials: Sequence[TrialRow]) -> Recommendation:
    """What ``aup show`` says: the recommendation the run stored when it ended, else the current one.

    A run that is still going (or a study written by an older aup) gets it computed from the trials
    as they are, with the stored experiment's constraints and ``recommend`` key.
    """
    stored = Recommendation.from_attr(experiment.user_attrs.get(ATTR))
    if stored is not None and experiment.status != "running":
        return stored
    config = experiment.config
    try:
        constraints = parse_constraints(config.get("constraints") or {})
    except ValueError:
        constraints = []
    ranking = config.get("recommend") if isinstance(config.get("recommend"), str) else None
    current = recommend(trials, experiment.objective_names, experiment.directions, constraints, ranking)
    if experiment.status == "running":
        return Recommendation(current.trial, current.feasible, f"so far, {current.line}")
    return current


def _usable(values: Sequence[float] | None, n: int) -> bool:
    return values is not None and len(values) == n > 0 and all(is_finite_number(v) for v in values)


def _violation(constraints: Sequence[Constraint], values: Mapping[str, Any]) -> float:
    """The total violation the views' front ranks by (constraint values are relative to their bounds;
    a missing metric counts as infinitely far)."""
    excess = [constraint.value(values) for constraint in constraints]
    return math.inf if any(v >= INFEASIBLE for v in excess) else violation(excess)


def _condition(constraint: Constraint, values: Mapping[str, Any]) -> str:
    bound = constraint.bound(values)
    shown = fmt.value(constraint.metric, bound) if bound is not None else constraint.text.split(" ", 2)[-1]
    return f"{constraint.metric} {constraint.op} {shown}"


def _shown(objectives: list[str], constraints: Sequence[Constraint]) -> list[str]:
    return list(dict.fromkeys([*objectives, *(c.metric for c in constraints)]))


def _values(names: Sequence[str], values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {fmt.value(name, values.get(name)) or '-'}" for name in names)


def _nothing(trials: Sequence[TrialRow]) -> str:
    if not trials:
        return "nothing to recommend: no trial ran"
    states = Counter(_STATE_WORDS.get(t.state, t.state.lower()) for t in trials)
    told = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return f"nothing to recommend: no trial completed ({told})"
