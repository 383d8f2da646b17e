"""Figures in the README and the docs agree with what aup records (issue 25 item 14): each one is
reproduced here by the command or measurement the page names next to it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def _section(title: str) -> str:
    """The text under the heading ``title`` (any level) of the README or a docs page, to the next heading."""
    match = re.search(rf"(?m)^#+ {re.escape(title)}\s*$", PAGES)
    assert match, f"no heading {title!r} in README.md or docs/"
    nxt = re.compile(r"(?m)^#+ ").search(PAGES, match.end())
    return PAGES[match.start():nxt.start() if nxt else len(PAGES)]


def test_dense_digits_cnn_size_is_what_the_store_records() -> None:
    """The quickstart's dense model: README said 165 kB, the compressor records 162,632 bytes."""
    torch = pytest.importorskip("torch")
    from aup.compression.torch import zoo
    from aup.compression.torch.measure import measure_model
    from aup.views import fmt

    dense = measure_model(zoo.DigitsCNN(), torch.zeros(1, 1, 8, 8), latency=False)
    quickstart = _section("What the quickstart does")
    assert f"{int(dense['param_count']):,} parameters" in quickstart
    assert f"{int(dense['model_bytes']):,} bytes = {fmt.value('model_bytes', dense['model_bytes'])}" in quickstart
    assert "aup export digits_quickstart" in quickstart  # the command that shows it
    compressors = _section("Compressors")
    assert f"{fmt.value('model_bytes', dense['model_bytes'])}; ratios" in compressors
    assert "165 kB" not in PAGES


def test_transformer_section_names_the_transformers_extra() -> None:
    section = _section("Transformers")
    assert '-e ".[transformers]"' in section


@pytest.mark.slow
def test_compressor_table_row_reproduces(tmp_path: Path) -> None:
    """The fpgm row of the compressor table is what ``python benchmarks/compressors_digits.py fpgm`` prints."""
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compressors_digits.py"), "fpgm"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    measured = next(line for line in done.stdout.splitlines() if "| fpgm |" in line).split("|")
    accuracy, params, macs, size = (c.strip() for c in measured[3:7])
    row = next(line for line in PAGES.splitlines() if line.startswith("| `fpgm` |")).split("|")
    assert row[4].strip() == f"{float(accuracy):.3f}"
    assert row[5].strip() == params and row[6].strip() == macs
    assert row[7].strip() == re.sub(r"(\d)kB", r"\1 kB", size)
