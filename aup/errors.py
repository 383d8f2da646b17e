"""Errors that the CLI turns into one clear line and exit status 2 (no traceback unless --debug)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable


class UserError(Exception):
    """A problem in what the user gave us (a file, a key, a value); the message is shown as is."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem of a user's input: where (a key path such as ``resource_args.early_stop.warmup``,
    empty when the whole input is wrong) and what was expected. Kept as fields so that callers can
    merge, deduplicate and relocate problems without re-reading message text."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message

    @classmethod
    def from_line(cls, line: str) -> "Problem":
        """A problem from a layer that still reports ``"<key path>: <message>"`` text."""
        head, sep, rest = line.partition(": ")
        if sep and head and " " not in head:
            return cls(head, rest)
        return cls("", line)

    def under(self, parent: str) -> "Problem":
        """The same problem seen from a parent section (``early_stop.x`` -> ``resource_args.early_stop.x``)."""
        if not parent:
            return self
        return Problem(f"{parent}.{self.key}" if self.key else parent, self.message)


class ProblemError(ValueError):
    """A ValueError that carries its located problem (raised by validators, read by the loader)."""

    def __init__(self, key: str, message: str) -> None:
        self.problem = Problem(key, message)
        super().__init__(str(self.problem))


class ConfigError(UserError):
    """An invalid experiment JSON; the message names the file, the key and what was expected.

    ``problems`` holds the located problems when the error was built from them (one line each).
    """

    def __init__(self, message: str = "", *, problems: Iterable[Problem] = (), source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        if not message and self.problems:
            prefix = f"{source}: " if source else ""
            message = "\n".join(f"{prefix}{problem}" for problem in self.problems)
        super().__init__(message)


_NOTHING: Any = object()


class FieldError(ValueError):
    """A bad value at a known place of a list of entries (``config_list[1].sparsity``).

    The place travels as fields, so that a caller re-locating the error (the search space maps an
    expanded entry back to the user's entry) never parses the text. ``str(error)`` is
    ``"<where>: <reason>"``, where ``where`` is ``field``, then ``[entry]`` when an entry is known, then
    ``.key`` when the key is the place (an unknown key is reported at its entry, so ``locate_key``
    is False there). ``expected`` and ``got`` are the two sides of the problem when there are two.
    """

    def __init__(self, reason: str, *, field: str = "config_list", entry: int | None = None,
                 key: str | None = None, expected: str | None = None, got: Any = _NOTHING,
                 locate_key: bool = True) -> None:
        self.reason = reason
        self.field = field
        self.entry = entry
        self.key = key
        self.expected = expected
        self.got = None if got is _NOTHING else got
        self.has_got = got is not _NOTHING
        self.locate_key = locate_key
        super().__init__(f"{self.where}: {reason}")

    @property
    def tail(self) -> str:
        """The place below ``field``: ``"[1].sparsity"``, ``"[1]"`` or ``""``."""
        text = f"[{self.entry}]" if self.entry is not None else ""
        if self.key is not None and self.locate_key:
            text += f".{self.key}"
        return text

    @property
    def where(self) -> str:
        return self.field + self.tail


def closest(word: str, options: Iterable[Any], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The ``n`` options nearest to ``word`` (difflib's ratio >= ``cutoff``), best first."""
    return difflib.get_close_matches(str(word), sorted(str(o) for o in options), n=n, cutoff=cutoff)


def did_you_mean(word: str, options: Iterable[Any], *, fallback: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the nearest option, else ``fallback`` (often ``""``).

    Every "unknown name" message in aup ends with it, so that a typo is one glance from its fix.
    """
    match = closest(word, options)
    return f" (did you mean {match[0]!r}?)" if match else fallback
