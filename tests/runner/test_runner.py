"""End-to-end tests of the experiment runner with real trial processes (tests/scripts/*)."""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from aup import store
from aup.runner.experiment import run_experiment
from aup.runner.jobconfig import BaseJobConfigBuilder
from experiment_runs import run_in_process

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def experiment(tmp_path: Path, script: str, **overrides: Any) -> dict[str, Any]:
    exp: dict[str, Any] = {
        "name": "exp",
        "script": str(SCRIPTS / script),
        "workingdir": str(tmp_path),
        "resource": "cpu",
        "proposer": "random",
        "target": "max",
        "n_samples": 3,
        "n_parallel": 2,
        "random_seed": 1,
        "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}],
    }
    exp.update(overrides)
    return exp


def run(tmp_path: Path, exp: dict[str, Any]) -> tuple[Any, optuna.Study, str]:
    return run_in_process(tmp_path, exp, width=200)


def test_trials_are_recorded_completely(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", n_samples=4,
                     parameter_config=[{"name": "x", "type": "float", "range": [0.1, 1.0]},
                                       {"name": "h", "type": "int", "range": [1, 3]}])
    result, study, output = run(tmp_path, exp)
    assert result.exit_code == 0 and result.status == "finished"
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        attrs = trial.user_attrs
        config_path = Path(attrs["job_config_path"])
        assert json.loads(config_path.read_text()) == attrs["job_config"] == {**trial.params,
                                                                              "folder_name": config_path.stem}
        assert config_path.parent == tmp_path / "jobs"
        assert Path(attrs["log_path"]).is_file() and Path(attrs["log_path"]).suffix == ".out"
        assert trial.value == pytest.approx(trial.params["x"] * trial.params["h"])
        assert attrs["score"] == pytest.approx(trial.value)
        assert attrs["accuracy"] == pytest.approx(trial.params["x"] / 10)
        assert attrs["cuda"] == ""  # cpu trials see no GPU
        assert attrs["trial_env"] == str(trial.number)
        assert [a["exit_code"] for a in attrs["attempts"]] == [0]
        assert "status_reason" not in attrs
    study_attrs = study.user_attrs
    assert study_attrs["status"] == "finished" and study_attrs["ended"]
    assert study_attrs["experiment"] == exp
    assert study_attrs["workingdir"] == str(tmp_path)
    best = max(trials, key=lambda t: t.value)
    assert f"{best.value:.6g}" in output and "aup show exp" in output


def test_second_run_gets_a_new_name_and_own_job_files(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", n_samples=1)
    first, _, _ = run(tmp_path, exp)
    second, study, _ = run(tmp_path, exp)
    assert (first.study_name, second.study_name) == ("exp", "exp (2)")
    # "exp (2)" is not a plain file name: its slug carries a hash, so a study named "exp_2" never shares its files
    name = Path(study.trials[0].user_attrs["job_config_path"]).name
    assert name.startswith("exp_2-") and name.endswith("-0.json") and name != "exp_2-0.json"


def test_failing_script_records_reason_and_continues_when_ignored(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "crash.py", job_failure={"ignore_fail": True, "job_retries": 0})
    result, study, output = run(tmp_path, exp)
    assert result.exit_code == 0
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    for trial in study.trials:
        assert trial.user_attrs["status_reason"] == "exit code 1: ZeroDivisionError: division by zero"
        assert trial.user_attrs["attempts"][0]["exit_code"] == 1
    assert "ZeroDivisionError" in output


def test_first_failure_stops_the_experiment_without_ignore_fail(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "crash.py", n_parallel=1, n_samples=5)
    result, study, output = run(tmp_path, exp)
    assert result.exit_code == 1 and result.status == "failed"
    assert len(study.trials) == 1
    assert study.user_attrs["status"] == "failed"
    assert "trial 0 failed: exit code 1: ZeroDivisionError" in result.reason
    assert "experiment failed" in output


@pytest.mark.parametrize(("script", "reason"), [
    ("no_result.py", "no result reported"),
    ("nan_result.py", "result is nan"),
])
def test_unusable_results_fail_the_trial(tmp_path: Path, script: str, reason: str) -> None:
    exp = experiment(tmp_path, script, n_samples=1, job_failure={"ignore_fail": True, "job_retries": 0})
    _, study, _ = run(tmp_path, exp)
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["status_reason"] == reason


def test_retries_rerun_the_same_configuration(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "flaky.py", n_samples=2, job_failure={"job_retries": 2})
    result, study, _ = run(tmp_path, exp)
    assert result.exit_code == 0
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        attempts = trial.user_attrs["attempts"]
        assert [a["exit_code"] for a in attempts] == [1, 0]
        assert attempts[0]["reason"] == "exit code 1: first attempt fails on purpose"
        assert attempts[0]["log"] != attempts[1]["log"] == trial.user_attrs["log_path"]
        assert trial.value == pytest.approx(trial.params["x"])


def test_retries_exhausted_fail_with_every_attempt_recorded(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "crash.py", n_samples=1, job_failure={"ignore_fail": True, "job_retries": 2})
    _, study, _ = run(tmp_path, exp)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL
    assert [a["number"] for a in trial.user_attrs["attempts"]] == [0, 1, 2]


def test_timeout_kills_the_trial_and_its_children(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "sleepy.py", n_samples=1, runtime_args={"timeout": 0.5},
                     job_failure={"ignore_fail": True, "job_retries": 0})
    _, study, _ = run(tmp_path, exp)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["status_reason"] == "timed out after 0.5s"
    child = int(Path(trial.user_attrs["job_config_path"] + ".child").read_text())
    assert not _alive(child)


def test_multi_results_are_stored_under_their_labels(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "multi.py", n_samples=2, resource_args={"multi_res_labels": ["double", "triple"]})
    _, study, _ = run(tmp_path, exp)
    for trial in study.trials:
        x = trial.params["x"]
        assert trial.value == pytest.approx(x)
        assert trial.user_attrs["double"] == pytest.approx(2 * x)
        assert trial.user_attrs["triple"] == pytest.approx(3 * x)


def test_wrong_number_of_multi_results_fails(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "multi.py", n_samples=1, resource_args={"multi_res_labels": ["a", "b", "c"]},
                     job_failure={"ignore_fail": True, "job_retries": 0})
    _, study, _ = run(tmp_path, exp)
    assert study.trials[0].user_attrs["status_reason"] == "expected 4 values (score, a, b, c), got 3"


def test_multi_objective_target_uses_labels_and_metrics(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "multi.py", n_samples=3, target={"score": "max", "double": "min"},
                     resource_args={"multi_res_labels": ["double", "triple"]})
    result, study, _ = run(tmp_path, exp)
    assert result.exit_code == 0
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for trial in study.trials:
        assert trial.values == pytest.approx([trial.params["x"], 2 * trial.params["x"]])


def test_intermediate_results_are_reported_as_steps(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", n_samples=1, runtime_args={"env": {"AUP_TEST_STEPS": "4"}})
    _, study, _ = run(tmp_path, exp)
    trial = study.trials[0]
    x = trial.params["x"]
    # four print_result calls, then @aup_args reports the return value: five steps, the last is final
    assert trial.intermediate_values == pytest.approx({0: x / 4, 1: x / 2, 2: 3 * x / 4, 3: x, 4: x})
    assert trial.value == pytest.approx(x)


def test_legacy_result_lines_still_work(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "legacy.sh", n_samples=1)
    _, study, _ = run(tmp_path, exp)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.75
    assert trial.intermediate_values == {0: 0.25, 1: 0.5, 2: 0.75}


def test_save_model_keeps_only_the_best_trials_model(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "save_model.py", n_samples=4, resource_args={"save_model": True})
    result, study, output = run(tmp_path, exp)
    best = max(study.trials, key=lambda t: t.value)
    for trial in study.trials:
        assert trial.user_attrs["job_config"]["save_model"] is True
        assert trial.user_attrs["job_config"]["folder_name"] == f"exp-{trial.number}"
    models = tmp_path / "aup_models"
    assert sorted(p.name for p in models.iterdir()) == ["exp"]
    assert float((models / "exp" / "model.txt").read_text()) == best.params["x"]
    assert result.best_model_path == str(models / "exp")
    assert study.user_attrs["best_model_path"] == str(models / "exp")
    assert len(study.trials) == 4  # kept, not re-trained
    assert "best model (trial" in output


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_gpu_trials_get_their_own_device_without_touching_the_runner_env(tmp_path: Path) -> None:
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    exp = experiment(tmp_path, "objective.py", resource="gpu", n_samples=4, n_parallel=3,
                     resource_args={"gpus": ["3", "5"]},
                     runtime_args={"env": {"AUP_TEST_SLEEP": "0.3", "AUP_TEST_ENV": "hello"}})
    _, study, _ = run(tmp_path, exp)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before
    devices = [t.user_attrs["cuda"] for t in study.trials]
    assert set(devices) <= {"3", "5"} and len(set(devices)) == 2
    assert all(t.user_attrs["test_env"] == "hello" for t in study.trials)
    # never two trials at once on one device: trials sharing a device do not overlap in time
    for device in ("3", "5"):
        spans = sorted((a["start"], a["end"]) for t in study.trials if t.user_attrs["cuda"] == device
                       for a in t.user_attrs["attempts"])
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_storage_round_trip_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUP_STORAGE", raising=False)
    url = store.resolve_storage_url(None)
    assert url == f"sqlite:///{tmp_path / '.aup' / 'aup.db'}" and not (tmp_path / ".aup").exists()  # no side effect
    monkeypatch.setenv("AUP_STORAGE", "sqlite:///other.db")
    assert store.resolve_storage_url(None) == "sqlite:///other.db"
    assert store.resolve_storage_url("sqlite:///cli.db") == "sqlite:///cli.db"
    storage = store.open_storage(url)
    assert (tmp_path / ".aup").is_dir()  # created when the storage is opened for a run
    assert store.unique_study_name(storage, "a") == "a"
    store.create_experiment_study(storage, "a", ["maximize"])
    store.create_experiment_study(storage, "a (2)", ["maximize"])
    assert store.unique_study_name(storage, "a") == "a (3)"
    assert store.latest_study_for(storage, "a") == "a (2)"
    assert store.load_experiment_study(storage, "a").study_name == "a"
    with pytest.raises(store.UserError, match=r"no experiment named 'b'.*'a', 'a \(2\)'"):
        store.load_experiment_study(storage, "b")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def test_nan_values_never_reach_the_study(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "nan_result.py", n_samples=1, job_failure={"ignore_fail": True, "job_retries": 0})
    _, study, _ = run(tmp_path, exp)
    assert study.trials[0].value is None or not math.isnan(study.trials[0].value)


class _CompressionLikeBuilder(BaseJobConfigBuilder):
    """A stand-in translator: one extra search dimension turned into concrete compression keys."""

    def __init__(self, parameter_config: list[dict[str, Any]]) -> None:
        from aup.proposer_ext import Dimension, SearchSpace

        self.space = SearchSpace.from_parameter_config(parameter_config)
        self.space.add([Dimension("sparsity", "float", low=0.1, high=0.9)])

    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        job = {k: v for k, v in params.items() if k != "sparsity"}
        job.update(compression_framework="torch", compression_type="pruning", compressor="level",
                   config_list=[{"sparsity": params["sparsity"], "op_types": ["default"]}])
        return job


def test_a_builder_lacking_members_of_the_contract_is_refused_naming_them(tmp_path: Path) -> None:
    class SpaceAndBuildOnly:
        def __init__(self) -> None:
            from aup.proposer_ext import SearchSpace

            self.space = SearchSpace.from_parameter_config([])

        def build(self, params: dict[str, Any]) -> dict[str, Any]:
            return dict(params)

    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment(tmp_path, "objective.py", n_samples=1)))
    with pytest.raises(TypeError, match="lacks model_ref, user_entry, allocation_seeds"):
        run_experiment(str(path), f"sqlite:///{tmp_path / 'aup.db'}", console=Console(file=io.StringIO()),
                       live=False, builder=SpaceAndBuildOnly())  # type: ignore[arg-type]


def test_job_config_builder_hook_adds_dimensions_and_concrete_keys(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", n_samples=2)
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(exp))
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    builder = _CompressionLikeBuilder(exp["parameter_config"])
    result = run_experiment(str(path), url, console=Console(file=io.StringIO()), live=False, builder=builder)
    assert result.exit_code == 0
    for trial in optuna.load_study(study_name="exp", storage=url).trials:
        job = trial.user_attrs["job_config"]
        assert set(trial.params) == {"x", "sparsity"}
        assert job["config_list"] == [{"sparsity": trial.params["sparsity"], "op_types": ["default"]}]
        assert "sparsity" not in job and job["x"] == trial.params["x"]


def test_constraints_mark_infeasible_trials(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", n_samples=4, constraints={"accuracy": {"max": 0.05}})
    _, study, _ = run(tmp_path, exp)
    for trial in study.trials:
        (value,) = trial.constraints.values()
        assert (value <= 0) == (trial.params["x"] / 10 <= 0.05) == trial.user_attrs["feasible"]
    feasible = [t for t in study.trials if t.params["x"] <= 0.5]
    if feasible:  # the best trial is the best feasible one
        assert study.best_trial.number == max(feasible, key=lambda t: t.value).number


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_at_most_n_parallel_trials_run_at_once(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "objective.py", n_samples=5, n_parallel=2, runtime_args={"env": {"AUP_TEST_SLEEP": "0.3"}})
    _, study, _ = run(tmp_path, exp)
    events = []
    for trial in study.trials:
        (attempt,) = trial.user_attrs["attempts"]
        events += [(attempt["start"], 1), (attempt["end"], -1)]
    running = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same time
        running += change
        peak = max(peak, running)
    assert peak == 2


def test_live_display_shows_counts_and_best(tmp_path: Path) -> None:
    from aup.runner.progress import Progress

    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    with Progress("demo", console=console, live=True, total=3) as progress:
        progress.set_running(2)
        progress.finished(0, "COMPLETE", 0.5, {"x": 1}, None)
        progress.finished(1, "FAIL", None, {"x": 2}, "exit code 1: boom")
        progress.set_running(1)
    text = console.file.getvalue()
    assert "done 1/3" in text and "failed 1" in text and "running 1" in text and "best 0.5 (trial 0)" in text
