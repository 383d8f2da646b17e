"""What one trial attempt reported, read from its files: the part every execution resource shares.

An attempt, wherever it runs, leaves two files in the runner's ``jobs/`` folder: its output (stdout
and stderr merged, as in Auptimizer) and its result channel (``AUP_CHANNEL``). A local process
writes them directly; a Ray task streams their bytes back and the runner appends them. Either way
:class:`AttemptOutput` reads them the same way, so results, early stopping, the log cap and the
reason an attempt failed never depend on where it ran.

Results come from the structured channel when the trial wrote any, else from Auptimizer's
``#Auptimizer:`` lines in the output. Both files are tailed incrementally so that intermediate
results can drive early stopping while the trial runs.

The runner's memory does not depend on what a trial prints: files are read in bounded chunks, an
over-long line is skipped (both in ``trial_output``), and the log is capped (``log_limit`` bytes,
default 50 MB): past the cap the output is cut, a note marks the place, and the last few kilobytes
are appended when the trial ends (that is where the error usually is). A malformed channel record
fails the trial with the reason; it never reaches the runner's own code.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aup import channel
from aup.runner.trial_output import (MAX_LINE, READ_CHUNK, TAIL_BYTES, Tail, file_size, last_output_line, megabytes,
                                     punch_hole)

__all__ = ["AttemptOutcome", "AttemptOutput", "Result", "DEFAULT_LOG_LIMIT", "MAX_LINE"]

Result = float | list[float]
DEFAULT_LOG_LIMIT = 50 * 1024 * 1024
CUT_NOTE = "\n[aup: the output passed {limit}; it is cut here, the last {tail} KB follow at the end]\n"


@dataclass
class AttemptOutcome:
    """How an attempt ended. ``reason`` is None for a usable result, else one line saying why not."""

    exit_code: int | None
    results: list[Result]
    metrics: dict[str, Any]
    reason: str | None
    mismatch: dict[str, Any] | None = None  # a ``model_mismatch`` record: the config_list does not fit the model

    @property
    def final(self) -> Result | None:
        return self.results[-1] if self.results else None


@dataclass
class AttemptOutput:
    """The files of one attempt and what has been read from them (see the module docstring).

    A base for the attempts of every execution resource: it holds the arguments every launcher
    takes (``aup.runner.contracts.TrialAttempt``), and the resource's class adds how the attempt
    runs (``start``, ``poll``, ``terminate``, ``kill``, ``stop``, ``outcome``)."""

    command: list[str]
    workingdir: Path
    env: dict[str, str]
    log_path: Path
    channel_path: Path
    timeout: float | None = None
    log_limit: int | None = DEFAULT_LOG_LIMIT
    started: float = 0.0
    ended: float | None = None
    killed_reason: str | None = None
    _results: list[Result] = field(default_factory=list)
    _metrics: dict[str, Any] = field(default_factory=dict)
    _mismatch: dict[str, Any] | None = None
    _legacy: list[Result] = field(default_factory=list)
    _from_channel: bool = False
    _reported: int = 0
    _bad_record: str | None = None
    _cut_at: int | None = None  # where the note ends, once the log passed log_limit
    _punched: int = 0  # the log's bytes from _cut_at to here are freed (a hole)
    _last_bytes: bytes = b""

    def _open_files(self) -> None:
        """Forget a previous attempt's files and start tailing this one's (called by ``start``)."""
        for stale in (self.channel_path, self.log_path):
            stale.unlink(missing_ok=True)  # a retry or a resumed run must not read an old result
        self._channel_tail = Tail(self.channel_path)
        self._log_tail = Tail(self.log_path)

    @property
    def exit_fd(self) -> int | None:
        """A file descriptor that becomes readable when the attempt ends (None: the runner polls)."""
        return None

    def new_results(self) -> list[Result]:
        """Results reported since the last call (channel first, legacy lines if the channel is silent)."""
        self._absorb(self._channel_tail.read_lines(), self._log_tail.read_lines())
        return self.unreported()

    def metrics_so_far(self) -> dict[str, Any]:
        """Metrics reported up to the last ``new_results`` call (later values of a name replace earlier)."""
        return dict(self._metrics)

    def _cap_log(self) -> None:
        """Keep the log's disk use near ``log_limit`` while the trial writes.

        The note goes at the limit; output after it that has been parsed (for legacy result lines)
        is then freed by punching a hole in the file, behind the reader and never at the file's end,
        so a trial appending at that moment loses nothing and its last bytes stay on disk. Where holes
        are not supported the file is cut instead (a write racing the cut may be lost).
        """
        if self.log_limit is None:
            return
        size = file_size(self.log_path)
        if size <= (self.log_limit if self._cut_at is None else self._punched + self.log_limit // 4):
            return
        self._read_log_until(size, budget=16 * READ_CHUNK)  # result lines count before their bytes go
        position = self._log_tail.position()
        if size - position > self.log_limit:  # writing faster than it can be read: skip the middle
            position = size - TAIL_BYTES
            self._log_tail.seek(position)
        with open(self.log_path, "r+b") as log:
            if self._cut_at is None:
                note = CUT_NOTE.format(limit=megabytes(self.log_limit), tail=TAIL_BYTES // 1024).encode()
                os.pwrite(log.fileno(), note, self.log_limit)
                self._cut_at = self._punched = self.log_limit + len(note)
            end = position - TAIL_BYTES
            if end > self._punched:
                if punch_hole(log.fileno(), self._punched, end - self._punched):
                    self._punched = end
                else:
                    self._cut_instead(log, size)

    def _cut_instead(self, log: Any, size: int) -> None:
        assert self._cut_at is not None
        log.seek(max(self._cut_at, size - TAIL_BYTES))
        self._last_bytes = (self._last_bytes + log.read(TAIL_BYTES))[-TAIL_BYTES:]
        log.truncate(self._cut_at)
        self._punched = self._cut_at
        self._log_tail.seek(self._cut_at)

    def _read_log_until(self, offset: int, budget: int | None = None) -> None:
        """Parse the log up to ``offset`` in bounded chunks (at most ``budget`` bytes this call)."""
        start = self._log_tail.position()
        while self._log_tail.position() < offset:
            before = self._log_tail.position()
            self._absorb([], self._log_tail.read_lines())
            moved = self._log_tail.position()
            if moved == before or (budget is not None and moved - start >= budget):
                break

    def _finish_log(self) -> None:
        """After the process ended: parse the rest, then keep the note and the output's last bytes."""
        self._read_log_until(file_size(self.log_path))  # in bounded chunks, whatever the size
        if self.log_limit is None or (self._cut_at is None and file_size(self.log_path) <= self.log_limit):
            return
        self._absorb([], self._log_tail.close())  # the last line too, before the file changes
        if self._cut_at is None:
            with open(self.log_path, "r+b") as log:
                note = CUT_NOTE.format(limit=megabytes(self.log_limit), tail=TAIL_BYTES // 1024).encode()
                os.pwrite(log.fileno(), note, self.log_limit)
                self._cut_at = self._punched = self.log_limit + len(note)
        self._cap_log_to_tail()

    def _cap_log_to_tail(self) -> None:
        assert self._cut_at is not None
        with open(self.log_path, "r+b") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(self._cut_at, self._punched, size - TAIL_BYTES))
            tail = (self._last_bytes + log.read(TAIL_BYTES))[-TAIL_BYTES:]
            log.truncate(self._cut_at)
            log.seek(self._cut_at)
            log.write(tail)

    def unreported(self) -> list[Result]:
        """Results not yet handed out by ``new_results`` (after ``outcome``: the last ones)."""
        results = self._current_results()
        fresh = results[self._reported:]
        self._reported = len(results)
        return fresh

    def _absorb(self, channel_lines: list[str], log_lines: list[str]) -> None:
        for line in channel_lines:
            record = channel.parse_record(line)
            if record is None:
                continue
            problem = channel.record_problem(record)
            if problem is not None:
                if self._bad_record is None:
                    self._bad_record = f"bad channel record: {problem}"
                continue
            if record.get("kind") == "result":
                if not self._from_channel:
                    self._from_channel = True
                    self._reported = 0 if not self._legacy else self._reported
                self._results.append(record["value"])
            elif record.get("kind") == "metrics":
                self._metrics.update(record["metrics"])
            elif record.get("kind") == "model_mismatch" and self._mismatch is None:
                self._mismatch = record
        for line in log_lines:
            value = channel.parse_legacy_line(line)
            if value is not None:
                self._legacy.append(value)

    def _current_results(self) -> list[Result]:
        return self._results if self._from_channel else self._legacy

    def _read_outcome(self, code: int | None) -> AttemptOutcome:
        """Everything the ended attempt reported; ``code`` None: the resource lost the attempt."""
        self._finish_log()
        self._absorb(self._channel_tail.close(), self._log_tail.close())
        if self._channel_tail.overlong and self._bad_record is None:
            self._bad_record = f"bad channel record: a line longer than {MAX_LINE // 1024} KB"
        results = list(self._current_results())
        reason = self._reason(code, results) if code is not None else None
        return AttemptOutcome(code, results, dict(self._metrics), reason, self._mismatch)

    def _reason(self, code: int, results: list[Result]) -> str | None:
        if self.killed_reason:
            return self.killed_reason
        if self._bad_record:
            return self._bad_record
        if code < 0:
            return f"killed by signal {_signal_name(-code)}"
        if code != 0:
            last = last_output_line(self.log_path)
            return f"exit code {code}: {last}" if last else f"exit code {code}"
        if not results:
            return "no result reported"
        if not channel.is_finite_result(results[-1]):
            bad = results[-1] if not isinstance(results[-1], list) else next(
                (v for v in results[-1] if not _finite(v)), results[-1])
            return f"result is {bad}"
        return None


def _finite(value: Any) -> bool:
    return channel.is_finite_result(value)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


