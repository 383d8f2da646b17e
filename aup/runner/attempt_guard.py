"""``python -m aup.runner.attempt_guard PARENT_PID -- COMMAND...``: a trial attempt that dies with its parent.

A Ray task runs the trial script on a node as a child of the Ray worker. When the worker dies
(SIGKILLed, force-cancelled, its node's raylet gone) nothing in the worker runs any more, and a
parent-death signal reaches only the worker's direct child: whatever the script started (a data
loader, ``sleep``) would be re-parented and keep running. So the worker starts this guard instead,
as the leader of a new session; the guard runs the script in that session and waits for whichever
comes first:

* the script ends: the guard exits with the script's status (a signal death is passed on as the same
  signal); the worker then ends what is left of the group;
* the parent (the worker) ends: the guard ends the whole group, and every process of the attempt
  that left the group (``setsid``; found by ``AUP_ATTEMPT_GUARD``, which the guard puts in the
  script's environment), then itself.

Waiting uses pidfds (Linux >= 5.3), so the guard costs nothing while the trial runs; elsewhere it
checks its parent every ``POLL_S``. Standard library only: it starts in well under 0.1 s.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import uuid

from aup.runner.orphans import kill_with_env

ATTEMPT_ENV = "AUP_ATTEMPT_GUARD"  # set for the script: marks this attempt's processes, wherever they go

POLL_S = 0.5


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m aup.runner.attempt_guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    parent_fd = _pidfd(parent)
    if os.getppid() != parent:  # the parent is already gone: start nothing
        return 128 + signal.SIGKILL
    try:
        mark = f"{os.getpid()}-{uuid.uuid4().hex}"
        os.environ[ATTEMPT_ENV] = mark
        child = subprocess.Popen(command)  # inherits the session, the output files and the environment
    except OSError as exc:
        print(f"aup: cannot start {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    child_fd = _pidfd(child.pid)
    while True:
        if parent_fd is not None and child_fd is not None:
            ready, _, _ = select.select([parent_fd, child_fd], [], [])
            parent_gone = parent_fd in ready
        else:
            try:
                child.wait(POLL_S)
            except subprocess.TimeoutExpired:
                pass
            parent_gone = os.getppid() != parent
        if parent_gone:  # nobody will end the group now (even if the script has just ended too)
            end_everything()
        if child.poll() is not None:
            return _pass_on(child.returncode)


def end_everything() -> None:
    """The attempt's whole process group, its processes that left the group, then the guard.

    Found by this attempt's own mark, not the trial's process key: a retry of the trial may already
    run on this node under the same key."""
    kill_with_env(ATTEMPT_ENV, os.environ.get(ATTEMPT_ENV, ""))  # every process but this one
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the group, the guard with it


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _pass_on(code: int) -> int:
    """The script's exit status as the guard's own: a death by signal is repeated on the guard."""
    if code >= 0:
        return code
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL, SIGSTOP: always the default action
        pass
    os.kill(os.getpid(), -code)
    return 128 - code  # not reached for signals that end a process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
