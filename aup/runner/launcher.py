"""One attempt of one trial: a child process, its output file, its result channel, its clock.

The process runs in its own process group (``start_new_session``), so terminating a trial also ends
whatever it spawned (data-loader workers, shell pipelines) and a Ctrl-C in the terminal reaches the
runner only: the runner decides how trials end and records it. Output (stdout and stderr merged, as
in Auptimizer) goes straight to a file; nothing is piped through the runner, so there are no reader
threads and a silent trial can still be stopped at any time (Auptimizer checked early stopping only
between output lines).

Reading results, the log cap and the reason an attempt failed are ``attempt_output``'s (shared with
every execution resource); this module is the local resource: :class:`TrialProcess` implements the
attempt contract (``aup.runner.contracts.TrialAttempt``) and :class:`LocalResource` the resource
contract, whose ``end_leftovers`` (resume after a killed runner) ends this host's orphans.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aup import channel
from aup.runner.attempt_output import DEFAULT_LOG_LIMIT, MAX_LINE, AttemptOutcome, AttemptOutput, Result
from aup.runner.contracts import ExecutionResource
from aup.runner.orphans import pid_alive
from aup.runner.trial_output import TAIL_BYTES, last_output_line

if TYPE_CHECKING:
    from aup.config import LoadedExperiment

__all__ = ["AttemptOutcome", "TrialProcess", "LocalResource", "last_output_line", "open_resource", "pid_alive",
           "KERAS_HOME_REL", "MPLCONFIGDIR_REL", "MAX_LINE", "TAIL_BYTES", "DEFAULT_LOG_LIMIT", "Result"]

KERAS_HOME_REL = os.path.join(".aup", "cache", "keras")  # trials' KERAS_HOME under the working dir, if unset
# trials' MPLCONFIGDIR likewise: importing TensorFlow imports matplotlib, which writes ~/.cache and ~/.config
MPLCONFIGDIR_REL = os.path.join(".aup", "cache", "matplotlib")


@dataclass
class TrialProcess(AttemptOutput):
    """A running attempt. Call ``start``, then ``poll``/``new_results`` until ``poll`` returns a code."""

    _process: subprocess.Popen[bytes] | None = None
    _exit_fd: int | None = None  # a pidfd: readable once the process ends (Linux), for waiting on it

    def start(self) -> None:
        self._open_files()
        env = {**self.env, channel.CHANNEL_ENV: str(self.channel_path)}
        with open(self.log_path, "ab") as log:  # append mode: cutting the file keeps the writer at its end
            self._process = subprocess.Popen(
                self.command, cwd=self.workingdir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.started = time.time()
        try:
            self._exit_fd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: the runner's loop polls on a timer
            self._exit_fd = None

    @property
    def exit_fd(self) -> int | None:
        """A file descriptor that becomes readable when the process ends (None where unsupported)."""
        return self._exit_fd

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def poll(self) -> int | None:
        """The exit code once the process has ended (the group is then cleaned up), else None."""
        assert self._process is not None
        code = self._process.poll()
        if code is None:
            self._cap_log()
        if code is None and self.timeout is not None and time.time() - self.started > self.timeout:
            self.kill(f"timed out after {self.timeout:g}s")
            code = self._process.wait()
        if code is not None and self.ended is None:
            self.ended = time.time()
            self._signal_group(signal.SIGKILL)  # leftovers of the trial (its own children)
            if self._exit_fd is not None:
                os.close(self._exit_fd)
                self._exit_fd = None
        return code

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM); ``kill`` follows if it does not."""
        self._signal_group(signal.SIGTERM)

    def kill(self, reason: str | None = None) -> None:
        if reason and self.killed_reason is None:
            self.killed_reason = reason
        self._signal_group(signal.SIGKILL)

    def stop(self, reason: str, grace: float = 3.0) -> int:
        """Terminate, wait up to ``grace`` seconds, then kill; returns the exit code."""
        assert self._process is not None
        if self.killed_reason is None:
            self.killed_reason = reason
        if self._process.poll() is None:
            self.terminate()
            try:
                self._process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
                self._process.wait()
        code = self.poll()
        assert code is not None
        return code

    def _signal_group(self, sig: int) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def outcome(self) -> AttemptOutcome:
        """Everything the finished attempt reported and, if unusable, the one-line reason."""
        assert self._process is not None and self._process.returncode is not None
        return self._read_outcome(self._process.returncode)


class LocalResource(ExecutionResource):
    """``"resource": "cpu"`` and ``"gpu"``: each attempt a child process of the runner on this host."""

    def __init__(self, loaded: "LoadedExperiment") -> None:
        self.loaded = loaded

    def attempt(self, **arguments: Any) -> TrialProcess:
        return TrialProcess(**arguments)


def open_resource(loaded: "LoadedExperiment") -> ExecutionResource:
    """The execution resource of this experiment (its ``resource``'s registry row, ``aup.resources``),
    opened for one run: connecting to a cluster happens here, after every check of the experiment."""
    from aup.resources import resource_row

    cls = resource_row(loaded.experiment.resource).resource_class()
    if not (isinstance(cls, type) and issubclass(cls, ExecutionResource)):
        raise TypeError(f"resource {loaded.experiment.resource!r}: {cls!r} does not implement "
                        "aup.runner.contracts.ExecutionResource")
    resource: ExecutionResource = cls(loaded)
    return resource
