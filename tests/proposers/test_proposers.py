"""Proposers on optuna ask/tell: samplers, grid, hyperband/bohb schedules, resume, pruners."""
from __future__ import annotations

import importlib.util
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from aup.proposer_ext import (PROPOSER_OPTIONS, PROPOSERS, WAIT, BanditPruner, Dimension, ProposerError,
                              SearchSpace, bohb_schedule, build_proposer, build_pruner, build_sampler,
                              hyperband_schedule, schedule_runs, validate_options)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE_CONFIG = [
    {"name": "x", "type": "float", "range": [-5, 5]},
    {"name": "k", "type": "int", "range": [1, 4]},
    {"name": "c", "type": "choice", "range": ["a", "b"]},
]


def objective(params: dict[str, Any]) -> float:
    return -((params["x"] - 1) ** 2) - params["k"] + (params["c"] == "a")


def make(name: str, options: dict | None = None, n_samples: int | None = 8, seed: int = 3,
         direction: str = "maximize", space: SearchSpace | None = None, study: optuna.Study | None = None):
    space = space or SearchSpace.from_parameter_config(SPACE_CONFIG)
    options = options or {}
    if study is None:
        study = optuna.create_study(direction=direction, sampler=build_sampler(name, options, seed, 1, space=space))
    return space, study, build_proposer(name, options, space, study, n_samples, seed)


def drain(study: optuna.Study, proposer, score=objective, limit: int = 1000) -> list:
    """Run proposals one at a time (n_parallel = 1) until the proposer has no more."""
    done = []
    for _ in range(limit):
        proposal = proposer.propose()
        if proposal is None:
            return done
        assert proposal is not WAIT, "a sequential run never waits"
        value = score(proposal.params)
        study.tell(proposal.trial, value)
        proposer.complete(proposal.trial.number, TrialState.COMPLETE, value)
        done.append(proposal)
    raise AssertionError("proposer did not finish")


# ---- every proposer -----------------------------------------------------------------------------
# small start-up phases so that the model-based part of each sampler runs too
SAMPLING = [("random", {}), ("tpe", {"n_startup_trials": 3}), ("hyperopt", {"n_startup_trials": 3}),
            ("gp", {"n_startup_trials": 3}), ("spearmint", {"n_startup_trials": 3}), ("qmc", {}),
            ("nsga2", {"population_size": 3})]


@pytest.mark.parametrize("name, options", SAMPLING)
def test_sampling_proposers_run_n_samples(name: str, options: dict) -> None:
    _, study, proposer = make(name, options, n_samples=6)
    done = drain(study, proposer)
    assert len(done) == 6 and proposer.finished
    assert all(-5 <= p.params["x"] <= 5 and p.params["c"] in ("a", "b") for p in done)
    assert all(p.budget is None for p in done)


def test_engine_random_gives_random_sampler() -> None:
    assert isinstance(build_sampler("hyperopt", {"engine": "random"}, 0), optuna.samplers.RandomSampler)
    assert isinstance(build_sampler("tpe", {}, 0), optuna.samplers.TPESampler)
    assert isinstance(build_sampler("spearmint", {"engine": "GPEIChooser"}, 0), optuna.samplers.GPSampler)
    assert isinstance(build_sampler("nsga2", {}, 0, 2), optuna.samplers.NSGAIISampler)


def test_cmaes_builds_or_names_the_missing_package() -> None:
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ProposerError, match="'cmaes' package.*pip install cmaes"):
            build_sampler("cmaes", {}, 0)
    else:
        _, study, proposer = make("cmaes", n_samples=5)
        assert len(drain(study, proposer)) == 5


def test_sequence_runs_the_whole_grid_ignoring_n_samples() -> None:
    space = SearchSpace.from_parameter_config([{"name": "a", "range": [0, 10], "interval": 2},
                                               {"name": "b", "range": [0, 10], "n": 3}])
    _, study, proposer = make("sequence", n_samples=5, space=space)
    done = drain(study, proposer, score=lambda p: p["a"] + p["b"])
    assert proposer.total == 18 and len(done) == 18
    assert [p.params for p in done] == space.grid()


def test_sequence_conditional_grid() -> None:
    space = SearchSpace([Dimension("compressor", "choice", choices=("l1", "level")),
                         Dimension("groups", "int", 1, 3, condition=("compressor", "l1"))])
    _, study, proposer = make("sequence", space=space)
    done = drain(study, proposer, score=lambda p: 0.0)
    assert [p.params for p in done] == space.grid() and len(done) == 4
    assert [t.params for t in study.trials] == space.grid()


@pytest.mark.parametrize("name, options", [("random", {}), ("tpe", {"n_startup_trials": 3}),
                                           ("bohb", {"min_budget": 1, "max_budget": 9}),
                                           ("hyperband", {"max_iter": 9, "engine": "tpe"})])
def test_seeded_runs_are_reproducible(name: str, options: dict) -> None:
    runs = []
    for _ in range(2):
        _, study, proposer = make(name, options, n_samples=10, seed=11)
        runs.append([(p.params, p.budget) for p in drain(study, proposer)])
    assert runs[0] == runs[1]
    _, study, proposer = make(name, options, n_samples=10, seed=12)
    assert [(p.params, p.budget) for p in drain(study, proposer)] != runs[0]


def test_unknown_and_eas_are_refused_clearly() -> None:
    space = SearchSpace.from_parameter_config(SPACE_CONFIG)
    with pytest.raises(ProposerError, match=r"proposer 'eas' is not supported: .*TensorFlow 1 demo"):
        build_proposer("eas", {}, space, optuna.create_study(), 5, 0)
    with pytest.raises(ProposerError, match=r"unknown proposer 'hyperopts' \(did you mean 'hyperopt'\?\); known: "):
        build_sampler("hyperopts", {}, 0)
    assert "eas" in PROPOSERS and set(PROPOSER_OPTIONS) == set(PROPOSERS)


def test_validate_options_reports_one_line_problems() -> None:
    assert validate_options("hyperband", {"max_iter": 27, "eta": 3}) == []
    problems = validate_options("hyperband", {"eta": 1, "engine": "grid", "max_itr": 9})
    assert "eta: expected a number >= 2 (the halving rate), got 1" in problems
    assert any(p.startswith("engine: expected one of random, tpe, sequence") for p in problems)
    assert any(p.startswith("max_itr: not an option of the 'hyperband' proposer") for p in problems)
    assert validate_options("bohb", {"min_budget": 2, "max_budget": 1}) == [
        "min_budget: expected min_budget < max_budget, got 2 >= 1"]
    assert validate_options("random", {}, n_samples=None) == [
        "n_samples: required by the 'random' proposer (the number of trials to run)"]
    assert validate_options("cmaes", {}, n_objectives=2)[0].startswith("proposer: 'cmaes' optimises a single")
    with pytest.raises(ProposerError, match="n_samples: required"):
        make("tpe", n_samples=None)


# ---- hyperband / bohb ---------------------------------------------------------------------------
def test_hyperband_schedule_max_iter_9_eta_3() -> None:
    schedule = hyperband_schedule(9, 3)
    assert [[(r.size, r.budget) for r in bracket] for bracket in schedule] == [
        [(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)]]
    assert schedule_runs(schedule) == 22
    default = hyperband_schedule()
    assert sum(b[0].size for b in default) == 143  # Auptimizer's nSamples for the defaults
    assert schedule_runs(default) == 206  # ... but the brackets need 206 runs to complete
    assert [len(b) for b in hyperband_schedule(9, 3, skip_last=1)] == [2, 1]


def test_bohb_schedule_matches_hpbandster() -> None:
    assert schedule_runs(bohb_schedule()) == 182  # Auptimizer/HpBandSter defaults
    schedule = bohb_schedule(1, 9, 3, n_iterations=4)
    assert [[(r.size, r.budget) for r in b] for b in schedule] == [
        [(9, 1), (3, 3), (1, 9)], [(3, 3), (1, 9)], [(3, 9)], [(9, 1), (3, 3), (1, 9)]]
    assert [r.budget for r in bohb_schedule(1 / 9, 1, 3, 1)[0]] == [pytest.approx(1 / 9), pytest.approx(1 / 3), 1]


def _propose_n(proposer, n: int) -> list:
    out = []
    for _ in range(n):
        proposal = proposer.propose()
        assert proposal is not None and proposal is not WAIT
        out.append(proposal)
    return out


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_hyperband_rungs_promotions_and_wait(direction: str) -> None:
    _, study, proposer = make("hyperband", {"max_iter": 9, "eta": 3}, n_samples=None, direction=direction)
    assert proposer.total == 22
    first = _propose_n(proposer, 9)
    assert [p.budget for p in first] == [1] * 9
    assert {p.trial.user_attrs["bracket"] for p in first} == {0}
    # bracket 0's rung 0 is running: the next brackets start meanwhile (5 @ 3, then 3 @ 9)
    others = _propose_n(proposer, 8)
    assert [p.budget for p in others] == [3] * 5 + [9] * 3
    assert proposer.propose() is WAIT
    scores = {p.trial.number: float(i) for i, p in enumerate(first)}  # later = larger
    for p in first[:-1]:
        study.tell(p.trial, scores[p.trial.number])
        proposer.complete(p.trial.number, TrialState.COMPLETE, scores[p.trial.number])
    assert proposer.propose() is WAIT  # one run of the rung is still going
    study.tell(first[-1].trial, state=TrialState.PRUNED)
    proposer.complete(first[-1].trial.number, TrialState.PRUNED, None)
    promoted = _propose_n(proposer, 3)
    assert [p.budget for p in promoted] == [3, 3, 3]
    # best by the direction; the pruned run (score 8, the largest) is never promoted
    want = [first[i] for i in ([7, 6, 5] if direction == "maximize" else [0, 1, 2])]
    assert [p.params for p in promoted] == [p.params for p in want]
    assert [p.extras["config_id"] for p in promoted] == [p.extras["config_id"] for p in want]
    assert all(p.trial.user_attrs["rung"] == 1 for p in promoted)
    assert proposer.propose() is WAIT


def test_hyperband_sequential_run_completes_all_22_runs() -> None:
    _, study, proposer = make("hyperband", {"max_iter": 9}, n_samples=None)
    done = drain(study, proposer)
    assert len(done) == 22 and proposer.finished
    top = [p for p in done if p.trial.user_attrs["bracket"] == 0 and p.trial.user_attrs["rung"] == 2]
    rung0 = [p for p in done if p.trial.user_attrs["bracket"] == 0 and p.trial.user_attrs["rung"] == 0]
    best = max(rung0, key=lambda p: objective(p.params))
    assert len(top) == 1 and top[0].params == best.params and top[0].budget == 9


def test_n_samples_caps_hyperband() -> None:
    _, study, proposer = make("hyperband", {"max_iter": 9}, n_samples=10)
    assert proposer.total == 10
    assert len(drain(study, proposer)) == 10


def test_bohb_budgets_and_min_target() -> None:
    options = {"min_budget": 1, "max_budget": 9, "eta": 3, "n_iterations": 2}
    _, study, proposer = make("bohb", options, n_samples=None, direction="minimize")
    assert isinstance(study.sampler, optuna.samplers.BaseSampler)
    done = drain(study, proposer, score=lambda p: (p["x"] - 1) ** 2)
    assert len(done) == 13 + 4 and proposer.total == 17
    assert sorted({p.budget for p in done}) == [1, 3, 9]
    rung0 = [p for p in done if p.trial.user_attrs["bracket"] == 0 and p.trial.user_attrs["rung"] == 0]
    rung1 = [p for p in done if p.trial.user_attrs["bracket"] == 0 and p.trial.user_attrs["rung"] == 1]
    best3 = sorted(rung0, key=lambda p: (p.params["x"] - 1) ** 2)[:3]
    assert [p.params for p in rung1] == [p.params for p in best3]  # minimised, unlike Auptimizer's bohb


def test_hyperband_refuses_several_objectives() -> None:
    space = SearchSpace.from_parameter_config(SPACE_CONFIG)
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ProposerError, match="'hyperband' optimises a single objective"):
        build_proposer("hyperband", {}, space, study, None, 0)


# ---- resume -------------------------------------------------------------------------------------
def test_hyperband_resumes_from_stored_trials() -> None:
    space, study, proposer = make("hyperband", {"max_iter": 9}, n_samples=None)
    first = []
    for _ in range(12):  # part of the schedule, then the process "dies"
        p = proposer.propose()
        value = objective(p.params)
        study.tell(p.trial, value)
        proposer.complete(p.trial.number, TrialState.COMPLETE, value)
        first.append(p)
    running = proposer.propose()  # was running when interrupted: the runner marks it
    running.trial.set_user_attr("interrupted", True)
    study.tell(running.trial, state=TrialState.FAIL)

    resumed = build_proposer("hyperband", {"max_iter": 9}, space, study, None, 3)
    rest = drain(study, resumed)
    assert len(first) + len(rest) == 22
    assert rest[0].extras["config_id"] == running.extras["config_id"]  # the interrupted slot again
    keys = [(t.user_attrs["bracket"], t.user_attrs["rung"], t.user_attrs["config_id"])
            for t in study.trials if not t.user_attrs.get("interrupted")]
    assert len(keys) == len(set(keys)) == 22


def test_sampler_and_grid_proposers_count_stored_trials() -> None:
    space, study, proposer = make("random", n_samples=5)
    for p in [proposer.propose() for _ in range(3)]:
        study.tell(p.trial, objective(p.params))
    assert len(drain(study, build_proposer("random", {}, space, study, 5, 3))) == 2

    grid_space = SearchSpace.from_parameter_config([{"name": "a", "range": [0, 3]}])
    _, grid_study, grid = make("sequence", space=grid_space)
    for p in [grid.propose() for _ in range(2)]:
        grid_study.tell(p.trial, 1.0)
    rest = drain(grid_study, build_proposer("sequence", {}, grid_space, grid_study, None, 0), score=lambda p: 0.0)
    assert [p.params["a"] for p in rest] == [2, 3]


def test_stray_waiting_trial_is_not_handed_out() -> None:
    space = SearchSpace.from_parameter_config([{"name": "a", "range": [0, 2]}])
    _, study, proposer = make("sequence", space=space)
    study.enqueue_trial({"a": 2})  # left over by an interrupted run
    done = drain(study, proposer, score=lambda p: 0.0)
    assert [p.params["a"] for p in done] == [0, 1, 2]
    assert [t.user_attrs.get("interrupted", False) for t in study.trials] == [True, False, False, False]


# ---- multi-objective ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nsga2", "tpe", "random"])
def test_multi_objective_with_constraints(name: str) -> None:
    """Constraints reach the samplers through trial.set_constraint (optuna 5), as the runner will do."""
    space = SearchSpace.from_parameter_config([{"name": "s", "type": "float", "range": [0, 1]}])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=build_sampler(name, {}, 0, 2))
    proposer = build_proposer(name, {}, space, study, 12, 0)
    while (p := proposer.propose()) is not None:
        size = 100 * (1 - p.params["s"])
        p.trial.set_user_attr("model_bytes", size)
        p.trial.set_constraint("model_bytes", size - 0.25 * 100)  # at most 25% of a 100-byte dense model
        study.tell(p.trial, [1 - p.params["s"] ** 2, size])
        proposer.complete(p.trial.number, TrialState.COMPLETE, [1 - p.params["s"] ** 2, size])
    assert len(study.trials) == 12
    assert study.best_trials and all(t.user_attrs["model_bytes"] <= 25 for t in study.best_trials)
    assert any(t.user_attrs["model_bytes"] > 25 for t in study.trials)


# ---- early stopping -----------------------------------------------------------------------------
def _study_with_history(pruner, direction: str = "maximize", curves=None) -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=pruner)
    for curve in curves or ([0.5, 0.6, 0.7, 0.8], [0.55, 0.65, 0.75, 0.85], [0.45, 0.6, 0.72, 0.8]):
        trial = study.ask()
        for step, value in enumerate(curve, start=1):  # the runner numbers results from 1
            trial.report(value, step)
        study.tell(trial, curve[-1])
    return study


def _pruned_at(study: optuna.Study, curve: list[float]) -> int | None:
    """The number of results after which the trial was pruned, or None."""
    trial = study.ask()
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return step
    study.tell(trial, curve[-1])
    return None


@pytest.mark.parametrize("policy", ["median", "truncation", "bandit"])
def test_pruners_stop_a_bad_trial_and_keep_a_good_one(policy: str) -> None:
    pruner = build_pruner({"aup_policy": policy, "aup_policy_steps": 1, "bandit_factor": 0.5})
    study = _study_with_history(pruner)
    assert _pruned_at(study, [0.56, 0.66, 0.76, 0.86]) is None
    assert _pruned_at(study, [0.1, 0.1, 0.1, 0.1]) == 1
    states = [t.state for t in study.trials]
    assert states[-1] == TrialState.PRUNED and states[-2] == TrialState.COMPLETE
    assert study.trials[-1].intermediate_values == {1: 0.1}  # recorded, not lost


def test_warmup_and_steps_delay_the_check() -> None:
    # Auptimizer checks once at least `warmup` results exist, every `aup_policy_steps` results
    for policy in ("median", "bandit", "truncation"):
        for steps, warmup, first in ((2, 0, 2), (2, 2, 2), (1, 3, 3), (2, 3, 4)):
            pruner = build_pruner({"aup_policy": policy, "aup_policy_steps": steps, "warmup": warmup})
            if policy == "bandit" and (steps, warmup) == (2, 3):
                first = 3  # Auptimizer's extra check at n = warmup, over the first 2 results
            assert _pruned_at(_study_with_history(pruner), [0.1, 0.1, 0.1, 0.1]) == first, (policy, steps, warmup)


def test_bandit_factor_rule_for_minimised_loss() -> None:
    pruner = BanditPruner(factor=0.5, steps=1)
    curves = ([1.0, 0.5, 0.2],)
    # best other loss 1.0 at step 0: a minimised positive value uses 2 - 0.5 = 1.5 -> stop above 1.5
    assert _pruned_at(_study_with_history(pruner, "minimize", curves), [1.4, 0.7, 0.25]) is None
    # later steps compare with the best over as many results: 1.5 x 0.5 = 0.75 at the second one
    assert _pruned_at(_study_with_history(pruner, "minimize", curves), [1.4, 0.8, 0.1]) == 2
    assert _pruned_at(_study_with_history(pruner, "minimize", curves), [1.6, 0.1, 0.1]) == 1
    # maximised: with a best of 0.8 and factor 0.5 stop below 0.4
    up = ([0.8, 0.9],)
    assert _pruned_at(_study_with_history(pruner, "maximize", up), [0.45, 0.46]) is None
    assert _pruned_at(_study_with_history(pruner, "maximize", up), [0.35, 0.46]) == 1


def test_truncation_keeps_the_top_fraction() -> None:
    pruner = build_pruner({"aup_policy": "truncation", "aup_policy_steps": 1, "truncation_percentage": 0.3})
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    curves = [[v] for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    assert _pruned_at(_study_with_history(pruner, curves=curves), [0.2]) == 1  # bottom 30%
    assert _pruned_at(_study_with_history(pruner, curves=curves), [0.5]) is None


def test_early_stop_refusals_and_defaults() -> None:
    assert isinstance(build_pruner(None), optuna.pruners.NopPruner)
    with pytest.raises(ProposerError, match="'curve_fitting' is not supported: optuna has no learning-curve"):
        build_pruner({"aup_policy": "curve_fitting", "aup_policy_steps": 1, "curve_fitting_max_iters": 10})
    with pytest.raises(ProposerError, match="early_stop.aup_policy_steps: expected an integer >= 1"):
        build_pruner({"aup_policy": "median"})
    with pytest.raises(ProposerError, match="early_stop.aup_policy: expected one of median"):
        build_pruner({"aup_policy": "hyperband", "aup_policy_steps": 1})
    with pytest.raises(ProposerError, match="compares one objective; with 2 objectives use .successive_halving."):
        build_pruner({"aup_policy": "median", "aup_policy_steps": 1}, n_objectives=2)


def test_hyperband_sequence_engine_takes_grid_points_in_order() -> None:
    space = SearchSpace.from_parameter_config([{"name": "a", "range": [0, 20]}])
    _, study, proposer = make("hyperband", {"max_iter": 9, "engine": "sequence"}, n_samples=None, space=space)
    done = drain(study, proposer, score=lambda p: -abs(p["a"] - 4))
    new = [p.params["a"] for p in done if p.trial.user_attrs["rung"] == 0]
    assert new == list(range(17))  # 9 + 5 + 3 new configurations, the grid's first 17 points
    assert [p.params["a"] for p in done if p.trial.user_attrs["bracket"] == 0 and p.trial.user_attrs["rung"] == 1] \
        == [4, 3, 5]


def test_config_id_is_reserved_for_budget_proposers() -> None:
    space = SearchSpace.from_parameter_config([{"name": "config_id", "range": [0, 1]}])
    with pytest.raises(ProposerError, match="'config_id' is reserved by the 'bohb' proposer"):
        build_proposer("bohb", {}, space, optuna.create_study(), None, 0)
