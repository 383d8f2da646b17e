"""Multi-objective early stopping (successive halving over Pareto ranks) with hand-set values."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aup.proposer_ext import (RUNG_ATTR, ParetoHalving, ProposerError, build_pruner, build_sampler,
                              build_stop_policy, validate_early_stop)
from aup.proposer_ext.pareto_halving import crowding_distances, hv_contributions, hypervolume, non_dominated_fronts

MAX_MIN = [True, False]  # accuracy (max), bytes (min)
DIRECTIONS = ["maximize", "minimize"]


def study_with(rung: dict[int, list[list[float | None]]], storage: str | None = None,
               state: TrialState = TrialState.COMPLETE) -> optuna.Study:
    """A study whose trials recorded the given vectors at the given rungs (one trial per vector)."""
    study = optuna.create_study(directions=DIRECTIONS, storage=storage)
    for step, vectors in rung.items():
        for vector in vectors:
            trial = study.ask()
            trial.set_user_attr(RUNG_ATTR, {str(step): vector})
            study.tell(trial, values=None if state != TrialState.COMPLETE else [0.5, 100.0], state=state)
    return study


def test_rungs_are_geometric_in_results() -> None:
    assert [s for s in range(1, 30) if ParetoHalving(MAX_MIN).is_rung(s)] == [1, 3, 9, 27]
    halving = ParetoHalving(MAX_MIN, min_steps=2, reduction_factor=2)
    assert [s for s in range(1, 20) if halving.is_rung(s)] == [2, 4, 8, 16]
    # a trial at its last result (max_steps) has done its work: no rung there, it is never stopped
    assert [s for s in range(1, 30) if ParetoHalving(MAX_MIN, max_steps=9).is_rung(s)] == [1, 3]
    study = study_with({3: [[0.9, 1.0]] * 3})
    last = study.ask()
    assert not ParetoHalving(MAX_MIN, max_steps=3).observe(study, last, 3, [0.1, 9.0]).stop
    assert ParetoHalving(MAX_MIN).observe(study, last, 3, [0.1, 9.0]).stop


def test_a_rung_keeps_the_trials_no_better_ranked_third_stops() -> None:
    # at rung 1: three trials, one on the front ([0.9, 100]) and two it dominates
    study = study_with({1: [[0.9, 100.0], [0.8, 150.0], [0.7, 200.0]]})
    policy = ParetoHalving(MAX_MIN)  # n = 4, keeps ceil(4 / 3) = 2
    dominated = study.ask()
    decision = policy.observe(study, dominated, 1, [0.75, 180.0])  # dominated by two: stopped
    assert decision.stop and "2 of the 4 trials at this rung rank better" in decision.reason
    assert decision.reason.startswith("stopped at step 1 by successive halving")
    second = policy.judge([0.85, 120.0], [[0.9, 100.0], [0.8, 150.0], [0.7, 200.0]], 1)
    assert not second.stop  # only one trial ranks better
    small = policy.judge([0.5, 10.0], [[0.9, 100.0], [0.8, 150.0], [0.7, 200.0]], 1)
    assert not small.stop  # worse accuracy but the smallest: on the front, kept
    # the vector is in the store at that rung, off a rung nothing is written
    assert study.trials[-1].user_attrs[RUNG_ATTR] == {"1": [0.75, 180.0]}
    assert not policy.observe(study, dominated, 2, [0.1, 1e9]).stop
    assert study.trials[-1].user_attrs[RUNG_ATTR] == {"1": [0.75, 180.0]}


def test_ties_inside_the_front_are_broken_by_crowding_or_hypervolume() -> None:
    crowd, spread = [0.89, 295.0], [0.7, 200.0]  # all five are non-dominated
    others = [[0.9, 300.0], [0.5, 100.0], [0.88, 290.0]]
    for tie_break in ("crowding", "hypervolume"):
        policy = ParetoHalving(MAX_MIN, reduction_factor=2, tie_break=tie_break)  # n = 5 keeps 3
        crowded = policy.judge(crowd, [*others, spread], 1)  # in a crowd: adds almost nothing
        assert crowded.stop and "front 1" in crowded.reason, tie_break
        assert not policy.judge(spread, [*others, crowd], 1).stop, tie_break  # alone mid-front: kept


def test_a_rung_with_one_trial_keeps_it() -> None:
    study = study_with({})
    trial = study.ask()
    assert not ParetoHalving(MAX_MIN).observe(study, trial, 1, [0.01, 1e9]).stop
    # n_min_trials: a rung with fewer trials than that stops nobody
    assert not ParetoHalving(MAX_MIN, n_min_trials=5).judge([0.0, 1e9], [[0.9, 1.0]] * 3, 1).stop
    assert ParetoHalving(MAX_MIN).judge([0.0, 1e9], [[0.9, 1.0]] * 3, 1).stop


def test_a_trial_without_intermediate_values_is_not_in_any_rung() -> None:
    study = study_with({1: [[0.9, 100.0]]})
    silent = study.ask()  # completes with its final value only, never reported at a rung
    study.tell(silent, [0.99, 1.0])
    from aup.proposer_ext.pareto_halving import rung_population

    assert rung_population(study, 1) == [[0.9, 100.0]]
    assert rung_population(study, 3) == []


def test_a_missing_size_ranks_worst_in_size_and_alone_it_is_left_out() -> None:
    policy = ParetoHalving(MAX_MIN)
    others = [[0.5, 100.0], [0.6, 90.0], [0.55, 80.0]]
    # best accuracy but no size: worse than every size seen, still on the front by accuracy
    keys = policy.rank_keys([[0.9, None], *others])
    assert keys[0][0] == 0 and math.isinf(-keys[0][1])
    # dominated once accuracy is worse too: the missing size does not help it
    assert policy.judge([0.4, None], others, 1).stop
    # nobody reported a size: the rung ranks by accuracy alone
    assert policy.rank_keys([[0.9, None], [0.5, None]])[1][0] == 1
    assert policy.judge([0.4, None], [[0.9, None], [0.8, None]], 1).stop
    assert not policy.judge([0.95, None], [[0.9, None], [0.8, None]], 1).stop
    # a NaN score is missing too
    assert policy.judge([math.nan, 80.0], [[0.6, 80.0], [0.7, 80.0]], 1).stop


def test_resume_mid_rung_decides_from_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    study = study_with({1: [[0.9, 100.0], [0.8, 150.0]]}, storage=url)
    # the first runner recorded a trial at rung 1 and was killed before deciding; that trial failed
    # (interrupted) and is run again, so its vector is not counted twice
    killed = study.ask()
    ParetoHalving(MAX_MIN).observe(study, killed, 1, [0.95, 50.0], decide=False)
    study.tell(killed, state=TrialState.FAIL)
    running = study.ask()  # mid-rung: reported nothing yet
    optuna.storages.RDBStorage(url).remove_session()
    # a new runner: a new policy object and a new handle on the same database
    resumed = optuna.load_study(study_name=study.study_name, storage=url)
    trial = next(t for t in resumed.get_trials(states=(TrialState.RUNNING,)) if t.number == running.number)
    decision = ParetoHalving(MAX_MIN).observe(resumed, trial, 1, [0.7, 160.0])
    assert decision.stop and "of the 3 trials" in decision.reason  # the failed one is not counted
    assert resumed.trials[running.number].user_attrs[RUNG_ATTR] == {"1": [0.7, 160.0]}


def test_joined_runners_share_the_rung(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    first = optuna.create_study(directions=DIRECTIONS, storage=url, study_name="joined")
    second = optuna.load_study(study_name="joined", storage=url)
    policy_a, policy_b = ParetoHalving(MAX_MIN, reduction_factor=2), ParetoHalving(MAX_MIN, reduction_factor=2)
    a = first.ask()
    assert not policy_a.observe(first, a, 1, [0.9, 100.0]).stop  # alone at the rung
    b = second.ask()
    decision = policy_b.observe(second, b, 1, [0.8, 120.0])  # sees a's record through the store
    assert decision.stop and "1 of the 2 trials" in decision.reason
    c = first.ask()
    assert not policy_a.observe(first, c, 1, [0.95, 90.0]).stop  # and a's runner sees b's


@pytest.mark.parametrize("proposer", ["random", "tpe", "nsga2", "gp", "qmc"])
def test_every_multi_objective_proposer_keeps_proposing_after_stopped_trials(proposer: str) -> None:
    pytest.importorskip("scipy")
    sampler = build_sampler(proposer, {}, 3, 2)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    policy = ParetoHalving(MAX_MIN, reduction_factor=2)
    stopped = 0
    for _ in range(12):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_int("y", 1, 4)
        curve = [x * step / 3 for step in (1, 2, 3)]
        for step, value in enumerate(curve, 1):
            if policy.observe(study, trial, step, [value, 100.0 * y]).stop:
                study.tell(trial, state=TrialState.PRUNED)
                stopped += 1
                break
        else:
            study.tell(trial, [curve[-1], 100.0 * y])
    assert stopped > 0 and len(study.trials) == 12
    assert all(t.state in (TrialState.PRUNED, TrialState.COMPLETE) for t in study.trials)


def test_validation_accepts_successive_halving_for_several_objectives_only() -> None:
    section = {"aup_policy": "successive_halving", "aup_policy_steps": 1, "reduction_factor": 3}
    assert validate_early_stop(section, 2) == []
    assert isinstance(build_stop_policy(section, MAX_MIN), ParetoHalving)
    assert build_stop_policy(section, [True]) is None  # one objective: optuna's pruner
    assert isinstance(build_pruner(section, 1), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(build_pruner(section, 2), optuna.pruners.NopPruner)
    median = {"aup_policy": "median", "aup_policy_steps": 1}
    assert validate_early_stop(median, 2) == [
        "early_stop.aup_policy: 'median' compares one objective; with 2 objectives use 'successive_halving' "
        "(rungs ranked by Pareto front)"]
    assert validate_early_stop({**section, "reduction_factor": 1}, 2) == [
        "early_stop.reduction_factor: expected an integer >= 2, got 1"]
    assert build_stop_policy({**section, "max_steps": 3}, MAX_MIN).max_steps == 3
    assert validate_early_stop({**section, "max_steps": 1}, 2) == [
        "early_stop.max_steps: expected an integer >= 2 (the results of a full trial), got 1"]
    assert validate_early_stop({**section, "tie_break": "random"}, 2) == [
        "early_stop.tie_break: expected one of crowding, hypervolume, got 'random'"]
    with pytest.raises(ProposerError, match="compares one objective"):
        build_stop_policy(median, MAX_MIN)


def test_front_helpers() -> None:
    points = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]]
    assert non_dominated_fronts(points) == [[0, 1, 2], [3]]
    assert crowding_distances(points[:3])[2] == pytest.approx(2.0)
    assert hypervolume([[0.0, 1.0], [1.0, 0.0]], [2.0, 2.0]) == pytest.approx(3.0)
    assert hypervolume([[0.5, 0.5, 0.5]], [1.0, 1.0, 1.0]) == pytest.approx(0.125)
    assert hv_contributions([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]) == pytest.approx([0.5, 0.5, 0.25])
