"""Fault injection: the runner killed at random moments, racing runners, hostile trials and names.

Every check is about what a user would lose or see: no configuration lost or run twice after any
number of SIGKILLs and resumes, one runner per study, a trial's bad output failing only that trial,
the runner's memory independent of trial output, and names that can neither collide nor escape
their folder. Runners run as real ``python -m aup`` processes where a kill or a race is the point.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from aup.runner.experiment import run_experiment
from aup.runner.state import PROCESS_KEY, PROCESS_KEY_ENV

ROOT = Path(__file__).resolve().parents[2]
KILLS_PER_PROPOSER = 5

TRIAL = """\
import os, sys, time, aup
config = aup.BasicConfig().load(sys.argv[1])
time.sleep(float(os.environ.get("AUP_TEST_SLEEP", "0.15")))
params = {k: v for k, v in config.items() if k not in ("tid", "n_iterations", "save_model", "folder_name")}
aup.print_result(sum(float(v) for v in params.values()) + len(os.environ.get("AUP_EXPERIMENT", "")))
"""


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "AUP_STORAGE"}
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(extra)
    return out


def folder_with_trial(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "trial.py").write_text(TRIAL)
    return path


def write_experiment(folder: Path, **overrides: Any) -> Path:
    exp: dict[str, Any] = {"name": "f", "script": "trial.py", "resource": "cpu", "proposer": "random",
                           "target": "max", "n_samples": 12, "n_parallel": 2, "random_seed": 3,
                           "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]},
                                                {"name": "y", "type": "float", "range": [0, 1]}]}
    exp.update(overrides)
    path = folder / "exp.json"
    path.write_text(json.dumps(exp))
    return path


def start(folder: Path, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "aup", *args, "--no-live"], cwd=folder, env=env(**extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def url(folder: Path) -> str:
    return f"sqlite:///{folder / '.aup' / 'aup.db'}"


def studies(folder: Path) -> list[str]:
    if not (folder / ".aup" / "aup.db").exists():
        return []
    return sorted(s.study_name for s in optuna.get_all_study_summaries(url(folder)))


def load(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url(folder))


def config_of(trial: optuna.trial.FrozenTrial) -> tuple[Any, ...]:
    return tuple(sorted(trial.params.items()))


def live_processes_with(keys: set[str]) -> list[int]:
    """Processes whose environment carries one of these trial process keys."""
    wanted = {f"{PROCESS_KEY_ENV}={key}".encode() for key in keys}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if wanted & set(handle.read().split(b"\0")):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def assert_complete_without_repeats(study: optuna.Study, expected: int) -> None:
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [config_of(t) for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == expected, (len(complete), expected)
    assert len(set(complete)) == len(complete), "a configuration completed twice"
    keys = {t.user_attrs[PROCESS_KEY] for t in trials if PROCESS_KEY in t.user_attrs}
    assert live_processes_with(keys) == [], "a trial process outlived its runner"


# ---- SIGKILL at random moments, then resume ----------------------------------------------------
KILL_CASES = {
    "grid": {"proposer": "sequence", "n_samples": None,
             "parameter_config": [{"name": "x", "type": "int", "range": [0, 3]},
                                  {"name": "y", "type": "choice", "range": [0.0, 0.5, 1.0]}]},
    "random": {"proposer": "random"},
    "tpe": {"proposer": "tpe", "n_startup_trials": 4},
}


def trials_started(folder: Path) -> int:
    return len(list((folder / "jobs").glob("*.out"))) if (folder / "jobs").is_dir() else 0


def kill_at_a_random_moment(process: subprocess.Popen[str], folder: Path, rng: random.Random,
                            during_start_up: bool = False) -> None:
    """SIGKILL the runner after 0-3 more trials have started plus up to 0.3 s (or while it starts up)."""
    if during_start_up:
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        target = trials_started(folder) + rng.randint(1, 3)
        deadline = time.time() + 60
        while trials_started(folder) < target and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    process.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(KILL_CASES))
def test_sigkill_at_random_moments_then_resume_loses_and_repeats_nothing(case: str, tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    overrides = {k: v for k, v in KILL_CASES[case].items() if v is not None}
    exp = write_experiment(folder, **overrides)
    if KILL_CASES[case].get("n_samples", 0) is None:
        raw = json.loads(exp.read_text())
        raw.pop("n_samples")
        exp.write_text(json.dumps(raw))
    rng = random.Random(f"kills-{case}")
    for kill in range(KILLS_PER_PROPOSER):
        names = studies(folder)
        process = start(folder, "resume", names[0]) if names else start(folder, "run", "exp.json")
        kill_at_a_random_moment(process, folder, rng, during_start_up=kill == 2)
    names = studies(folder)
    code, output = finish(start(folder, "resume", names[0]) if names else start(folder, "run", "exp.json"))
    assert code == 0, output
    assert studies(folder) == ["f"]
    study = load(folder, "f")
    assert study.user_attrs["status"] == "finished"
    assert_complete_without_repeats(study, 12)
    if case == "grid":
        assert {config_of(t) for t in study.trials if t.state == TrialState.COMPLETE} == {
            (("x", x), ("y", y)) for x in range(4) for y in (0.0, 0.5, 1.0)}


@pytest.mark.slow
def test_a_runner_killed_just_after_starting_a_trial_leaves_no_orphan(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    write_experiment(folder, n_samples=2, n_parallel=1)
    process = start(folder, "run", "exp.json", AUP_TEST_SLEEP="60")
    wait_for(lambda: list((folder / "jobs").glob("f-0.out")) if (folder / "jobs").is_dir() else False)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    trial = load(folder, "f").trials[0]
    orphans = live_processes_with({trial.user_attrs[PROCESS_KEY]})
    assert orphans, "the trial should still be running after its runner was killed"
    code, output = finish(start(folder, "resume", "f", AUP_TEST_SLEEP="0.05"))
    assert code == 0, output
    assert live_processes_with({trial.user_attrs[PROCESS_KEY]}) == []
    assert_complete_without_repeats(load(folder, "f"), 2)


# ---- racing runners ------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_concurrent_resumes_run_the_study_once(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    write_experiment(folder, proposer="sequence", n_samples=None, parameter_config=[
        {"name": "x", "type": "int", "range": [0, 9]}])
    raw = json.loads((folder / "exp.json").read_text())
    raw.pop("n_samples")
    (folder / "exp.json").write_text(json.dumps(raw))
    first = start(folder, "run", "exp.json", AUP_TEST_SLEEP="0.3")
    wait_for(lambda: (folder / "jobs" / "f-1.out").exists())
    first.send_signal(signal.SIGKILL)
    first.communicate()
    racers = [start(folder, "resume", "f", AUP_TEST_SLEEP="0.3") for _ in range(2)]
    results = [finish(racer) for racer in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(output for code, output in results if code == 2)
    assert "already running" in loser or "already finished" in loser
    assert len(loser.strip().splitlines()) == 1
    assert_complete_without_repeats(load(folder, "f"), 10)


@pytest.mark.slow
def test_two_fresh_runs_at_once_on_a_new_store_become_name_and_name_2(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    write_experiment(folder, n_samples=3)
    racers = [start(folder, "run", "exp.json", AUP_TEST_SLEEP="0.05") for _ in range(2)]
    results = [finish(racer) for racer in racers]
    assert [code for code, _ in results] == [0, 0], results
    assert studies(folder) == ["f", "f (2)"]
    for name in ("f", "f (2)"):
        assert_complete_without_repeats(load(folder, name), 3)
    assert (folder / ".aup").stat().st_mode & 0o777 == 0o700
    assert (folder / ".aup" / "aup.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_names_that_reduce_to_one_file_prefix_keep_their_own_results(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    runs = []
    for name in ("exp a", "exp_a"):
        sub = folder / name.replace(" ", "-")
        sub.mkdir()
        (sub / "exp.json").write_text(json.dumps({
            "name": name, "script": "trial.py", "workingdir": str(folder), "resource": "cpu", "proposer": "random",
            "target": "max", "n_samples": 6, "n_parallel": 2,
            "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}]}))
        runs.append(start(folder, "run", str(sub / "exp.json"), AUP_TEST_SLEEP="0.1"))
    assert [finish(run)[0] for run in runs] == [0, 0]
    logs = set()
    for name in ("exp a", "exp_a"):
        study = load(folder, name)
        for trial in study.trials:
            assert trial.state == TrialState.COMPLETE
            assert trial.value == pytest.approx(trial.params["x"] + len(name))  # its own result, not the other's
            logs.add(trial.user_attrs["log_path"])
    assert len(logs) == 12


# ---- hostile trials ------------------------------------------------------------------------------
POISON = """\
import json, os, sys, aup
mode = aup.BasicConfig().load(sys.argv[1])["mode"]
records = {
    "no value": ['{"kind": "result"}'],
    "text value": ['{"kind": "result", "value": "abc"}'],
    "empty list": ['{"kind": "result", "value": []}'],
    "metrics list": ['{"kind": "metrics", "metrics": [1, 2]}', '{"kind": "result", "value": 1}'],
    "huge line": ['{"kind": "result", "value": ' + "1" * (2 << 20) + '}'],
    "torn line then good": ['{"kind": "res', '{"kind": "result", "value": 0.5}'],
}
if mode == "print_result([])":
    aup.print_result([])
with open(os.environ["AUP_CHANNEL"], "a") as channel:
    for line in records[mode]:
        channel.write(line + "\\n")
"""


def run_in_process(folder: Path, exp: dict[str, Any]) -> tuple[Any, optuna.Study]:
    path = folder / "exp.json"
    path.write_text(json.dumps(exp))
    storage = f"sqlite:///{folder / 'aup.db'}"
    result = run_experiment(str(path), storage, console=Console(file=io.StringIO(), width=200), live=False)
    return result, optuna.load_study(study_name=result.study_name, storage=storage)


@pytest.mark.slow
def test_poison_channel_records_fail_their_trial_never_the_runner(tmp_path: Path) -> None:
    (tmp_path / "poison.py").write_text(POISON)
    modes = ["no value", "text value", "empty list", "metrics list", "huge line", "torn line then good",
             "print_result([])"]
    exp = {"name": "poison", "script": "poison.py", "workingdir": str(tmp_path), "resource": "cpu",
           "proposer": "sequence", "target": "max", "n_parallel": 2,
           "job_failure": {"ignore_fail": True, "job_retries": 0},
           "parameter_config": [{"name": "mode", "type": "choice", "range": modes}]}
    result, study = run_in_process(tmp_path, exp)
    assert result.exit_code == 0
    by_mode = {t.params["mode"]: t for t in study.trials}
    assert by_mode["torn line then good"].state == TrialState.COMPLETE and by_mode["torn line then good"].value == 0.5
    for mode in modes[:5]:
        trial = by_mode[mode]
        assert trial.state == TrialState.FAIL, mode
        assert trial.user_attrs["status_reason"].startswith("bad channel record: "), trial.user_attrs["status_reason"]
    assert by_mode["print_result([])"].state == TrialState.FAIL
    assert "empty list" in by_mode["print_result([])"].user_attrs["status_reason"]
    # without ignore_fail the experiment stops as failed, cleanly, and a resume goes on the same way
    exp.update(name="poison2", job_failure={"ignore_fail": False, "job_retries": 0})
    result, _ = run_in_process(tmp_path, exp)
    assert result.exit_code == 1 and "bad channel record" in (result.reason or "")


HUGE = """\
import os, sys, aup
block = b"x" * 1023 + b"\\n"
for _ in range(int(os.environ["AUP_TEST_MB"]) * 1024):
    os.write(1, block)
os.write(1, b"THE END\\n")
aup.print_result(1.0)
"""

MEASURE = """\
import resource, sys
from aup.cli import main
code = main(sys.argv[1:])
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)
"""


def runner_peak_kb(folder: Path, megabytes: int, name: str) -> int:
    write_experiment(folder, name=name, script="huge.py", n_samples=1, n_parallel=1,
                     runtime_args={"env": {"AUP_TEST_MB": str(megabytes)}, "log_limit_mb": 5})
    output = subprocess.run([sys.executable, str(folder / "measure.py"), "run", "exp.json", "--no-live"], cwd=folder,
                            env=env(), capture_output=True, text=True, timeout=300).stdout
    line = next(line for line in output.splitlines() if line.startswith("MAXRSS"))
    _, peak, code = line.split()
    assert code == "0", output
    return int(peak)


@pytest.mark.slow
def test_runner_memory_does_not_follow_trial_output_and_logs_are_capped(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    (folder / "huge.py").write_text(HUGE)
    (folder / "measure.py").write_text(MEASURE)
    small = runner_peak_kb(folder, 1, "small")
    huge = runner_peak_kb(folder, 300, "huge")
    assert huge < small + 40 * 1024, (small, huge)  # kilobytes: 300 MB of output costs the runner < 40 MB
    log = folder / "jobs" / "huge-0.out"
    size = log.stat().st_size
    assert 5 * 1024 * 1024 <= size <= 5 * 1024 * 1024 + 16 * 1024
    assert log.stat().st_blocks * 512 <= size + 1024 * 1024  # no holes left behind
    with open(log, "rb") as handle:
        handle.seek(5 * 1024 * 1024)
        rest = handle.read()
    assert rest.startswith(b"\n[aup: the output passed 5 MB; it is cut here")
    assert rest.endswith(b"THE END\n\n#Auptimizer:1.0\n")  # the end of the output is kept
    trial = load(folder, "huge").trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == 1.0


@pytest.mark.slow
def test_pruned_job_files_leave_the_record(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    exp = json.loads(write_experiment(folder, n_samples=3).read_text())
    exp.update(workingdir=str(folder), runtime_args={"prune_job_files": True, "env": {"AUP_TEST_SLEEP": "0"}})
    result, study = run_in_process(folder, exp)
    assert result.exit_code == 0
    assert list((folder / "jobs").iterdir()) == []
    assert all(t.user_attrs["job_config"] for t in study.trials)


# ---- names and files -----------------------------------------------------------------------------
SAVER = """\
import sys, aup
def save():
    open("model.txt", "w").write("saved")
@aup.aup_args
def main(x):
    aup.aup_save_model(save)
    return x
main(sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["..", "../../outside", "/tmp/abs", "a/../../b", "[bold]x[/]", "."])
def test_names_cannot_leave_the_folder_or_delete_anything(name: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    folder = tmp_path / "work" / "deeper"
    folder.mkdir(parents=True)
    (folder / "saver.py").write_text(SAVER)
    exp = {"name": name, "script": "saver.py", "workingdir": str(folder), "resource": "cpu", "proposer": "random",
           "target": "max", "n_samples": 2, "resource_args": {"save_model": True},
           "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}]}
    result, _ = run_in_process(folder, exp)
    assert result.exit_code == 0
    assert (outside / "keep.txt").read_text() == "keep" and (folder / "saver.py").exists()
    kept = Path(result.best_model_path)
    assert kept.parent == folder / "aup_models" and (kept / "model.txt").read_text() == "saved"
    assert [p.name for p in (folder / "aup_models").iterdir()] == [kept.name]
    for path in folder.rglob("*"):
        assert path.resolve().is_relative_to(folder.resolve())


def test_a_pickled_config_is_not_loaded_unless_trusted(tmp_path: Path) -> None:
    import aup

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    path = tmp_path / "config.pkl"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        aup.BasicConfig().load(str(path))
    assert not marker.exists()


# ---- the database ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_lock_held_past_the_busy_timeout_is_waited_out(tmp_path: Path) -> None:
    folder = folder_with_trial(tmp_path)
    write_experiment(folder, n_samples=6, n_parallel=1)
    process = start(folder, "run", "exp.json", AUP_SQLITE_BUSY_TIMEOUT="0.2", AUP_TEST_SLEEP="0.2")
    wait_for(lambda: (folder / "jobs" / "f-1.out").exists())
    holder = sqlite3.connect(folder / ".aup" / "aup.db", timeout=30)
    holder.execute("BEGIN EXCLUSIVE")
    assert process.stderr is not None
    first = process.stderr.readline()  # the runner meets the lock, outlives its busy timeout and says so
    time.sleep(1.0)  # five more busy timeouts
    holder.rollback()
    holder.close()
    code, output = finish(process)
    assert "aup: the results database is locked by another program; waiting" in first, first + output
    assert code == 0, output
    assert_complete_without_repeats(load(folder, "f"), 6)


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_lease_is_exclusive_renewable_and_taken_over_when_stale(tmp_path: Path) -> None:
    from aup import store
    from aup.runner.lease import Lease

    storage = store.open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    first, second = Lease(storage, "runner:x", ttl=0.5), Lease(storage, "runner:x", ttl=0.5)
    assert first.acquire() and not second.acquire()
    assert first.renew() and second.holder().owner == first.owner
    time.sleep(0.7)  # first stops renewing: its lease expires; same pid, so only expiry frees it
    assert second.acquire()
    assert not first.renew() and not first.held
    second.release()
    assert second.holder() is None and first.acquire()


# ---- the building blocks, without an experiment ----------------------------------------------------
def test_slugs_are_safe_and_distinct_for_distinct_names() -> None:
    from aup import store

    names = ["exp", "exp a", "exp_a", "Exp", "exp (2)", "exp_2", "..", ".", "../../x", "/tmp/x", "a/b", "a_b",
             "x" * 500, "x" * 501, "[bold]", "\x1b[2J", "ünï", "exp-2"]
    slugs = [store.slug(name) for name in names]
    assert len(set(slugs)) == len(names)
    assert len({s.lower() for s in slugs}) == len(names)  # case-insensitive file systems too
    assert all(store.is_safe_file_name(s) and len(s) <= store.SLUG_MAX for s in slugs)
    assert store.slug("exp") == "exp" and store.slug("digits-2") == "digits-2"


def test_channel_records_are_checked_before_use() -> None:
    from aup.channel import record_problem

    assert record_problem({"kind": "result", "value": 0.5}) is None
    assert record_problem({"kind": "result", "value": [0.5, 3]}) is None
    assert record_problem({"kind": "metrics", "metrics": {"a": [1]}}) is None
    assert record_problem({"kind": "later kind"}) is None
    for bad in ({"kind": "result"}, {"kind": "result", "value": []}, {"kind": "result", "value": True},
                {"kind": "result", "value": [1, "2"]}, {"kind": "metrics", "metrics": [1]}, {"kind": "metrics"}):
        assert record_problem(bad), bad


def test_a_trial_log_is_cut_at_its_limit_with_a_note_and_its_end(tmp_path: Path) -> None:
    from aup.runner.launcher import TrialProcess

    script = tmp_path / "loud.py"
    script.write_text("import os\nfor i in range(3000):\n    os.write(1, b'%05d' % i + b'.' * 1018 + b'\\n')\n"
                      "print('#Auptimizer:0.25')\n")
    process = TrialProcess(command=[sys.executable, str(script)], workingdir=tmp_path, env=dict(os.environ),
                           log_path=tmp_path / "t.out", channel_path=tmp_path / "t.jsonl", log_limit=64 * 1024)
    process.start()
    while process.poll() is None:
        process.new_results()
        time.sleep(0.005)
    outcome = process.outcome()
    data = (tmp_path / "t.out").read_bytes()
    assert outcome.reason is None and outcome.final == 0.25  # the result printed after the cut still counts
    assert data[:5] == b"00000" and len(data) <= 64 * 1024 + 9 * 1024
    note = data.index(b"[aup: the output passed 0.0625 MB; it is cut here")
    assert note >= 64 * 1024 - 1 and data.endswith(b"#Auptimizer:0.25\n") and b"02999" in data[note:]
