"""Text from users and trials made safe to show in a terminal.

Experiment names, parameter values and failure reasons come from files and trial output. Shown as
they are, ``[bold]``-style text would be read as rich markup (and ``[/x]`` raises an error), and
escape codes (``\\x1b[2J``) or bidirectional overrides would reach the terminal. Every display
passes such text through ``escape`` (rich markup) or ``printable`` (plain output).
"""
from __future__ import annotations

import re
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


# ---- secrets in storage URLs ---------------------------------------------------------------------
MASK = "***"
MIN_SECRET = 4  # shorter passwords are masked inside URLs and DSNs only, not wherever the letters appear
_SECRETS: set[str] = set()  # passwords of the storage URLs this process was given
# scheme://user:PASSWORD@host: the password runs to the last "@" before the host (an unescaped "@" in
# a password is still masked whole)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*:)(?P<password>[^\s'\"/]*)"
                           r"(?=@[^@/\s'\"]*(?:[/?#\s'\"]|$))")
_DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)


def shown_url(url: str) -> str:
    """``url`` as aup shows or logs it: the password replaced by ``***`` (SQLAlchemy's own rendering).

    Also remembers the password, so that ``hide_secrets`` removes it from messages that quote it
    outside a URL (a driver's error text, a DSN). A URL SQLAlchemy cannot parse is masked by pattern.
    """
    if "@" not in url:  # no user info, so no password (and no SQLAlchemy import for an SQLite path)
        return url
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: the pattern still masks user:password@
        return hide_secrets(url)
    raw = _URL_PASSWORD.search(url)
    if raw:
        from urllib.parse import unquote

        remember_secret(raw["password"])
        remember_secret(unquote(raw["password"]))
    if not parsed.password:
        return hide_secrets(url)
    remember_secret(str(parsed.password))
    return hide_secrets(parsed.render_as_string(hide_password=True))


def remember_secret(secret: str) -> None:
    """A password ``hide_secrets`` must mask wherever it appears (and its URL-encoded form)."""
    from urllib.parse import quote

    if len(secret) >= MIN_SECRET and secret != MASK:  # shorter: masking every "ab" would garble messages
        _SECRETS.update({secret, quote(secret, safe="")})


def hide_secrets(text: str) -> str:
    """``text`` with every password masked: in URLs (``scheme://user:***@``), in ``password=...``
    key-value DSNs (psycopg's connection strings), and every password ``shown_url`` has seen."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, str(text))
    text = _DSN_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def shell_command(*words: str) -> str:
    """A command for the user to paste into a shell, each word quoted for POSIX shells
    (``aup resume 'r2 $(touch X) '"'"''``): pasting it runs that command and nothing else."""
    import shlex

    return " ".join(shlex.quote(str(word)) for word in words)
