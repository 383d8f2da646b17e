"""Type checking of the written contracts: mypy with the repository's configuration ([tool.mypy]).

The contract modules (proposer, execution resource, trial attempt, job-config builder and their
registries) are checked strictly, their implementations and the runner that calls them leniently.
Slow: a first run reads optuna's, numpy's and pydantic's types (about 15 s on two cores); later runs
reuse mypy's cache (``.mypy_cache``) and take about a second.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_contracts_type_check() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "No module named mypy" not in result.stderr, "mypy is part of the test extra: pip install -e '.[test]'"
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_contract_module_is_checked_strictly() -> None:
    """A module that writes down a contract is on the strict list (a new one cannot be forgotten)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = next(o["module"] for o in config["overrides"] if o.get("disallow_untyped_defs"))
    contracts = ["aup.proposer_ext.contract", "aup.proposer_ext.registry", "aup.runner.contracts", "aup.resources",
                 "aup.runner.jobconfig", "aup.compression.contracts", "aup.metrics"]
    assert set(contracts) <= set(strict)
    files = {Path(f).with_suffix("").as_posix().replace("/", ".") for f in config["files"]}
    assert set(strict) <= files  # strict modules are also checked, not only read
