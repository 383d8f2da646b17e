"""The command line: ``python -m aup`` / ``aup run`` / ``aup resume`` as a user runs them (subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from aup.cli import main

SCRIPTS = Path(__file__).parent / "scripts"


def write_experiment(tmp_path: Path, **overrides: Any) -> Path:
    exp: dict[str, Any] = {
        "name": "cli",
        "script": str(SCRIPTS / "objective.py"),
        "resource": "cpu",
        "proposer": "random",
        "target": "max",
        "n_samples": 2,
        "n_parallel": 2,
        "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}],
    }
    exp.update(overrides)
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


def aup(tmp_path: Path, *args: str, **popen: Any) -> subprocess.Popen:
    env = {**os.environ, "AUP_STORAGE": f"sqlite:///{tmp_path / 'aup.db'}"}
    return subprocess.Popen([sys.executable, "-m", "aup", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def load(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'aup.db'}")


def test_python_m_aup_runs_an_experiment(tmp_path: Path) -> None:
    write_experiment(tmp_path)
    code, out, err = finish(aup(tmp_path, "experiment.json"))
    assert code == 0, err
    assert "cli: finished (2 trials of 2 planned: 2 complete)" in out and "aup show cli" in out
    assert [t.state for t in load(tmp_path, "cli").trials] == [TrialState.COMPLETE] * 2


def test_config_errors_exit_2_one_line_each_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_experiment(tmp_path, n_sample=3, n_parallel=0, script="missing.py",
                            parameter_config=[{"name": "x", "type": "float", "range": [1, 0]}])
    os.environ["AUP_STORAGE"] = f"sqlite:///{tmp_path / 'aup.db'}"
    try:
        code = main([str(path)])
    finally:
        del os.environ["AUP_STORAGE"]
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert all(line.startswith(f"aup: error: {path}: ") for line in err)
    text = "\n".join(err)
    assert "n_sample: unknown key (did you mean 'n_samples'?)" in text
    assert "n_parallel: input should be greater than or equal to 1, got 0" in text
    assert "parameter_config[0].range: the range [1, 0] is empty" in text
    assert "script: " in text and "missing.py does not exist" in text
    assert "Traceback" not in text
    assert not (tmp_path / "aup.db").exists() and not (tmp_path / "jobs").exists()


def test_invalid_experiment_creates_no_default_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUP_STORAGE", raising=False)
    path = write_experiment(tmp_path, resource_args={"early_stop": {"aup_policy": "median"}})
    assert main([str(path)]) == 2
    assert "resource_args.early_stop.aup_policy_steps: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / ".aup").exists()


def test_node_resource_points_to_ray(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_experiment(tmp_path, resource="node")
    assert main([str(path), "--storage", f"sqlite:///{tmp_path / 'aup.db'}"]) == 2
    err = capsys.readouterr().err
    assert "resource: 'node' (SSH nodes) is not supported" in err and "Ray" in err


def test_resume_unknown_name_lists_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_experiment(tmp_path, n_samples=1)
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    assert main(["run", str(path), "--storage", url, "--no-live"]) == 0
    capsys.readouterr()
    assert main(["resume", "nope", "--storage", url]) == 2
    assert capsys.readouterr().err.strip() == "aup: error: no experiment named 'nope' in the storage (known: 'cli')"
    assert main(["resume", "cli", "--storage", url]) == 2
    assert "already finished" in capsys.readouterr().err


def test_cli_does_not_import_torch() -> None:
    code = ("import sys, aup.cli, aup.config, aup.store, aup.runner.experiment; aup.cli.build_parser();"
            "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _running_children(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "jobs").glob("*.json.child")) if (tmp_path / "jobs").is_dir() else []


@pytest.mark.slow
def test_ctrl_c_interrupts_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    # every trial sleeps 60 s, so two are running at the Ctrl-C
    write_experiment(tmp_path, script=str(SCRIPTS / "sleepy.py"), n_samples=4, n_parallel=2,
                     parameter_config=[{"name": "sleep", "type": "choice", "range": [60]}])
    process = aup(tmp_path, "experiment.json")
    _wait_for(lambda: len(_running_children(tmp_path)) == 2)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process, timeout=30)
    assert code == 130, err
    assert "aup resume cli" in out
    study = load(tmp_path, "cli")
    assert study.user_attrs["status"] == "interrupted"
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2
    assert all(t.user_attrs["status_reason"] == "interrupted" for t in interrupted)
    for marker in _running_children(tmp_path):  # the trials' own children were terminated too
        assert not Path(f"/proc/{int(marker.read_text())}").exists() or _zombie(int(marker.read_text()))
    (tmp_path / "fast").touch()  # sleepy.py: resumed trials finish at once
    code, out, err = finish(aup(tmp_path, "resume", "cli"))
    assert code == 0, err
    study = load(tmp_path, "cli")
    assert study.user_attrs["status"] == "finished"
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 4


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # trials 0 and 1 finish, later ones wait for the gate: the kill finds "2 done, some running" for sure
    gate = tmp_path / "go"
    write_experiment(tmp_path, n_samples=6, n_parallel=2,
                     runtime_args={"env": {"AUP_TEST_GATE": str(gate), "AUP_TEST_GATE_FROM": "2"}})
    process = aup(tmp_path, "experiment.json", "--no-live")

    def some_done_some_running() -> bool:
        try:
            study = load(tmp_path, "cli")
        except KeyError:
            return False
        states = [t.state for t in study.get_trials(deepcopy=False)]
        return states.count(TrialState.COMPLETE) >= 2 and states.count(TrialState.RUNNING) >= 1

    _wait_for(some_done_some_running)
    process.kill()
    process.communicate()
    before = load(tmp_path, "cli")
    done_before = {t.number: t.params for t in before.trials if t.state == TrialState.COMPLETE}
    running_before = {t.number: t.params for t in before.trials if t.state == TrialState.RUNNING}
    assert running_before
    gate.touch()
    code, out, err = finish(aup(tmp_path, "experiment.json", "--resume"))
    assert code == 0, err
    study = load(tmp_path, "cli")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6  # n_samples counts finished trials only
    for number, params in done_before.items():  # finished trials are kept as they were
        assert study.trials[number].state == TrialState.COMPLETE and study.trials[number].params == params
    for number, params in running_before.items():  # interrupted ones are marked and re-run with their params
        assert study.trials[number].state == TrialState.FAIL
        assert study.trials[number].user_attrs["status_reason"] == "interrupted"
        reruns = [t for t in complete if t.user_attrs.get("requeued_from") == number]
        assert len(reruns) == 1 and reruns[0].params == params


@pytest.mark.slow
def test_grid_resume_after_sigkill_runs_each_point_once(tmp_path: Path) -> None:
    gate = tmp_path / "go"  # trial 0 finishes, later ones wait for it: "one done, one running" is reached for sure
    write_experiment(tmp_path, proposer="sequence", n_parallel=2,
                     runtime_args={"env": {"AUP_TEST_GATE": str(gate), "AUP_TEST_GATE_FROM": "1"}},
                     parameter_config=[{"name": "x", "type": "int", "range": [1, 5]}])
    process = aup(tmp_path, "experiment.json", "--no-live")

    def one_done_one_running() -> bool:
        try:
            states = [t.state for t in load(tmp_path, "cli").get_trials(deepcopy=False)]
        except KeyError:
            return False
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    _wait_for(one_done_one_running)
    process.kill()
    process.communicate()
    gate.touch()
    code, _, err = finish(aup(tmp_path, "resume", "cli", "--no-live"))
    assert code == 0, err
    trials = load(tmp_path, "cli").trials
    done = sorted(t.params["x"] for t in trials if t.state == TrialState.COMPLETE)
    assert done == [1, 2, 3, 4, 5]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # the trials cut short, plus possibly a queued-but-never-started one if the kill fell between the
    # proposer's enqueue and ask: all marked interrupted, none counted as a result
    assert failed and all(t.user_attrs.get("interrupted") for t in failed)
    assert any(t.user_attrs.get("status_reason") == "interrupted" and t.params for t in failed)


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_quick_exit_keeps_output_exit_code_and_the_store_intact(tmp_path: Path) -> None:
    """``python -m aup`` ends with os._exit after main: every line still arrives, the exit code is
    main's, no SQLite WAL file is left behind and the results are all in the store."""
    write_experiment(tmp_path, n_samples=3)
    code, out, err = finish(aup(tmp_path, "experiment.json", "--no-live"))
    assert code == 0, err
    assert out.rstrip().endswith("(see: aup show cli)")
    assert not (tmp_path / "aup.db-wal").exists() or (tmp_path / "aup.db-wal").stat().st_size == 0
    assert len(load(tmp_path, "cli").trials) == 3
    code, _, err = finish(aup(tmp_path, "show", "no-such-experiment"))
    assert code == 2 and err.startswith("aup: error:")


def test_under_a_profiler_aup_exits_normally(tmp_path: Path) -> None:
    """``python -m cProfile -o FILE -m aup ...`` writes its file after the program returns."""
    env = {**os.environ, "AUP_STORAGE": f"sqlite:///{tmp_path / 'aup.db'}"}
    result = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "run.prof"), "-m", "aup", "list"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run.prof").stat().st_size > 0


@pytest.mark.slow
def test_multi_objective_early_stop_resumes_mid_rung_from_the_store(tmp_path: Path) -> None:
    # the first trial (x = 3, the best) is interrupted after its first rung; on resume its rerun
    # meets that rung again, and the interrupted record is not counted twice when x = 2 is judged
    write_experiment(tmp_path, script=str(SCRIPTS / "mo_steps.py"), proposer="sequence", n_parallel=1,
                     target={"score": "max", "model_bytes": "min"},
                     parameter_config=[{"name": "x", "type": "choice", "range": [3, 2]}],
                     runtime_args={"env": {"AUP_TEST_STEPS": "4", "AUP_TEST_SLEEP": "1.0"}},
                     resource_args={"early_stop": {"aup_policy": "successive_halving", "aup_policy_steps": 1,
                                                   "reduction_factor": 2, "max_steps": 4}})
    process = aup(tmp_path, "experiment.json")

    def first_at_rung() -> bool:
        try:
            trials = load(tmp_path, "cli").trials
        except Exception:  # noqa: BLE001 - the study may not exist yet
            return False
        return bool(trials) and "1" in (trials[0].user_attrs.get("rung_values") or {}) \
            and trials[0].state == TrialState.RUNNING

    _wait_for(first_at_rung)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process, timeout=60)
    assert code == 130, err
    interrupted = load(tmp_path, "cli").trials[0]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["rung_values"]["1"][0] == 0.75
    code, out, err = finish(aup(tmp_path, "resume", "cli"))
    assert code == 0, err
    trials = load(tmp_path, "cli").trials
    by_x = {t.params["x"]: t for t in trials if t.state != TrialState.FAIL}
    assert by_x[3].state == TrialState.COMPLETE
    assert by_x[2].state == TrialState.PRUNED
    assert "1 of the 2 trials at this rung rank better" in by_x[2].user_attrs["status_reason"]
