"""Target mode: the stop rule ``first_feasible`` and the recommended trial at the end of every run."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from rich.console import Console

from aup import store
from aup.cli import main
from aup.runner.state import INTERRUPTED
from aup.runner.experiment import STOP_ATTR, resume_experiment
from aup.views.recommend import ATTR
from experiment_runs import run_in_process

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "target.py"
WITHIN = {"score": ">= baseline_score - 0.1"}  # feasible when x >= 0.9


def experiment(tmp_path: Path, xs: list[float], **overrides: Any) -> dict[str, Any]:
    """Trials in the order of ``xs`` (the sequence proposer walks a choice in order), one at a time."""
    exp: dict[str, Any] = {
        "name": "exp", "script": str(SCRIPT), "workingdir": str(tmp_path), "resource": "cpu",
        "proposer": "sequence", "n_parallel": 1, "target": {"score": "max", "model_bytes": "min"},
        "parameter_config": [{"name": "x", "type": "choice", "range": xs}], "constraints": WITHIN,
    }
    exp.update(overrides)
    return exp


def run(tmp_path: Path, exp: dict[str, Any]) -> tuple[Any, optuna.Study, str]:
    return run_in_process(tmp_path, exp, width=300)


def test_first_feasible_stops_early_and_keeps_that_model(tmp_path: Path) -> None:
    exp = experiment(tmp_path, [0.5, 0.95, 0.99, 0.6], stop="first_feasible", resource_args={"save_model": True})
    result, study, output = run(tmp_path, exp)
    assert [t.params["x"] for t in study.trials] == [0.5, 0.95]  # no trial after the first feasible one
    assert result.recommended == 1 and result.exit_code == 0
    assert study.user_attrs[ATTR] == {"trial": 1, "feasible": True, "line": study.user_attrs[ATTR]["line"]}
    assert "recommended: trial 1 (score 0.95, model_bytes 950 B" in output
    assert study.user_attrs[STOP_ATTR] == "first_feasible: trial 1 met the constraints"
    assert "stopped early by the stop rule first_feasible: trial 1 met the constraints" in output
    assert (Path(result.best_model_path) / "model.txt").read_text() == "0.95"  # the recommended trial's model
    assert f"best model (trial 1): {result.best_model_path}" in output


def test_resume_after_the_stop_rule_fired_runs_nothing_and_agrees(tmp_path: Path) -> None:
    exp = experiment(tmp_path, [0.5, 0.95, 0.99, 0.6], stop="first_feasible")
    first, study, _ = run(tmp_path, exp)
    study.set_user_attr(store.ATTR_STATUS, INTERRUPTED)  # as if Ctrl-C came before the run's end was written
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    console = Console(file=io.StringIO(), width=300)
    again = resume_experiment(first.study_name, url, console=console, live=False)
    study = optuna.load_study(study_name=first.study_name, storage=url)
    assert len(study.trials) == 2 and again.recommended == first.recommended == 1
    assert "stop rule first_feasible: trial 1 met every constraint; no new trials" in console.file.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("ranking, expected", [(None, 3), ("model_bytes", 2)])
def test_feasible_found_late_uses_the_whole_budget(tmp_path: Path, ranking: str | None, expected: int) -> None:
    exp = experiment(tmp_path, [0.5, 0.6, 0.92, 0.97], **({"recommend": ranking} if ranking else {}))
    result, study, output = run(tmp_path, exp)
    assert len(study.trials) == 4 and result.recommended == expected
    assert f"recommended: trial {expected} " in output
    assert f"best {ranking or 'score'}; 2 of 4 completed trials met the constraints" in output


def test_none_feasible_names_the_closest_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = experiment(tmp_path, [0.5, 0.8, 0.7], stop="first_feasible")
    result, study, output = run(tmp_path, exp)
    line = "no trial met score >= 0.9; closest: trial 1, score 0.8"
    assert len(study.trials) == 3 and result.recommended == 1 and line in output
    assert study.user_attrs[ATTR] == {"trial": 1, "feasible": False, "line": line}
    capsys.readouterr()
    assert main(["show", "exp", "--storage", f"sqlite:///{tmp_path / 'aup.db'}"]) == 0
    assert line in capsys.readouterr().out  # aup show names the same trial, in the same words
    assert main(["show", "exp", "--json", "--storage", f"sqlite:///{tmp_path / 'aup.db'}"]) == 0
    assert json.loads(capsys.readouterr().out)["recommended"] == {"trial": 1, "feasible": False, "line": line}


def test_every_trial_failed_is_said(tmp_path: Path) -> None:
    exp = experiment(tmp_path, [-1.0, -2.0], job_failure={"ignore_fail": True, "job_retries": 0})
    result, study, output = run(tmp_path, exp)
    assert result.recommended is None
    assert "nothing to recommend: no trial completed (2 failed)" in output
    assert study.user_attrs[ATTR]["trial"] is None


@pytest.mark.slow
def test_single_objective_without_constraints_recommends_the_best(tmp_path: Path) -> None:
    exp = experiment(tmp_path, [0.3, 0.9, 0.6], target="max")
    exp.pop("constraints")
    result, _, output = run(tmp_path, exp)
    assert result.recommended == 1 and "recommended: trial 1 (score 0.9): best score; 3 completed trials" in output


def test_the_target_example_validates_with_one_global_dimension() -> None:
    from aup.compression.search_space import job_config_builder
    from aup.config import load_experiment

    example = Path(__file__).resolve().parents[2] / "experiments" / "pruning" / "exp_target.json"
    exp = load_experiment(str(example)).experiment
    assert exp.stop == "first_feasible" and exp.recommend == "model_bytes"
    assert job_config_builder(exp).space.names == ["lr", "epochs", "global sparsity (conv1, conv2)"]
