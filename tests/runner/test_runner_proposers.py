"""The runner with the real proposers: grids, budgets (hyperband), early stopping through pruners."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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



def _mo_experiment(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    exp = experiment(tmp_path, "mo_steps.py", n_parallel=1, target={"score": "max", "model_bytes": "min"},
                     parameter_config=[{"name": "x", "type": "choice", "range": [3, 2, 1]}],
                     runtime_args={"env": {"AUP_TEST_STEPS": "4", "AUP_TEST_SLEEP": "0.3"}},
                     resource_args={"early_stop": {"aup_policy": "successive_halving", "aup_policy_steps": 1,
                                                   "reduction_factor": 2, "max_steps": 4}})
    exp.update(overrides)
    return exp


@pytest.mark.slow
def test_multi_objective_early_stop_stops_dominated_trials_visibly(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    # x = 3, then 2, then 1: each later trial is less accurate and bigger at every step (model_bytes
    # = 100 / x is reported before the first result), so at the first rung (step 1, keeps half) the
    # second and third trials are stopped
    exp = _mo_experiment(tmp_path, proposer="sequence")
    del exp["n_samples"]
    result, study, output = run(tmp_path, exp)
    assert result.exit_code == 0
    by_x = {t.params["x"]: t for t in study.trials}
    best = by_x[3]
    assert best.state == TrialState.COMPLETE and best.user_attrs["rung_values"]["1"] == [0.75, 100 / 3]
    for x in (2, 1):
        trial = by_x[x]
        assert trial.state == TrialState.PRUNED, trial.user_attrs
        assert trial.user_attrs["status_reason"].startswith("stopped at step 1 by successive halving")
        assert trial.user_attrs["intermediate_results"][0] == pytest.approx(x / 4)  # partial results kept
        assert trial.user_attrs["model_bytes"] == pytest.approx(100 / x)
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    shown = subprocess.run([sys.executable, "-m", "aup", "show", result.study_name, "--storage", url],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "successive halving" in " ".join(shown.stdout.split()), shown.stdout
    compared = subprocess.run([sys.executable, "-m", "aup", "compare", result.study_name, str(by_x[1].number),
                               "--json", "--storage", url], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    [row] = json.loads(compared.stdout)  # the stopped trial's partial results: last score, its size
    assert row["score"] == pytest.approx(0.25) and row["model_bytes"] == pytest.approx(100.0)


@pytest.mark.slow
def test_multi_objective_early_stop_with_tpe_and_a_trial_without_size(tmp_path: Path) -> None:
    exp = _mo_experiment(tmp_path, proposer="tpe", n_samples=4)
    exp["runtime_args"]["env"]["AUP_TEST_NO_SIZE"] = "1"  # no size before the end: rungs rank by score
    result, study, _ = run(tmp_path, exp)
    assert result.exit_code == 0
    trials = study.trials
    assert trials[0].state == TrialState.COMPLETE and trials[0].user_attrs["rung_values"]["1"][1] is None
    for trial in trials[1:]:
        earlier = [t.params["x"] for t in trials[:trial.number]]
        better = sum(1 for x in earlier if x > trial.params["x"])
        stopped = trial.state == TrialState.PRUNED
        assert stopped == (better >= -(-(trial.number + 1) // 2)), (trial.number, earlier, trial.params)
        assert all(v is not None for v in trial.values or [0])  # finished ones have their final size


def test_multi_objective_median_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from aup.cli import main

    exp = _mo_experiment(tmp_path, resource_args={"early_stop": {"aup_policy": "median", "aup_policy_steps": 1}})
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(exp))
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 'aup.db'}"]) == 2
    assert "resource_args.early_stop.aup_policy: 'median' compares one objective" in capsys.readouterr().err
