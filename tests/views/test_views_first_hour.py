"""The views as a new user reads them (issue 25): which runtime a latency is, the runner and budget of a
trial, ``--where`` on number-like text and on misspelt values, piped output at full width."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from aup.cli import main


def _add(study: optuna.Study, params: dict[str, Any], attrs: dict[str, Any], value: float) -> None:
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "compressor": CategoricalDistribution(["l1_filter", "fpgm"])}
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, params=params,
                                              distributions={k: dists[k] for k in params}, user_attrs=attrs))


@pytest.fixture()
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    study = optuna.create_study(storage=url, study_name="pruned", direction="maximize")
    for i, (lr, pruner, runner) in enumerate([(0.01, "l1_filter", "hostA:16910"), (0.02, "fpgm", "hostB:2231"),
                                              (0.03, "l1_filter", "hostA:16910")]):
        _add(study, {"lr": lr, "compressor": pruner},
             {"score": 0.9 + i / 100, "model_bytes": 50_000 + i * 1000, "latency_ms": 0.07 + i / 1000,
              "latency_ms_torch": 0.07 + i / 1000, "runner": runner, "budget": 3 ** i}, 0.9 + i / 100)
    deployed = optuna.create_study(storage=url, study_name="deployed", direction="maximize")
    _add(deployed, {"lr": 0.01}, {"score": 0.9, "model_bytes": 20_000, "latency_ms": 0.02, "latency_ms_torch": 0.07}, 0.9)
    _add(deployed, {"lr": 0.02}, {"score": 0.8, "model_bytes": 10_000, "latency_ms": 0.01, "latency_ms_torch": 0.06}, 0.8)
    return url


def _out(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_latency_shown_once_when_only_torch_was_timed(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 3: no deployed runtime timed -> one latency row that says it is torch's."""
    for layout in ("rows", "columns"):
        out = _out(capsys, "compare", "pruned", "--storage", url, "--layout", layout)
        assert "latency_ms (torch eager)" in out and "latency_ms_torch" not in out
    out = _out(capsys, "compare", "deployed", "--storage", url)
    assert "latency_ms_torch" in out and "(torch eager)" not in out  # two runtimes: two rows


def test_compare_shows_runner_and_budget(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Items 5 and 15: the runner (host:pid) of each trial and the budget it got (n_iterations)."""
    rows = json.loads(_out(capsys, "compare", "pruned", "--storage", url, "--json"))
    assert {r["number"]: (r["runner"], r["n_iterations"]) for r in rows} == {
        0: ("hostA:16910", 1), 1: ("hostB:2231", 3), 2: ("hostA:16910", 9)}
    out = _out(capsys, "compare", "pruned", "--storage", url)
    assert "runner" in out and "n_iterations" in out and "hostB:2231" in out
    shown = json.loads(_out(capsys, "show", "pruned", "--storage", url, "--json"))
    assert shown["best"][0]["n_iterations"] == 9


def test_contains_matches_number_like_text(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 6: ``runner~16910`` matches ``hostA:16910`` like ``runner~:16910`` does."""
    for where in ("runner~16910", "runner~:16910"):
        rows = json.loads(_out(capsys, "compare", "pruned", "--storage", url, "--json", "--where", where))
        assert sorted(r["number"] for r in rows) == [0, 2]


def test_a_misspelt_value_says_did_you_mean(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 7: ``compressor=l1filter`` (the old documented example) names ``l1_filter``; the help says l1_filter."""
    capsys.readouterr()
    assert main(["compare", "pruned", "--storage", url, "--where", "compressor=l1filter"]) == 0
    captured = capsys.readouterr()
    assert "No trial" in captured.out
    assert "did you mean 'l1_filter'?" in captured.err
    rows = json.loads(_out(capsys, "compare", "pruned", "--storage", url, "--json", "--where", "compressor=l1_filter"))
    assert sorted(r["number"] for r in rows) == [0, 2]
    help_text = subprocess.run([sys.executable, "-m", "aup", "compare", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}, timeout=60).stdout
    assert "compressor=l1_filter" in help_text and "l1filter" not in help_text
    docs = (Path(__file__).parents[2] / "docs" / "comparing.md").read_text()
    assert 'compressor=l1_filter"' in docs


def test_piped_compare_keeps_full_column_names(url: str, tmp_path: Path) -> None:
    """Item 16: ``aup compare ... > file`` is not squeezed to 80 columns."""
    done = subprocess.run([sys.executable, "-m", "aup", "compare", "pruned", "--storage", url, "--layout", "rows"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    for name in ("model_bytes", "latency_ms (torch eager)", "n_iterations", "compressor", "runner"):
        assert name in done.stdout
    assert "uncompressed model" in done.stdout.splitlines()[-1]  # the caption on one line, not folded
