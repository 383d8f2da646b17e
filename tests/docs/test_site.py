"""The documentation site builds offline with warnings as errors, and its API reference lists the
whole public API (every name in ``aup.__all__`` and ``aup.compression.__all__``)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs"), str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"sphinx -W failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(site: Path) -> None:
    for page in ("index", "getting-started", "api", "cli", "benchmarks", "search.html"):
        assert (site / (page if page.endswith(".html") else page + ".html")).is_file(), page


@pytest.mark.slow
def test_the_api_reference_lists_every_public_name(site: Path) -> None:
    import aup
    import aup.compression

    html = (site / "api.html").read_text()
    documented = set(re.findall(r'id="(aup(?:\.compression)?\.[A-Za-z_]\w*)"', html))
    wanted = {f"aup.{name}" for name in aup.__all__ if name != "compression"}
    wanted |= {f"aup.compression.{name}" for name in aup.compression.__all__}
    assert wanted <= documented, f"missing from docs/api.md: {sorted(wanted - documented)}"
    assert 'id="module-aup.compression"' in html  # `aup.compression`, the one module in aup.__all__


@pytest.mark.slow
def test_the_cli_reference_has_every_command(site: Path) -> None:
    from aup.cli import build_parser

    html = (site / "cli.html").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in commands:
        assert f'id="aup-{name}"' in html, name
