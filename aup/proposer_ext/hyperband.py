"""Hyperband and BOHB: successive halving over brackets, on optuna's ask/tell.

Both proposers share one engine, :class:`SuccessiveHalvingProposer`, fed with a *schedule*: a list
of brackets, each a list of rungs ``(number of runs, budget per run)``. Rung 0 of a bracket runs
new configurations; when every run of a rung has finished, the best ``size(next rung)`` of them
(by the study's direction; pruned and failed runs are never promoted) run again at the next
rung's larger budget. The budget reaches the trial script as ``n_iterations``.

* ``hyperband`` (Li et al. 2018, the schedule of Auptimizer's zygmuntz-based proposer):
  ``s_max = floor(log_eta(max_iter))``, ``B = (s_max+1)*max_iter``; bracket ``s = s_max..0`` starts
  ``n = ceil(B/max_iter/(s+1) * eta^s)`` configurations at budget ``r = max_iter*eta^-s``, and rung
  ``i`` runs ``floor(n*eta^-i)`` of them at ``r*eta^i``; ``skip_last`` drops each bracket's last rung.
  For the defaults (81, 3) that is 206 runs, of which 143 are new configurations (Auptimizer
  counted only the 143 and so stopped before its brackets completed).
* ``bohb`` (Falkner et al. 2018, HpBandSter's schedule): budgets ``max_budget*eta^-k`` down to
  ``min_budget``; ``n_iterations`` brackets cycling through ``s = s_max..0`` with
  ``n0 = floor((s_max+1)/(s+1)) * eta^s`` and rung sizes ``max(floor(n0*eta^-i), 1)`` (182 runs for
  the defaults). New configurations come from optuna's TPE mixed with random ones
  (``random_fraction``); see :func:`aup.proposer_ext.samplers.build_sampler`.

  How this differs from the paper's model: BOHB fits one multivariate KDE on the observations of
  the *largest budget that has enough of them* and samples candidates from a widened copy of the
  good-set KDE (``bandwidth_factor``, ``min_bandwidth``). Optuna's TPE fits Parzen estimators on
  *all* completed runs, whatever their budget, splits them into good and bad by its own rule
  (``top_n_percent`` is ignored: optuna deprecated its ``gamma`` option), and scores ``num_samples`` candidates (``n_ei_candidates``) drawn from the good-set estimator with
  its own bandwidth rule. Results of small budgets therefore weigh in alongside large ones.
  Auptimizer's bohb always maximised (its ``config['target'] == min`` compared with the builtin
  ``min``); here the study's direction is respected.

Brackets run one after another, but when the current brackets are all waiting for running trials
the next bracket starts, so parallel workers stay busy (brackets are independent, as in the paper
and in HpBandSter). ``n_samples``, when given, caps the total number of runs.

State lives in the trials' user attributes (``bracket``, ``rung``, ``budget``, ``config_id``), so a
proposer built on a study that already holds trials rebuilds where it stopped.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from aup.proposer_ext.common import WAIT, Proposal, ProposerError, Wait
from aup.proposer_ext.contract import Value
from aup.proposer_ext.proposers import FINISHED_STATES, INTERRUPTED_ATTR, Proposer, ask_fixed, scalar
from aup.proposer_ext.space import SearchSpace

logger = logging.getLogger(__name__)
_EPS = 1e-9
_STATE_RANK = {TrialState.COMPLETE: 3, TrialState.PRUNED: 2, TrialState.FAIL: 1, TrialState.RUNNING: 0}


@dataclass(frozen=True)
class Rung:
    size: int
    budget: int | float


Schedule = list[list[Rung]]


def _budget(value: float) -> int | float:
    """A budget as an int when it is one (epochs), else a float with the binary noise removed."""
    if abs(value - round(value)) < _EPS * max(1.0, abs(value)):
        return int(round(value))
    return float(f"{value:.12g}")


def _floor_log(ratio: float, eta: float) -> int:
    """floor(log_eta(ratio)), robust to 81 -> 3.9999999 style rounding."""
    return int(math.floor(math.log(ratio) / math.log(eta) + _EPS))


def hyperband_schedule(max_iter: float = 81, eta: float = 3, skip_last: int = 0) -> Schedule:
    """Li et al.'s brackets (see the module docstring); empty brackets (skip_last) are dropped."""
    s_max = _floor_log(max_iter, eta)
    schedule: Schedule = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s - _EPS)
        r = max_iter * eta ** (-s)
        rungs = [Rung(int(math.floor(n * eta ** (-i) + _EPS)), _budget(r * eta**i))
                 for i in range(s + 1 - int(skip_last))]
        if rungs:
            schedule.append(rungs)
    return schedule


def bohb_schedule(min_budget: float = 0.01, max_budget: float = 1, eta: float = 3,
                  n_iterations: int = 4) -> Schedule:
    """HpBandSter's successive-halving iterations for BOHB (see the module docstring)."""
    s_max = _floor_log(max_budget / min_budget, eta)
    levels = s_max + 1
    budgets = [_budget(max_budget * eta ** (-(levels - 1 - k))) for k in range(levels)]
    schedule: Schedule = []
    for iteration in range(n_iterations):
        s = s_max - (iteration % levels)
        n0 = int(math.floor(levels / (s + 1)) * eta**s + _EPS)
        sizes = [max(int(n0 * eta ** (-i) + _EPS), 1) for i in range(s + 1)]
        schedule.append([Rung(size, budget) for size, budget in zip(sizes, budgets[-s - 1:])])
    return schedule


def schedule_runs(schedule: Schedule) -> int:
    return sum(rung.size for bracket in schedule for rung in bracket)


@dataclass
class _Run:
    trial_number: int
    params: dict[str, Any]
    state: TrialState = TrialState.RUNNING
    value: float | None = None


@dataclass
class _Bracket:
    index: int
    rungs: list[Rung]
    runs: list[dict[str, _Run]] = field(default_factory=list)  # per rung: config_id -> run

    def __post_init__(self) -> None:
        self.runs = [{} for _ in self.rungs]

    @property
    def started(self) -> bool:
        return bool(self.runs[0])

    def config_ids(self) -> list[str]:
        return [f"{self.index}-{k}" for k in range(self.rungs[0].size)]

    def members(self, rung: int, maximize: bool) -> list[str] | None:
        """The configurations of a rung, best first; None while the rung below is unfinished."""
        if rung == 0:
            return self.config_ids()
        below = self.members(rung - 1, maximize)
        if below is None or any(c not in self.runs[rung - 1] or self.runs[rung - 1][c].state not in
                                FINISHED_STATES for c in below):
            return None
        scored: list[tuple[float, int, str]] = []
        for k, c in enumerate(below):
            run = self.runs[rung - 1][c]
            if run.state == TrialState.COMPLETE and run.value is not None and not math.isnan(run.value):
                scored.append((run.value, k, c))
        scored.sort(key=lambda item: ((-item[0] if maximize else item[0]), item[1]))
        return [c for _, _, c in scored[: self.rungs[rung].size]]

    def next_job(self, maximize: bool) -> tuple[int, str] | None:
        """The first (rung, config_id) still to run, or None if nothing can start now."""
        for rung in range(len(self.rungs)):
            members = self.members(rung, maximize)
            if members is None:
                return None
            for config in members:
                if config not in self.runs[rung]:
                    return rung, config
        return None

    def done(self, maximize: bool) -> bool:
        last = len(self.rungs) - 1
        members = self.members(last, maximize)
        return members is not None and all(
            c in self.runs[last] and self.runs[last][c].state in FINISHED_STATES for c in members)

    def params_of(self, config: str) -> dict[str, Any] | None:
        for runs in self.runs:
            if config in runs:
                return runs[config].params
        return None


class SuccessiveHalvingProposer(Proposer):
    """Runs a successive-halving schedule (hyperband or bohb) through optuna ask/tell."""

    name = "hyperband"

    def __init__(self, space: SearchSpace, study: optuna.Study, n_samples: int | None, schedule: Schedule,
                 seed: int | None = None, options: dict[str, Any] | None = None, name: str = "hyperband") -> None:
        super().__init__(space, study, n_samples, seed, options)
        if len(study.directions) > 1:
            raise ProposerError(f"proposer: {name!r} optimises a single objective, the study has "
                                f"{len(study.directions)}; use 'nsga2', 'tpe' or 'random'")
        self.name = name
        self.schedule = schedule
        self._brackets = [_Bracket(i, rungs) for i, rungs in enumerate(schedule)]
        self._where: dict[int, tuple[int, int, str]] = {}  # trial number -> (bracket, rung, config)
        self._grid = space.grid() if str(self.options.get("engine", "")).lower() == "sequence" else None
        self._issued = 0
        self._rebuild()

    # ---- resume -------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        """Re-create the bracket state from the trials already in the study."""
        for trial in self._stored():
            attrs = trial.user_attrs
            if trial.state == TrialState.WAITING or attrs.get(INTERRUPTED_ATTR, False):
                continue
            if not all(k in attrs for k in ("bracket", "rung", "config_id")):
                continue
            b, r, config = int(attrs["bracket"]), int(attrs["rung"]), str(attrs["config_id"])
            if b >= len(self._brackets) or r >= len(self._brackets[b].rungs):
                logger.warning("trial %d: bracket %d rung %d is outside this schedule; ignored", trial.number, b, r)
                continue
            run = _Run(trial.number, dict(trial.params), trial.state,
                       trial.value if trial.state == TrialState.COMPLETE else None)
            old = self._brackets[b].runs[r].get(config)
            if old is None or _STATE_RANK.get(run.state, 0) >= _STATE_RANK.get(old.state, 0):
                self._brackets[b].runs[r][config] = run
            self._where[trial.number] = (b, r, config)
            self._issued += 1
            if trial.state == TrialState.RUNNING:
                self._running.add(trial.number)

    # ---- public API ---------------------------------------------------------------------------
    @property
    def total(self) -> int:
        runs = schedule_runs(self.schedule)
        return runs if self.n_samples is None else min(runs, self.n_samples)

    @property
    def requeues_interrupted(self) -> bool:
        return True  # an interrupted run's rung slot stays open in its bracket: it is issued again

    @property
    def capped(self) -> bool:
        return self.n_samples is not None and self._issued >= self.n_samples

    @property
    def finished(self) -> bool:
        if self._running:
            return False
        return self.capped or all(b.done(self.maximize) for b in self._brackets)

    def propose(self) -> Proposal | Wait | None:
        """The first runnable job in bracket order; a later bracket starts when earlier ones wait."""
        if self.capped:
            return None
        for bracket in self._brackets:
            job = bracket.next_job(self.maximize)
            if job is not None:
                return self._issue(bracket, *job)
        return WAIT if self._running else None

    def complete(self, trial_number: int, state: TrialState, value: Value) -> None:
        super().complete(trial_number, state, value)
        where = self._where.get(trial_number)
        if where is None:
            return
        b, r, config = where
        run = self._brackets[b].runs[r][config]
        run.state = state
        run.value = scalar(value) if state == TrialState.COMPLETE else None

    # ---- internals ----------------------------------------------------------------------------
    def _issue(self, bracket: _Bracket, rung: int, config: str) -> Proposal:
        budget = bracket.rungs[rung].budget
        attrs = {"bracket": bracket.index, "rung": rung, "budget": budget, "config_id": config}
        params = bracket.params_of(config)
        if params is None and self._grid:
            params = self._grid[self._config_ordinal(bracket, config) % len(self._grid)]
        if params is None:
            trial = self.study.ask()
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
        else:
            trial = ask_fixed(self.study, params, attrs)
        params = self.space.suggest(trial)
        bracket.runs[rung][config] = _Run(trial.number, params)
        self._where[trial.number] = (bracket.index, rung, config)
        self._running.add(trial.number)
        self._issued += 1
        extras: dict[str, Any] = {"config_id": config}
        return Proposal(trial=trial, params=params, budget=budget, extras=extras)

    def _config_ordinal(self, bracket: _Bracket, config: str) -> int:
        """Global index of a new configuration (for the grid engine): earlier brackets' first."""
        before = sum(b.rungs[0].size for b in self._brackets[: bracket.index])
        return before + int(config.rsplit("-", 1)[1])


def hyperband_proposer(space: SearchSpace, study: optuna.Study, n_samples: int | None, seed: int | None,
                       options: dict[str, Any]) -> SuccessiveHalvingProposer:
    schedule = hyperband_schedule(options.get("max_iter", 81), options.get("eta", 3), options.get("skip_last", 0))
    return SuccessiveHalvingProposer(space, study, n_samples, schedule, seed, options, name="hyperband")


def bohb_proposer(space: SearchSpace, study: optuna.Study, n_samples: int | None, seed: int | None,
                  options: dict[str, Any]) -> SuccessiveHalvingProposer:
    schedule = bohb_schedule(options.get("min_budget", 0.01), options.get("max_budget", 1), options.get("eta", 3),
                             options.get("n_iterations", 4))
    return SuccessiveHalvingProposer(space, study, n_samples, schedule, seed, options, name="bohb")
