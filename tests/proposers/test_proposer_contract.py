"""The proposer contract suite (``aup.proposer_ext.contract``), run on every registered proposer.

Parametrised over the rows of ``aup.proposer_ext.registry`` (each built-in proposer, ``eas`` being
refused) plus a toy proposer registered here as one class and one row, so a new proposer is checked
as soon as its row exists. Each must: propose parameters inside the search space; take results
(also with two trials running at once) until it has proposed its ``total`` and is ``finished``;
continue a study it did not start (resume) without repeating or losing a trial, also after an
interrupted trial; and refuse bad options, a missing ``n_samples`` or an objective count it cannot
handle with a one-line ProposerError naming the key.
"""
from __future__ import annotations

from typing import Any, Iterator

import optuna
import pytest
from optuna.trial import TrialState

from aup.proposer_ext import WAIT, Proposal, ProposerError, SearchSpace
from aup.proposer_ext.contract import ProposerContract
from aup.proposer_ext.proposers import INTERRUPTED_ATTR, Proposer, counts
from aup.proposer_ext.registry import (ROWS, ProposerRow, build_proposer, build_sampler, register_proposer,
                                       unregister_proposer)
from aup.proposer_ext.samplers import build_random
from aup.proposer_ext.common import Wait

optuna.logging.set_verbosity(optuna.logging.WARNING)


class OneAtATimeProposer(Proposer):
    """A toy proposer: ``n_samples`` random trials, never two at once (it WAITs while one runs)."""

    name = "one_at_a_time"

    def __init__(self, space: SearchSpace, study: optuna.Study, n_samples: int | None, seed: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(space, study, n_samples, seed, options)
        self._issued = sum(1 for t in self._stored() if counts(t))  # resume: finished trials count

    @property
    def finished(self) -> bool:
        return self._issued >= (self.n_samples or 0) and not self._running

    def propose(self) -> Proposal | Wait | None:
        if self._issued >= (self.n_samples or 0):
            return None
        if self._running:
            return WAIT
        trial = self.study.ask()
        self._issued += 1
        self._running.add(trial.number)
        return Proposal(trial=trial, params=self.space.suggest(trial))


TOY = ProposerRow("one_at_a_time", "random trials, one at a time", build_random, OneAtATimeProposer)

# the smallest options that exercise each built-in proposer (hyperband's defaults plan 206 runs)
SMALL: dict[str, dict[str, Any]] = {
    "hyperband": {"max_iter": 9, "eta": 3},
    "bohb": {"min_budget": 1, "max_budget": 9, "n_iterations": 2},
}
SPACE = [{"name": "x", "type": "float", "range": [0, 1], "n": 3}, {"name": "k", "type": "int", "range": [1, 3]},
         {"name": "c", "type": "choice", "range": ["a", "b"]}]


@pytest.fixture(autouse=True)
def toy_proposer() -> Iterator[None]:
    register_proposer(TOY)
    try:
        yield
    finally:
        unregister_proposer(TOY.name)


def _names(predicate: Any = lambda row: True) -> list[str]:
    rows = {**ROWS, TOY.name: TOY}
    return [name for name, row in rows.items() if row.refused is None and predicate(row)]


def _score(params: dict[str, Any]) -> float:
    return float(params["x"]) + float(params["k"]) + (params["c"] == "a")


def _build(name: str, study: optuna.Study | None = None, directions: tuple[str, ...] = ("maximize",),
           n_samples: int | None = 6) -> tuple[optuna.Study, ProposerContract, SearchSpace]:
    space = SearchSpace.from_parameter_config(SPACE)
    options = SMALL.get(name, {})
    if study is None:
        sampler = build_sampler(name, options, 1, len(directions), space=space)
        study = optuna.create_study(directions=list(directions), sampler=sampler)
    return study, build_proposer(name, options, space, study, n_samples, 1), space


def _inside(space: SearchSpace, params: dict[str, Any]) -> bool:
    for dim in space.dimensions:
        if dim.name not in params:
            return False
        value = params[dim.name]
        if dim.kind == "choice":
            if value not in (dim.choices or ()):
                return False
        elif not (dim.low is not None and dim.high is not None and dim.low <= value <= dim.high):
            return False
    return True


def _run(study: optuna.Study, proposer: ProposerContract, parallel: int = 2, stop_after: int | None = None,
         n_values: int = 1) -> list[Proposal]:
    """Drive ``proposer`` as the runner does (``parallel`` trials at once, results told as they end)."""
    running: list[Proposal] = []
    done: list[Proposal] = []
    for _ in range(2000):
        exhausted = False
        while len(running) < parallel and (stop_after is None or len(done) + len(running) < stop_after):
            proposal = proposer.propose()
            if proposal is None:
                exhausted = True
                break
            if isinstance(proposal, Wait):
                break
            running.append(proposal)
        if not running:
            assert exhausted or stop_after is not None, "the proposer waits with nothing running"
            return done
        first = running.pop(0)
        value = _score(first.params)
        values: float | list[float] = value if n_values == 1 else [value, -value]
        study.tell(first.trial, values)
        proposer.complete(first.trial.number, TrialState.COMPLETE, values)
        done.append(first)
    raise AssertionError("the proposer never finished")


def _counted(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


@pytest.mark.parametrize("name", _names())
def test_it_is_a_proposer_named_by_its_row(name: str) -> None:
    _, proposer, _ = _build(name)
    assert isinstance(proposer, ProposerContract) and proposer.name == name


@pytest.mark.parametrize("name", _names())
def test_it_proposes_inside_the_space_and_takes_results_until_finished(name: str) -> None:
    study, proposer, space = _build(name)
    done = _run(study, proposer)
    assert done and all(_inside(space, p.params) for p in done)
    assert proposer.finished and proposer.propose() is None
    if proposer.total is not None:
        assert len(done) == proposer.total


@pytest.mark.parametrize("name", _names())
def test_resume_continues_the_study_without_repeating_or_losing_trials(name: str) -> None:
    study, first, _ = _build(name)
    half = _run(study, first, stop_after=3)
    assert len(half) == 3
    _, second, _ = _build(name, study)
    assert second.total == first.total
    rest = _run(study, second)
    assert second.finished
    if second.total is not None:
        assert _counted(study) == second.total
    if name == "sequence":
        keys = [tuple(sorted(p.params.items())) for p in half + rest]
        assert len(keys) == len(set(keys))  # no grid point twice


@pytest.mark.parametrize("name", _names())
def test_an_interrupted_trial_is_run_again_on_resume(name: str) -> None:
    study, first, _ = _build(name)
    _run(study, first, stop_after=2)
    proposal = first.propose()
    assert isinstance(proposal, Proposal)
    proposal.trial.set_user_attr(INTERRUPTED_ATTR, True)  # the runner was killed while it ran
    study.tell(proposal.trial, state=TrialState.FAIL)
    _, second, _ = _build(name, study)
    if not second.requeues_interrupted:  # the runner queues it (aup.runner.recovery.requeue)
        study.enqueue_trial(dict(proposal.trial.params))
    rest = _run(study, second)
    if second.total is not None:
        assert _counted(study) == second.total
    if not second.requeues_interrupted:
        assert rest[0].params == proposal.params  # the queued configuration runs first


@pytest.mark.parametrize("name", _names())
def test_bad_options_are_one_line_naming_the_key(name: str) -> None:
    space = SearchSpace.from_parameter_config(SPACE)
    study = optuna.create_study(direction="maximize")
    with pytest.raises(ProposerError) as caught:
        build_proposer(name, {**SMALL.get(name, {}), "no_such_option": 1}, space, study, 6)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("no_such_option: not an option")


@pytest.mark.parametrize("name", _names(lambda row: row.needs_n_samples))
def test_n_samples_is_required_where_the_row_says_so(name: str) -> None:
    with pytest.raises(ProposerError, match=r"^n_samples: required"):
        _build(name, n_samples=None)


@pytest.mark.parametrize("name", _names(lambda row: row.single_objective))
def test_several_objectives_are_refused_by_single_objective_rows(name: str) -> None:
    space = SearchSpace.from_parameter_config(SPACE)
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ProposerError, match="optimises a single objective"):
        build_proposer(name, SMALL.get(name, {}), space, study, 6)


@pytest.mark.parametrize("name", _names(lambda row: row.several_objectives and row.name not in ("gp", "spearmint")))
def test_several_objectives_run_where_the_row_says_so(name: str) -> None:
    study, proposer, space = _build(name, directions=("maximize", "minimize"), n_samples=4)
    done = _run(study, proposer, n_values=2)
    assert done and all(_inside(space, p.params) for p in done) and proposer.finished


def test_the_toy_row_reaches_the_experiment_checks() -> None:
    """Registering the row is all it takes for the experiment file to accept the proposer."""
    from aup.config import proposer_options

    assert "one_at_a_time" in proposer_options()
    assert ROWS["one_at_a_time"].joinable
