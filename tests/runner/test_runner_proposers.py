"""The runner with the real proposers: grids, budgets (hyperband), early stopping through pruners."""
from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.runner.test_runner import experiment, run


def test_sequence_runs_the_whole_grid_once(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", proposer="sequence", n_samples=None, n_parallel=2,
                     parameter_config=[{"name": "x", "type": "int", "range": [0, 2]},
                                       {"name": "h", "type": "choice", "range": [1, 2]}])
    del exp["n_samples"]
    result, study, _ = run(tmp_path, exp)
    assert result.exit_code == 0
    grid = sorted((t.params["x"], t.params["h"]) for t in study.trials)
    assert grid == [(x, h) for x in range(3) for h in (1, 2)]


def test_hyperband_budgets_reach_the_job_config(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", proposer="hyperband", max_iter=3, eta=3, n_parallel=2)
    del exp["n_samples"]
    result, study, _ = run(tmp_path, exp)
    assert result.exit_code == 0
    budgets = [t.user_attrs["job_config"]["n_iterations"] for t in study.trials]
    assert set(budgets) == {1, 3}
    for trial in study.trials:
        assert trial.user_attrs["budget"] == trial.user_attrs["job_config"]["n_iterations"]
    promoted = [t for t in study.trials if t.user_attrs["job_config"]["n_iterations"] == 3]
    assert promoted and all(t.state == TrialState.COMPLETE for t in promoted)


@pytest.mark.slow
def test_early_stop_prunes_and_records_the_trial(tmp_path: Path) -> None:
    # a grid in descending order: every trial after the first is worse at every step
    exp = experiment(tmp_path, "objective.py", proposer="sequence", target="max", n_parallel=1,
                     parameter_config=[{"name": "x", "type": "choice", "range": [3, 2, 1]}],
                     runtime_args={"env": {"AUP_TEST_STEPS": "6", "AUP_TEST_SLEEP": "0.15"}},
                     resource_args={"early_stop": {"aup_policy": "median", "aup_policy_steps": 1, "warmup": 1}})
    del exp["n_samples"]
    result, study, output = run(tmp_path, exp)
    assert result.exit_code == 0
    first, *others = study.trials
    assert first.state == TrialState.COMPLETE and len(first.intermediate_values) == 7
    assert others and all(t.state == TrialState.PRUNED for t in others)
    for trial in others:
        assert trial.user_attrs["status_reason"].startswith("pruned at step 1")
        assert len(trial.intermediate_values) < 6  # stopped before the end
        assert trial.user_attrs["attempts"][0]["reason"] == trial.user_attrs["status_reason"]
    assert "pruned" in output
