"""``"resource": "ray"``: every trial attempt a Ray task on a real local cluster (one per session).

Runners in subprocesses join the session's cluster by address; the end-to-end tests store results in
a real PostgreSQL server. Both servers are started by ``tests/fixtures_servers.py`` and the tests
are skipped, with the reason in the summary, where one cannot start.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest
from optuna.trial import TrialState
from resume_checks import assert_resumed_after_kill

from aup.cli import main
from aup.runner import ray_launcher
from aup.runner.experiment import run_experiment

SCRIPTS = Path(__file__).parent.parent / "scripts"


def write(folder: Path, **overrides: Any) -> Path:
    exp: dict[str, Any] = {
        "name": "ray-exp", "script": str(SCRIPTS / "objective.py"), "resource": "ray", "proposer": "random",
        "target": "max", "n_samples": 4, "n_parallel": 2, "random_seed": 1, "workingdir": str(folder),
        "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}],
    }
    exp.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def aup(folder: Path, url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aup", *args], cwd=folder, env={**os.environ, "AUP_STORAGE": url},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---- validation and the node side, without a cluster --------------------------------------------
def test_ray_resource_is_accepted_and_its_keys_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aup.config import load_experiment

    loaded = load_experiment(str(write(tmp_path, resource_args={"address": "10.0.0.1:6379", "num_cpus": 0.5})))
    assert loaded.experiment.resource == "ray" and loaded.experiment.resource_args.num_cpus == 0.5
    path = write(tmp_path / "cpu", resource="cpu", resource_args={"address": "x:1"})
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 'a.db'}"]) == 2
    assert 'resource_args.address: only used with "resource": "ray"' in capsys.readouterr().err
    path = write(tmp_path / "neg", resource_args={"num_gpus": -1})
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 'a.db'}"]) == 2
    assert "resource_args.num_gpus" in capsys.readouterr().err
    assert not (tmp_path / "a.db").exists()


def test_node_side_without_shared_storage_sends_output_and_saved_model_back(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The task body run directly: the job file is not where the runner wrote it (another machine)."""
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    script = node_dir / "train.py"
    script.write_text("import os, sys, json\nimport aup\ncfg = aup.BasicConfig().load(sys.argv[1])\n"
                      "os.makedirs('aup_models/t-0', exist_ok=True)\n"
                      "open('aup_models/t-0/model.txt', 'w').write('weights')\n"
                      "print('hello from the node')\naup.print_result(cfg['x'])\n")
    monkeypatch.chdir(node_dir)
    job = {"x": 0.25, "tid": 0}
    spec = {"command": ["/not/the/runner/python", "/runner/only/train.py"], "python": True,
            "script_rel": "train.py", "job_path": str(tmp_path / "runner" / "jobs" / "t-0.json"),
            "job_text": json.dumps(job), "workingdir": str(tmp_path / "runner"),
            "env": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}, "return_dirs": ["aup_models/t-0"]}
    items = list(ray_launcher.run_on_node(spec))
    log = b"".join(i.get("log", b"") for i in items)
    channel = b"".join(i.get("channel", b"") for i in items)
    assert b"hello from the node" in log and b'"result"' in channel
    assert items[-1]["exit"] == 0 and items[-1]["files"]
    ray_launcher._unpack(items[-1]["files"], tmp_path / "runner")
    assert (tmp_path / "runner" / "aup_models" / "t-0" / "model.txt").read_text() == "weights"


# ---- on the session's cluster --------------------------------------------------------------------
@pytest.mark.slow
def test_trials_run_as_ray_tasks_with_results_metrics_and_logs(tmp_path: Path, ray_cluster: Any) -> None:
    path = write(tmp_path, runtime_args={"env": {"AUP_TEST_STEPS": "3", "AUP_TEST_ENV": "shipped"}},
                 resource_args={"track_intermediate_results": True, "save_model": False})
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    result = run_experiment(str(path), url, live=False)
    assert result.exit_code == 0
    trials = optuna.load_study(study_name="ray-exp", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        assert trial.value == pytest.approx(trial.params["x"])
        assert trial.user_attrs["accuracy"] == pytest.approx(trial.params["x"] / 10)
        assert trial.user_attrs["test_env"] == "shipped" and trial.user_attrs["trial_env"] == str(trial.number)
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]  # three steps, then the returned value
        assert Path(trial.user_attrs["log_path"]).exists()
        assert trial.user_attrs["attempts"][0]["exit_code"] == 0


@pytest.mark.slow
def test_dead_ray_worker_fails_the_attempt_with_the_reason_and_it_is_retried(tmp_path: Path,
                                                                             ray_cluster: Any) -> None:
    path = write(tmp_path, script=str(SCRIPTS / "ray_victim.py"), n_samples=1, n_parallel=1,
                 job_failure={"job_retries": 1})
    killed: list[int] = []

    def kill_the_worker() -> None:
        wait_for(lambda: any((tmp_path / "jobs").glob("*.worker")) if (tmp_path / "jobs").is_dir() else False)
        marker = next((tmp_path / "jobs").glob("*.worker"))
        pid = int(marker.read_text())
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    result = run_experiment(str(path), url, live=False)
    killer.join(5)
    assert killed and result.exit_code == 0
    [trial] = optuna.load_study(study_name="ray-exp", storage=url).trials
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(trial.params["x"])
    first, second = trial.user_attrs["attempts"]
    assert first["reason"] == "the Ray worker running the trial died"
    assert first["exit_code"] is None and second["reason"] is None
    import tempfile

    leftovers = list(Path(tempfile.gettempdir()).glob(f"{ray_launcher.SCRATCH_PREFIX}{killed[0]}-*"))
    assert leftovers == []  # cleared by its attempt guard when the worker died (else the retry task)
    [sleeper] = [int(p.read_text()) for p in (tmp_path / "jobs").glob("*.sleep")]
    wait_for(lambda: not _alive(sleeper), timeout=60)  # the script's own child died with the worker too
    assert live_processes_with(trial.user_attrs["process_key"]) == []


@pytest.mark.slow
def test_ray_and_postgres_end_to_end_sigkill_and_resume(tmp_path: Path, ray_cluster: Any, postgres_url: str) -> None:
    # trial 0 finishes, later ones wait for the gate: "one done, one running" is reached for sure
    write(tmp_path, n_samples=6, runtime_args={"env": {"AUP_TEST_GATE": str(tmp_path / "go"), "AUP_TEST_GATE_FROM": "1"}},
          resource_args={"address": ray_cluster.address})
    process = aup(tmp_path, postgres_url, "experiment.json", "--no-live")

    def states() -> list[TrialState]:
        try:
            return [t.state for t in optuna.load_study(study_name="ray-exp", storage=postgres_url).trials]
        except KeyError:
            return []

    wait_for(lambda: states().count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states())
    process.kill()
    process.communicate()
    before = optuna.load_study(study_name="ray-exp", storage=postgres_url).trials
    (tmp_path / "go").touch()
    resumed = aup(tmp_path, postgres_url, "resume", "ray-exp", "--no-live")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err
    after = optuna.load_study(study_name="ray-exp", storage=postgres_url).trials
    assert_resumed_after_kill(before, after, 6)
    for trial in after:  # the killed runner's attempts were ended on the node
        assert live_processes_with(trial.user_attrs.get("process_key", "-")) == []


@pytest.mark.slow
def test_ctrl_c_cancels_the_ray_tasks(tmp_path: Path, ray_cluster: Any) -> None:
    write(tmp_path, script=str(SCRIPTS / "sleepy.py"), n_samples=2, resource_args={"address": ray_cluster.address},
          parameter_config=[{"name": "sleep", "type": "choice", "range": [120]}])
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    process = aup(tmp_path, url, "experiment.json", "--no-live")
    jobs = tmp_path / "jobs"
    wait_for(lambda: jobs.is_dir() and len(list(jobs.glob("*.json.child"))) == 2)
    children = [int(p.read_text()) for p in jobs.glob("*.json.child")]
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    trials = optuna.load_study(study_name="ray-exp", storage=url).trials
    stopped = [t for t in trials if t.state == TrialState.FAIL]  # (plus their queued re-runs, WAITING)
    assert [t.user_attrs["status_reason"] for t in stopped] == ["interrupted", "interrupted"]
    wait_for(lambda: not any(_alive(pid) for pid in children), timeout=30)  # the scripts' children too
    import ray

    wait_for(lambda: ray.available_resources().get("CPU") == 2, timeout=30)  # the tasks released their CPUs


@pytest.mark.slow
def test_resume_ends_leftover_attempts_on_every_node(ray_cluster: Any) -> None:
    """What ``aup resume`` runs for ``"resource": "ray"``: a task on each live node ends the processes
    of the interrupted attempts (by their process key), wherever their group or session."""
    import uuid

    key = uuid.uuid4().hex
    leftover = subprocess.Popen(["sleep", "124"], env={**os.environ, "AUP_PROCESS_KEY": key}, start_new_session=True)
    try:
        ray_launcher.connect(ray_cluster.address, local_cpus=1)
        assert ray_launcher.end_leftovers([key]) == 1
        assert leftover.wait(30) == -signal.SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()


def live_processes_with(key: str) -> list[int]:
    """Live (not zombie) processes whose environment holds this trial process key."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if f"AUP_PROCESS_KEY={key}".encode() in handle.read().split(b"\0") and _alive(int(entry.name)):
                    found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_node_side_reports_a_script_it_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = {"command": [str(tmp_path / "missing-program")], "python": False, "script_rel": None,
            "job_path": str(tmp_path / "elsewhere" / "t-0.json"), "job_text": "{}", "workingdir": str(tmp_path),
            "env": {}, "return_dirs": []}
    [item] = list(ray_launcher.run_on_node(spec))
    assert item["exit"] == 127 and b"cannot start" in item["log"] and b"missing-program" in item["log"]



# ---- a local cluster started by aup itself -------------------------------------------------------
@pytest.mark.slow
def test_local_cluster_started_by_aup_writes_nothing_to_home(tmp_path: Path) -> None:
    """No address and no Ray auth settings: aup's own guard starts a token-auth local cluster."""
    import shutil
    import tempfile

    home = tmp_path / "home"
    home.mkdir()
    path = write(tmp_path / "exp", n_samples=1, n_parallel=1)
    scratch = tempfile.mkdtemp(prefix="aupray")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), TMPDIR=scratch, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    try:
        done = subprocess.run([sys.executable, "-m", "aup", "run", str(path), "--storage",
                               f"sqlite:///{tmp_path / 'aup.db'}"], cwd=tmp_path / "exp", env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = optuna.load_study(study_name="ray-exp", storage=f"sqlite:///{tmp_path / 'aup.db'}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    assert not (home / ".ray").exists()
