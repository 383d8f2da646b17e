"""``python -m aup.runner.attempt_guard PARENT_PID -- COMMAND...``: a trial attempt that dies with its parent.

A Ray task runs the trial script on a node as a child of the Ray worker. When the worker dies
(SIGKILLed, force-cancelled, its node's raylet gone) nothing in the worker runs any more, and a
parent-death signal reaches only the worker's direct child: whatever the script started (a data
loader, ``sleep``) would be re-parented and keep running. So the worker starts this guard instead,
as the leader of a new session. The guard forks a *watcher*, then runs the script in that session
and passes its exit status on (a signal death as the same signal).

The watcher waits for the worker or the guard to end. If the worker is gone (however: even when
Ray also kills the worker's direct children, the guard among them, the watcher is a grandchild and
is not one of them) it ends every process of the attempt that left the session (``setsid``: found by
``AUP_ATTEMPT_GUARD``, a mark the guard puts in the script's environment), then the whole session,
itself with it. If the guard ended while the worker lives, the worker ends the session (the watcher
with it) as the task finishes; the watcher leaves by itself after ``WORKER_GRACE_S``. Waiting uses pidfds (Linux >= 5.3), so it costs nothing while the trial runs; elsewhere it
checks every ``POLL_S``. Standard library only: it starts in well under 0.1 s.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid

from aup.runner.orphans import clear_scratch_of, kill_with_env, pid_alive

ATTEMPT_ENV = "AUP_ATTEMPT_GUARD"  # set for the script: marks this attempt's processes, wherever they go
POLL_S = 0.5
# After the guard ends with the worker alive, how long the watcher still waits for the worker to die
# (something killing both may reach the guard first); normally the worker ends the session sooner.
WORKER_GRACE_S = 30.0


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m aup.runner.attempt_guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    _lead_own_session()
    os.environ[ATTEMPT_ENV] = f"{os.getpid()}-{uuid.uuid4().hex}"
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:  # the watcher
        try:
            _quiet()  # holds none of the script's output pipes or files open
            watch(parent, os.getppid())
        finally:
            os._exit(0)
    if os.getppid() != parent:  # the parent is already gone: start nothing (the watcher ends the rest)
        return 128 + signal.SIGKILL
    try:
        child = subprocess.Popen(command)  # inherits the session, the output files and the environment
    except OSError as exc:
        print(f"aup: cannot start {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return _pass_on(child.wait())


def watch(worker: int, guard: int) -> None:
    """Until the worker or the guard ends; if the worker did, end the attempt (see the module doc)."""
    worker_fd, guard_fd = _pidfd(worker), _pidfd(guard)
    if worker_fd is not None and guard_fd is not None:
        select.select([worker_fd, guard_fd], [], [])
        if _alive(worker, worker_fd):  # the guard went first: killed on its way to the worker's death?
            select.select([worker_fd], [], [], WORKER_GRACE_S)
    else:
        while _alive(worker) and os.getppid() == guard:
            time.sleep(POLL_S)
        deadline = time.monotonic() + WORKER_GRACE_S
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    if not _alive(worker, worker_fd):
        clear_scratch_of(worker)  # the worker's own cleanup (its ``finally``) never ran
        end_everything()


def _lead_own_session() -> None:
    """Lead a session of our own even when the caller did not start us in one (``start_new_session``),
    so that ending "the attempt's session" can never end the caller's: a guard started from a shell
    or a test runner would otherwise kill them with it."""
    if os.getsid(0) == os.getpid():
        return
    try:
        os.setsid()
    except OSError:  # already a process-group leader: cannot happen for a freshly started child
        pass


def end_everything() -> None:
    """Every process of this attempt (also those that left the session), then the session, the
    caller with it. Found by this attempt's own mark, not the trial's process key: a retry of the
    trial may already run on this node under the same key."""
    mark = os.environ.get(ATTEMPT_ENV, "")
    kill_with_env(ATTEMPT_ENV, mark)  # every process but this one
    if mark.split("-", 1)[0] == str(os.getpgrp()):  # the group the guard leads, never a caller's
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _alive(pid: int, fd: int | None = None) -> bool:
    """Through the pidfd when there is one (a reused pid cannot fool it), else by the pid."""
    return not select.select([fd], [], [], 0)[0] if fd is not None else pid_alive(pid)


def _quiet() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


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
