"""Every documented ``aup`` command in a block marked ``<!-- test: cli -->`` runs against a store.

The pages show the views on experiments called ``digits_quickstart`` and ``mnist-prune``; this test
writes such experiments
(``aup.views.synthetic``: trials with the attributes real runs record, no model run) and runs each
``aup ...`` line of the marked blocks as a reader would paste it, through ``python -m aup``. A command
that fails, or a ``--where`` that matches no trial, fails the test, so a wrong example fails CI.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
MARK = "<!-- test: cli -->"
NOT_RUN = ("aup dashboard",)  # starts a server: the browser test covers it


def documented_commands() -> list[tuple[str, str]]:
    """(page:line, command) for every ``aup`` line of every marked block."""
    found: list[tuple[str, str]] = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip() != MARK:
                continue
            start = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
            for offset, command in enumerate(lines[start + 1:]):
                if command.startswith("```"):
                    break
                command = re.sub(r"\s+#.*$", "", command).strip()
                if command.startswith("aup ") and not command.startswith(NOT_RUN):
                    found.append((f"{page.name}:{start + 2 + offset}", command))
    return found


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from aup.views.synthetic import make_store

    folder = tmp_path_factory.mktemp("doc-cli")
    url = f"sqlite:///{folder / 'aup.db'}"
    for name in ("digits_quickstart", "mnist-prune"):
        make_store(url, name=name, n_trials=60, multi_objective=True)
    return url, folder


def test_the_pages_document_commands() -> None:
    assert COMMANDS, f"no block marked {MARK} in README.md or docs/"


@pytest.mark.slow
@pytest.mark.parametrize("where,command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_runs(where: str, command: str, store: tuple[str, Path]) -> None:
    url, folder = store
    env = {**os.environ, "AUP_STORAGE": url}
    done = subprocess.run([sys.executable, "-m", "aup", *shlex.split(command)[1:]], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{where}: `{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    if "--where" in command and " compare " in f" {command} ":
        assert "no trial" not in (done.stdout + done.stderr).lower(), f"{where}: `{command}` matched nothing"
