"""Errors that the CLI turns into one clear line and exit status 2 (no traceback unless --debug)."""
from __future__ import annotations


class UserError(Exception):
    """A problem in what the user gave us (a file, a key, a value); the message is shown as is."""

    exit_code = 2


class ConfigError(UserError):
    """An invalid experiment JSON; the message names the file, the key and what was expected."""
