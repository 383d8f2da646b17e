"""Early stopping (``resource_args.early_stop``) as optuna pruners.

Auptimizer ran a daemon thread that compared the intermediate results of running jobs every second
and killed the losers (reference spec section 5.3). Here the runner reports every intermediate
result with ``trial.report`` and asks ``trial.should_prune()``; a stopped trial is told as PRUNED,
so it stays in the results with its intermediate values instead of being lost (Auptimizer did not
tell its proposer, so a hyperopt trial stayed "running" and a bohb rung could wait forever).

Mapping of Auptimizer's ``aup_policy``:

* ``median`` -> ``optuna.pruners.MedianPruner``. Optuna compares the trial's best value so far with
  the median of the *completed* trials' values at the same step; Auptimizer compared running
  averages over the first ``step`` results with running and finished jobs (the Vizier rule). The
  decision is the same for monotone learning curves.
* ``truncation`` -> ``optuna.pruners.PercentilePruner`` keeping the top
  ``100 * (1 - truncation_percentage)`` percent: a trial in the bottom ``truncation_percentage``
  of the completed trials at that step is stopped (Auptimizer ranked running jobs too).
* ``bandit`` -> :class:`BanditPruner`, Auptimizer's rule exactly (see there).
* ``successive_halving`` -> ``optuna.pruners.SuccessiveHalvingPruner`` (``min_resource`` =
  ``aup_policy_steps``, ``reduction_factor``) for one objective; for several objectives aup's own
  :class:`~aup.proposer_ext.pareto_halving.ParetoHalving` (rungs ranked by Pareto front), the only
  policy that accepts several objectives.
* ``curve_fitting`` -> refused: Auptimizer extrapolated each learning curve with 12 parametric
  families fitted by MCMC; optuna has no learning-curve pruner, and its other pruners decide on a
  different criterion, so silently substituting one would change what the user asked for.

Step numbering: the runner reports the n-th intermediate result as ``step=n`` (from 1), so that
optuna's pruners check at the same moments as Auptimizer: every ``aup_policy_steps`` results, once
at least ``warmup`` results exist (optuna's ``n_warmup_steps`` is the first multiple of
``aup_policy_steps`` not below ``warmup``). :class:`BanditPruner` only counts results, so it does
not depend on the numbering, and it also makes Auptimizer's one extra check at exactly ``warmup``
results when ``warmup`` is not a multiple of ``aup_policy_steps`` (the optuna pruners skip it). ``n_startup_trials`` (default 0, as in Auptimizer: compare as soon as another trial has
results) and ``n_min_trials`` (default 1) are aup extensions passed to optuna's pruners.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from aup.numbers import is_finite_number
from aup.proposer_ext.common import ProposerError
from aup.proposer_ext.pareto_halving import TIE_BREAKS, ParetoHalving, build_pareto_halving

POLICIES = ("median", "truncation", "bandit", "successive_halving", "curve_fitting")
MULTI_OBJECTIVE_POLICIES = ("successive_halving",)
EARLY_STOP_KEYS = frozenset({
    "aup_policy", "aup_policy_steps", "warmup", "bandit_factor", "truncation_percentage",
    "curve_fitting_threshold", "curve_fitting_max_iters", "curve_fitting_timeout",
    "n_startup_trials", "n_min_trials", "reduction_factor", "tie_break", "max_steps",
})
CURVE_FITTING_REASON = (
    "early_stop.aup_policy: 'curve_fitting' is not supported: optuna has no learning-curve "
    "extrapolation pruner equivalent to Auptimizer's 12-family MCMC fit; use 'median', "
    "'truncation' or 'bandit'"
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)



def validate_early_stop(early_stop: Any, n_objectives: int = 1) -> list[str]:
    """One-line problems (``early_stop.<key>: ...``) with an ``early_stop`` section; empty if fine."""
    if early_stop is None:
        return []
    if not isinstance(early_stop, dict):
        return [f"early_stop: expected an object with aup_policy and aup_policy_steps, got {early_stop!r}"]
    problems = [f"early_stop.{key}: unknown key (known: {', '.join(sorted(EARLY_STOP_KEYS))})"
                for key in early_stop if key not in EARLY_STOP_KEYS]
    policy = early_stop.get("aup_policy")
    if policy not in POLICIES:
        problems.append(f"early_stop.aup_policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    elif policy == "curve_fitting":
        problems.append(CURVE_FITTING_REASON)
    steps = early_stop.get("aup_policy_steps")
    if not (_is_int(steps) and steps >= 1):
        problems.append(f"early_stop.aup_policy_steps: expected an integer >= 1 (check every that many "
                        f"intermediate results), got {steps!r}")
    checks = {
        "warmup": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "n_startup_trials": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "n_min_trials": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "bandit_factor": (lambda v: is_finite_number(v) and 0 < v <= 1, "a factor in (0, 1]"),
        "truncation_percentage": (lambda v: is_finite_number(v) and 0 < v < 1, "a fraction in (0, 1)"),
        "reduction_factor": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
        "tie_break": (lambda v: v in TIE_BREAKS, f"one of {', '.join(TIE_BREAKS)}"),
        "max_steps": (lambda v: _is_int(v) and v >= 2, "an integer >= 2 (the results of a full trial)"),
    }
    for key, (ok, expected) in checks.items():
        if key in early_stop and not ok(early_stop[key]):
            problems.append(f"early_stop.{key}: expected {expected}, got {early_stop[key]!r}")
    if n_objectives > 1 and policy in POLICIES and policy not in MULTI_OBJECTIVE_POLICIES:
        problems.append(f"early_stop.aup_policy: {policy!r} compares one objective; with {n_objectives} "
                        "objectives use 'successive_halving' (rungs ranked by Pareto front)")
    return problems


def build_pruner(early_stop: dict[str, Any] | None, n_objectives: int = 1) -> BasePruner:
    """The optuna pruner for an ``early_stop`` section (``None`` -> ``NopPruner``).

    With several objectives optuna prunes nothing (``NopPruner``): the runner asks the policy of
    :func:`build_stop_policy` instead.
    """
    if early_stop is None:
        return optuna.pruners.NopPruner()
    problems = validate_early_stop(early_stop, n_objectives)
    if problems:
        raise ProposerError(problems[0])
    policy = early_stop["aup_policy"]
    steps = early_stop["aup_policy_steps"]
    warmup = early_stop.get("warmup", 0)
    first_check = max(1, math.ceil(warmup / steps)) * steps  # first multiple of steps >= warmup
    startup = early_stop.get("n_startup_trials", 0)
    min_trials = early_stop.get("n_min_trials", 1)
    if n_objectives > 1:
        return optuna.pruners.NopPruner()
    if policy == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=steps,
                                                      reduction_factor=early_stop.get("reduction_factor", 3))
    if policy == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=first_check,
                                           interval_steps=steps, n_min_trials=min_trials)
    if policy == "truncation":
        keep = 100.0 * (1.0 - early_stop.get("truncation_percentage", 0.3))
        return optuna.pruners.PercentilePruner(keep, n_startup_trials=startup, n_warmup_steps=first_check,
                                               interval_steps=steps, n_min_trials=min_trials)
    return BanditPruner(factor=early_stop.get("bandit_factor", 0.5), steps=steps, warmup=warmup)


def build_stop_policy(early_stop: dict[str, Any] | None, maximize: list[bool]) -> ParetoHalving | None:
    """aup's own early-stopping policy for several objectives (``maximize``: one flag per objective),
    or None when optuna's pruner decides (one objective, or no ``early_stop``)."""
    if early_stop is None or len(maximize) < 2:
        return None
    problems = validate_early_stop(early_stop, len(maximize))
    if problems:
        raise ProposerError(problems[0])
    return build_pareto_halving(early_stop, maximize)


def _ordered(intermediate: dict[int, float]) -> list[float]:
    """Intermediate values in step order (whatever the runner's first step number is)."""
    return [intermediate[step] for step in sorted(intermediate)]


def _best(values: list[float], maximize: bool) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


class BanditPruner(BasePruner):
    """Auptimizer's ``bandit`` early-stopping rule as an optuna pruner.

    A check happens when the trial has at least ``warmup`` results, every ``steps`` results; with
    ``step`` = the largest multiple of ``steps`` not above the number of results, the trial is
    stopped if its best value over its first ``step`` results is worse than ``factor`` times the
    best value over the first ``step`` results of any other running or completed trial that has
    that many. When the sign of that best value would make the factor loosen the wrong way (a
    negative best when maximising, a positive one when minimising) the factor is ``2 - factor``,
    as in Auptimizer: with factor 0.5 a minimised loss is stopped above 1.5 x the best loss.
    """

    def __init__(self, factor: float = 0.5, steps: int = 1, warmup: int = 0) -> None:
        if not (0 < factor <= 1):
            raise ProposerError(f"early_stop.bandit_factor: expected a factor in (0, 1], got {factor!r}")
        if steps < 1:
            raise ProposerError(f"early_stop.aup_policy_steps: expected an integer >= 1, got {steps!r}")
        self._factor = factor
        self._steps = steps
        self._warmup = warmup

    def _due(self, n: int) -> bool:
        """Whether a trial with ``n`` results is checked now (one check per new multiple of steps)."""
        if n < max(self._warmup, 1) or n < self._steps:
            return False
        return n % self._steps == 0 or n == self._warmup

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        own_values = _ordered(trial.intermediate_values)
        if not self._due(len(own_values)):
            return False
        step = (len(own_values) // self._steps) * self._steps
        maximize = study.direction == StudyDirection.MAXIMIZE
        others = []
        for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
            values = _ordered(other.intermediate_values)
            if other.number != trial.number and len(values) >= step:
                best = _best(values[:step], maximize)
                if best is not None:
                    others.append(best)
        own = _best(own_values[:step], maximize)
        if not others or own is None:
            return False
        best_other = max(others) if maximize else min(others)
        helps = (maximize and best_other > 0) or (not maximize and best_other < 0)
        threshold = (self._factor if helps else 2 - self._factor) * best_other
        return own < threshold if maximize else own > threshold
