"""Reading and trimming a trial's output files with bounded memory.

A trial may print without limit; the runner must not. ``Tail`` reads a growing file in chunks of
at most ``READ_CHUNK`` bytes and drops any line longer than ``MAX_LINE``; ``punch_hole`` frees a
range of the log on disk without moving the trial's writer; ``last_output_line`` finds the line that
explains a failure in the last ``TAIL_BYTES`` of the output. Used by the local and the Ray launcher.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aup import channel

TAIL_BYTES = 8192
READ_CHUNK = 1 << 20  # bytes read from a trial's file per call
MAX_LINE = 1 << 20  # a channel record or output line longer than this is skipped


class Tail:
    """Incremental reader of a growing file; complete lines only, at most ``READ_CHUNK`` bytes a call.

    A line longer than ``MAX_LINE`` is dropped (``overlong`` counts them), so memory stays bounded
    whatever the trial writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop bytes up to its end
        self._closed = False
        self.overlong = 0

    def read_lines(self) -> list[str]:
        if self._closed:
            return []
        if self._handle is None:
            try:
                self._handle = open(self.path, "rb")
            except FileNotFoundError:
                return []
        data = self._handle.read(READ_CHUNK)
        if not data:
            return []
        pieces = (self._partial + data).split(b"\n")
        self._partial = pieces.pop()
        lines = []
        for piece in pieces:
            if self._skipping:
                self._skipping = False
                continue
            lines.append(piece.decode("utf-8", errors="replace"))
        if len(self._partial) > MAX_LINE:
            self._partial = b""
            if not self._skipping:
                self.overlong += 1
            self._skipping = True
        return lines

    def position(self) -> int:
        return self._handle.tell() if self._handle is not None else 0

    def seek(self, offset: int) -> None:
        """Continue reading at ``offset`` (after the log was cut); a partial line is dropped."""
        if self._handle is not None:
            self._handle.seek(offset)
        self._partial = b""

    def close(self) -> list[str]:
        """Read what is left, including a last line without newline, and close."""
        lines = []
        while True:
            more = self.read_lines()
            if not more and (self._handle is None or self._handle.tell() >= file_size(self.path)):
                break
            lines += more
        if self._partial and not self._skipping:
            lines.append(self._partial.decode("utf-8", errors="replace"))
        self._partial = b""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._closed = True
        return lines


def punch_hole(descriptor: int, offset: int, length: int) -> bool:
    """Free ``length`` bytes at ``offset`` without changing the file's size (Linux fallocate); False if unsupported."""
    global _fallocate
    if _fallocate is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _fallocate = libc.fallocate
            _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        except (OSError, AttributeError):
            _fallocate = False
    if not _fallocate:
        return False
    return _fallocate(descriptor, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, offset, length) == 0


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_fallocate: Any = None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


def last_output_line(path: Path) -> str:
    """The last meaningful line of a trial's output (e.g. ``ZeroDivisionError: division by zero``)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and channel.LEGACY_MARKER not in line:
            return line if len(line) <= 300 else line[:297] + "..."
    return ""
