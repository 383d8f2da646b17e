"""Text from users and trials made safe to show in a terminal.

Experiment names, parameter values and failure reasons come from files and trial output. Shown as
they are, ``[bold]``-style text would be read as rich markup (and ``[/x]`` raises an error), and
escape codes (``\\x1b[2J``) or bidirectional overrides would reach the terminal. Every display
passes such text through ``escape`` (rich markup) or ``printable`` (plain output).
"""
from __future__ import annotations

import unicodedata
from typing import Any


def printable(text: Any) -> str:
    """``text`` with control and format characters (C0, C1, DEL, bidi overrides) shown as ``\\xNN``/``\\uNNNN``."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_visible(ch) for ch in text)


def _visible(ch: str) -> str:
    if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: Any) -> str:
    """``printable(text)`` with rich markup escaped, for strings that rich renders as markup."""
    from rich.markup import escape as escape_markup

    return escape_markup(printable(text))


PIPED_WIDTH = 100_000


def output_console(**kwargs: Any) -> Any:
    """A rich Console for standard output; piped output (``aup compare ... > file``, ``| less``) gets
    a width no table reaches, so columns keep their full names instead of being squeezed to 80."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH, **kwargs)
