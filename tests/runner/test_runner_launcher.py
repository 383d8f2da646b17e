"""The trial launcher on its own: result sources, failure reasons, process-group handling."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aup.runner.orphans import kill_orphans as _kill_orphans
from aup.runner.launcher import TrialProcess, last_output_line


def launch(tmp_path: Path, code: str, timeout: float | None = None) -> TrialProcess:
    script = tmp_path / "trial.py"
    script.write_text(code)
    process = TrialProcess(command=[sys.executable, str(script), "cfg.json"], workingdir=tmp_path,
                           env=dict(os.environ), log_path=tmp_path / "t.out",
                           channel_path=tmp_path / "t.channel.jsonl", timeout=timeout)
    process.start()
    return process


def wait(process: TrialProcess) -> int:
    deadline = time.time() + 30
    while (code := process.poll()) is None:
        assert time.time() < deadline
        time.sleep(0.01)
    return code


def test_channel_results_win_over_legacy_lines(tmp_path: Path) -> None:
    process = launch(tmp_path, "import aup\naup.print_result(0.5)\naup.log_metrics(acc=1)\naup.print_result([0.7, 2])\n")
    assert wait(process) == 0
    outcome = process.outcome()
    assert outcome.results == [0.5, [0.7, 2.0]] and outcome.metrics == {"acc": 1} and outcome.reason is None


def test_legacy_lines_anywhere_in_a_line_are_results(tmp_path: Path) -> None:
    process = launch(tmp_path, "print('INFO #Auptimizer:0.1')\nprint('#Auptimizer:0.2,3')\nprint('#Auptimizer:bad')\n")
    wait(process)
    assert process.outcome().results == [0.1, [0.2, 3.0]]


def test_results_are_handed_out_once_while_running(tmp_path: Path) -> None:
    process = launch(tmp_path, "import aup, time\naup.print_result(1)\ntime.sleep(0.5)\naup.print_result(2)\n")
    seen = []
    while process.poll() is None:
        seen += process.new_results()
        time.sleep(0.01)
    seen += process.new_results()
    process.outcome()
    seen += process.unreported()
    assert seen == [1.0, 2.0]


def test_failure_reasons(tmp_path: Path) -> None:
    process = launch(tmp_path, "import aup\naup.print_result(1)\nraise KeyError('lr')\n")
    assert wait(process) == 1
    assert process.outcome().reason == "exit code 1: KeyError: 'lr'"  # a result does not excuse a crash
    process = launch(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    wait(process)
    assert process.outcome().reason == "killed by signal SIGKILL"
    process = launch(tmp_path, "import aup\naup.print_result(float('inf'))\n")
    wait(process)
    assert process.outcome().reason == "result is inf"
    process = launch(tmp_path, "import aup\naup.print_result([1.0, float('nan')])\n")
    wait(process)
    assert process.outcome().reason == "result is nan"


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_timeout_and_stop(tmp_path: Path) -> None:
    process = launch(tmp_path, "import time\ntime.sleep(30)\n", timeout=0.2)
    start = time.time()
    wait(process)
    assert time.time() - start < 10
    assert process.outcome().reason == "timed out after 0.2s"
    process = launch(tmp_path, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(30)\n")
    time.sleep(0.3)
    code = process.stop("interrupted", grace=0.3)  # ignores SIGTERM: killed after the grace period
    assert code == -signal.SIGKILL and process.outcome().reason == "interrupted"


def test_last_output_line_skips_result_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.out"
    log.write_text("Traceback\nValueError: bad lr\n\n#Auptimizer:0.3\n")
    assert last_output_line(log) == "ValueError: bad lr"
    assert last_output_line(tmp_path / "missing.out") == ""


def test_orphans_of_a_killed_runner_are_found_by_job_path(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "exp-3.json"
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(job)], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(job) + "x"],
                                 start_new_session=True)
    try:
        time.sleep(0.2)
        _kill_orphans(str(job))
        assert orphan.wait(10) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()


def test_exit_fd_wakes_a_waiter_when_the_trial_ends_and_is_closed_after(tmp_path: Path) -> None:
    import select

    process = launch(tmp_path, "import time\ntime.sleep(0.3)\n")
    fd = process.exit_fd
    if fd is None:  # not Linux >= 5.3: the runner polls on its timer
        assert wait(process) == 0
        return
    assert select.select([fd], [], [], 0)[0] == []  # still running
    began = time.monotonic()
    assert select.select([fd], [], [], 10)[0] == [fd]
    assert time.monotonic() - began < 5
    assert wait(process) == 0
    assert process.exit_fd is None
    try:
        os.fstat(fd)
    except OSError:
        pass
    else:  # the number may have been reused by another open file: it must not be a pidfd of ours
        assert not os.path.exists(f"/proc/self/fdinfo/{fd}") or "Pid:" not in open(f"/proc/self/fdinfo/{fd}").read()
