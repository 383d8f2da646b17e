"""Errors that the CLI turns into one clear line and exit status 2 (no traceback unless --debug)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


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


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    matches = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
