"""Several runners on one experiment in a shared PostgreSQL store (``aup run --join``, ``aup worker``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from aup.cli import main

SCRIPTS = Path(__file__).parent.parent / "scripts"


def write(folder: Path, **overrides: Any) -> Path:
    exp: dict[str, Any] = {
        "name": "joined", "script": str(SCRIPTS / "objective.py"), "resource": "cpu", "proposer": "random",
        "target": "max", "n_samples": 8, "n_parallel": 1, "workingdir": str(folder),
        "runtime_args": {"env": {"AUP_TEST_SLEEP": "0.6"}},
        "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}],
    }
    exp.update(overrides)
    path = folder / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


def wait_for(condition: Any, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def aup(folder: Path, url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aup", *args], cwd=folder, env={**os.environ, "AUP_STORAGE": url},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_join_needs_a_server_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    assert main(["run", str(path), "--join", "--storage", f"sqlite:///{tmp_path / 'a.db'}"]) == 2
    assert "--join needs a results store on a server" in capsys.readouterr().err


@pytest.mark.slow
def test_join_refuses_stateful_proposers_and_missing_runs(tmp_path: Path, postgres_url: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, proposer="sequence", parameter_config=[{"name": "x", "type": "int", "range": [1, 3]}])
    assert main(["run", str(path), "--join", "--storage", postgres_url]) == 2
    assert "the 'sequence' proposer keeps its state in the runner" in capsys.readouterr().err
    path = write(tmp_path)
    assert main(["run", str(path), "--join", "--storage", postgres_url]) == 2
    assert "no run of the experiment 'joined'" in capsys.readouterr().err
    assert main(["worker", "joined", "--storage", postgres_url]) == 2
    assert "no experiment named 'joined'" in capsys.readouterr().err


@pytest.mark.slow
def test_two_runners_share_one_study_without_repeating_a_trial(tmp_path: Path, postgres_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, script=str(SCRIPTS / "sized.py"),
          runtime_args={"env": {"AUP_TEST_SLEEP": "0.3", "AUP_TEST_GATE": str(tmp_path / "go")}})
    first = aup(tmp_path, postgres_url, "experiment.json", "--no-live")

    def running() -> int:
        try:
            study = optuna.load_study(study_name="joined", storage=postgres_url)
        except KeyError:
            return 0
        return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    wait_for(lambda: running() == 1)
    second = aup(tmp_path, postgres_url, "worker", "joined", "--no-live")
    wait_for(lambda: running() == 2)  # each runner has a trial waiting at the gate
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=180) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    study = optuna.load_study(study_name="joined", storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8  # n_samples is the experiment's, not each runner's
    assert len({t.params["x"] for t in complete}) == 8  # each runner samples with a seed of its own
    runners = {t.user_attrs["runner"] for t in complete}
    assert len(runners) == 2  # both did some of the work
    assert [t for t in study.trials if t.state != TrialState.COMPLETE] == [] or all(
        t.user_attrs.get("interrupted") for t in study.trials if t.state != TrialState.COMPLETE)
    assert study.user_attrs["status"] == "finished" and len(study.user_attrs["workers"]) == 1
    assert main(["show", "joined", "--json", "--storage", postgres_url]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["progress"]["complete"] == 8


@pytest.mark.slow
def test_resume_after_the_owner_died_leaves_a_live_workers_trials_alone(tmp_path: Path, postgres_url: str) -> None:
    write(tmp_path, script=str(SCRIPTS / "sized.py"), n_samples=4,
          runtime_args={"env": {"AUP_TEST_SLEEP": "0.2", "AUP_TEST_GATE": str(tmp_path / "go")}})
    owner = aup(tmp_path, postgres_url, "experiment.json", "--no-live")

    def running() -> list[Any]:
        try:
            study = optuna.load_study(study_name="joined", storage=postgres_url)
        except KeyError:
            return []
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if "runner" in t.user_attrs]

    wait_for(lambda: len(running()) == 1)
    worker = aup(tmp_path, postgres_url, "run", "experiment.json", "--join", "--no-live")  # the JSON way
    wait_for(lambda: len(running()) == 2)
    owner_trial = next(t for t in running() if t.user_attrs["runner"].endswith(f":{owner.pid}"))
    worker_trial = next(t for t in running() if t.user_attrs["runner"].endswith(f":{worker.pid}"))
    owner.kill()
    owner.communicate()
    resumed = aup(tmp_path, postgres_url, "resume", "joined", "--no-live")
    wait_for(lambda: optuna.load_study(study_name="joined", storage=postgres_url).trials[owner_trial.number].state
             == TrialState.FAIL)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=180) for p in (resumed, worker)]
    assert [p.returncode for p in (resumed, worker)] == [0, 0], outputs
    trials = optuna.load_study(study_name="joined", storage=postgres_url).trials
    assert trials[owner_trial.number].user_attrs["status_reason"] == "interrupted"
    assert trials[worker_trial.number].state == TrialState.COMPLETE  # the live worker's trial was its own
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.params["x"] for t in complete}) == 4
    assert [t.params for t in complete if t.user_attrs.get("requeued_from") == owner_trial.number] == [
        owner_trial.params]
    assert optuna.load_study(study_name="joined", storage=postgres_url).user_attrs["status"] == "finished"
