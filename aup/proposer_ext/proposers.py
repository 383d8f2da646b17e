"""Proposers on optuna's ask/tell: what to run next, given the study so far.

The runner owns the study and calls ``study.tell``; a proposer only *asks* (``study.ask()`` and
``space.suggest(trial)``, or ``enqueue_trial`` + ``ask`` for a fixed configuration such as a grid
point or a hyperband promotion) and hears back through :meth:`Proposer.complete`.

Resume: a proposer built on a study that already holds trials counts the finished ones (COMPLETE,
PRUNED, FAIL) against ``n_samples`` and never repeats a finished grid point. A trial the runner
marks with the user attribute ``interrupted=True`` (it was cut short by Ctrl-C or a crash, not by
its own failure) does not count: its slot is proposed again.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from aup.proposer_ext.common import WAIT, Proposal, ProposerError, Wait
from aup.proposer_ext.contract import ProposerContract, Value
from aup.proposer_ext.space import SearchSpace

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED_ATTR = "interrupted"


def counts(trial: FrozenTrial) -> bool:
    """Whether a stored trial used up a slot of the experiment (finished and not interrupted)."""
    return trial.state in FINISHED_STATES and not trial.user_attrs.get(INTERRUPTED_ATTR, False)


def scalar(value: float | list[float] | tuple[float, ...] | None) -> float | None:
    """The single objective value of ``value`` (a one-element list is accepted)."""
    if isinstance(value, (list, tuple)):
        return float(value[0]) if len(value) == 1 else None
    return None if value is None else float(value)


def ask_fixed(study: optuna.Study, params: dict[str, Any],
              user_attrs: dict[str, Any] | None = None) -> optuna.trial.Trial:
    """Ask a trial whose parameters are ``params`` (``enqueue_trial`` + ``ask``).

    ``ask`` pops the oldest WAITING trial. Proposers enqueue and ask at once, so a WAITING trial
    found here was left by an interrupted run (or by hand); it would be handed out in place of
    ours, so it is told FAIL, marked interrupted, and skipped.
    """
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()  # pops the stray (oldest WAITING first)
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs=user_attrs)
    return study.ask()


class Proposer(ProposerContract):
    """Base of the optuna-backed proposers: the study, the space and the ``n_samples`` budget they
    share; the contract itself (``propose``, ``complete``, ``finished``, ``total``) is
    :class:`~aup.proposer_ext.contract.ProposerContract`."""

    name = "base"

    def __init__(self, space: SearchSpace, study: optuna.Study, n_samples: int | None,
                 seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        self.space = space
        self.study = study
        self.n_samples = n_samples
        self.seed = seed
        self.options = dict(options or {})
        self._running: set[int] = set()

    @property
    def maximize(self) -> bool:
        return self.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

    @property
    def total(self) -> int | None:
        """How many trials this proposer plans in all (finished ones included), if known."""
        return self.n_samples

    def complete(self, trial_number: int, state: TrialState, value: Value) -> None:
        self._running.discard(trial_number)

    def _stored(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)


class SamplerProposer(Proposer):
    """``n_samples`` trials drawn by the study's sampler (random, tpe, gp, cmaes, qmc, nsga2...)."""

    name = "sampler"

    def __init__(self, space: SearchSpace, study: optuna.Study, n_samples: int | None,
                 seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(space, study, n_samples, seed, options)
        if n_samples is None:
            raise ProposerError("n_samples: required (the number of trials to run)")
        self._issued = sum(1 for t in self._stored() if counts(t))

    @property
    def finished(self) -> bool:
        return self._issued >= (self.n_samples or 0) and not self._running

    def propose(self) -> Proposal | Wait | None:
        if self._issued >= (self.n_samples or 0):
            return None
        trial = self.study.ask()
        params = self.space.suggest(trial)
        self._issued += 1
        self._running.add(trial.number)
        return Proposal(trial=trial, params=params)


class GridProposer(Proposer):
    """Auptimizer's ``sequence``: every grid point once, in odometer order (``n_samples`` ignored).

    Points are enqueued one at a time, so conditional dimensions work (optuna's GridSampler needs
    a fixed product space) and a resumed run skips the points already finished.
    """

    name = "sequence"

    @property
    def requeues_interrupted(self) -> bool:
        return True  # an interrupted grid point is still pending: it is proposed again

    def __init__(self, space: SearchSpace, study: optuna.Study, n_samples: int | None,
                 seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(space, study, None, seed, options)
        self._grid = space.grid()
        done = {self._key(space.active_params(t.params)) for t in self._stored() if counts(t)}
        self._pending = [(i, p) for i, p in enumerate(self._grid) if self._key(p) not in done]

    @staticmethod
    def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    @property
    def total(self) -> int:
        return len(self._grid)

    @property
    def finished(self) -> bool:
        return not self._pending and not self._running

    def propose(self) -> Proposal | Wait | None:
        if not self._pending:
            return None
        index, point = self._pending.pop(0)
        trial = ask_fixed(self.study, point, {"grid_index": index})
        params = self.space.suggest(trial)
        self._running.add(trial.number)
        return Proposal(trial=trial, params=params)


__all__ = ["Proposer", "SamplerProposer", "GridProposer", "ask_fixed", "counts", "scalar",
           "FINISHED_STATES", "INTERRUPTED_ATTR", "WAIT"]
