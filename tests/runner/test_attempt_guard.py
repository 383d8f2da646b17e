"""The attempt guard: a trial attempt's whole session ends when the process that started it dies.

The "worker" here is a plain Python process standing in for a Ray worker (the Ray end-to-end case is
in ``test_ray.py``): it starts the guarded command the way ``ray_node`` does and is then SIGKILLed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from aup.runner import ray_node

ROOT = Path(__file__).resolve().parents[2]
SPAWNER = """\
import os, subprocess, sys, time
children = [subprocess.Popen(["sleep", "124"])]
if os.environ.get("ESCAPE"):  # a child that leaves the process group and session
    children.append(subprocess.Popen(["sleep", "124"], start_new_session=True))
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(" ".join(str(c.pid) for c in children))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""
WORKER = """\
import subprocess, sys, time
from aup.runner import ray_node
guard = subprocess.Popen(ray_node.guarded(sys.argv[1:]), start_new_session=True)
print(guard.pid, flush=True)
time.sleep(300)
"""


def wait_for(condition: Callable[[], Any], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("escape, guard_too", [(False, False), (True, False), (True, True)])
def test_sigkill_of_the_worker_ends_the_script_and_everything_it_started(escape: bool, guard_too: bool,
                                                                         tmp_path: Path) -> None:
    """``guard_too``: the guard is killed with the worker, as Ray kills a dead worker's children."""
    (tmp_path / "spawner.py").write_text(SPAWNER)
    pids_file = tmp_path / "pids"
    key = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUP_PROCESS_KEY": key, "ESCAPE": "1" if escape else ""}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, sys.executable, str(tmp_path / "spawner.py"),
                               str(pids_file)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        guard = int(worker.stdout.readline())
        wait_for(pids_file.exists)
        sleepers = [int(p) for p in pids_file.read_text().split()]
        assert all(alive(pid) for pid in sleepers)
        if guard_too:
            os.kill(guard, signal.SIGKILL)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not any(alive(pid) for pid in sleepers))  # the guard ended them all
    finally:
        for pid in [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_guard_passes_the_exit_status_on(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(ray_node.guarded([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"]),
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stdout == "out\n"
    killed = subprocess.run(ray_node.guarded([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]),
                            env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL  # reported as "killed by signal SIGKILL", as without the guard


def test_end_attempts_ends_the_processes_of_the_given_keys_only() -> None:
    key, other = uuid.uuid4().hex, uuid.uuid4().hex
    mine = subprocess.Popen(["sleep", "124"], env={**os.environ, "AUP_PROCESS_KEY": key}, start_new_session=True)
    theirs = subprocess.Popen(["sleep", "124"], env={**os.environ, "AUP_PROCESS_KEY": other})
    try:
        assert ray_node.end_attempts([key]) == 1
        assert mine.wait(30) == -signal.SIGKILL
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()


HOLDER = """\
import subprocess, sys, time
from aup.runner import ray_node
sibling = subprocess.Popen(["sleep", "124"])  # in the holder's process group, not part of the attempt
guard = subprocess.Popen(ray_node.guarded([sys.executable, sys.argv[1], sys.argv[2]]))  # no new session
print(sibling.pid, flush=True)
time.sleep(300)
"""


def test_a_guard_started_in_its_callers_session_never_ends_the_caller_s_group(tmp_path: Path) -> None:
    """A guard started without ``start_new_session`` (from a shell, a test runner) leads a session of
    its own anyway: when its parent dies it ends the attempt, never its caller's process group (it
    once killed the test runner and the shell that started it)."""
    (tmp_path / "spawner.py").write_text(SPAWNER)
    pids_file = tmp_path / "pids"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ESCAPE": ""}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "spawner.py"), str(pids_file)],
                              env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    sibling = 0
    try:
        assert holder.stdout is not None
        sibling = int(holder.stdout.readline())
        wait_for(pids_file.exists)
        sleepers = [int(p) for p in pids_file.read_text().split()]
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        wait_for(lambda: not any(alive(pid) for pid in sleepers))  # the attempt ended
        time.sleep(0.5)  # ample for a kill already sent; a group kill would have been one call
        assert alive(sibling), "the guard ended its caller's process group"
    finally:
        for pid in [sibling, *([int(p) for p in pids_file.read_text().split()] if pids_file.exists() else [])]:
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_zombie_is_not_alive() -> None:
    """A SIGKILLed process that its parent has not reaped yet is dead: its scratch and leases are free
    (the Ray retry found a dead worker's scratch folder kept because the worker was still a zombie)."""
    from aup.runner.orphans import pid_alive

    child = subprocess.Popen(["sleep", "124"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: not alive(child.pid))  # a zombie now: not reaped until wait()
        assert Path(f"/proc/{child.pid}").exists() and not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
