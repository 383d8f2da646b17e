"""Every Python block in the README and the docs runs, in order, as a reader would paste it.

Blocks that are fragments of a larger script (they call the reader's own ``train_one_epoch``) are
preceded by ``<!-- skip: next -->`` (Sybil's marker) and so are visibly not meant to run; every other
``python`` block is executed in a fresh folder, one namespace per page, so a wrong example fails CI.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

sybil = pytest.importorskip("sybil")
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def _runnable(page: Path) -> bool:
    return "```python" in page.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    document = sybil.Sybil(parsers=[PythonCodeBlockParser(), SkipParser()]).parse(page)
    ran = 0
    for example in document:
        example.evaluate()
        ran += 1
    assert ran, f"{page.name}: no example found although the page has a python block"
