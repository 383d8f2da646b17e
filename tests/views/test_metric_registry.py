"""Adding a metric is one registry row: a toy metric registered here flows to every view.

The toy ``energy_mj`` (lower is better, shown as a count, with a ratio to the dense baseline) is
registered by the fixture only; no view module names it, yet ``aup show`` and ``aup compare`` show it with its
ratio, ``aup export`` has both columns, ``aup pareto`` minimises it, the plot labels its axis with
the row's label and unit, and constraints treat a bare number as its upper bound.
"""
from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path
from typing import Iterator

import optuna
import pytest

from aup import metrics as M
from aup.cli import main
from aup.constraints import parse_constraints
from aup.views import fmt, pareto

TOY = M.Metric("energy_mj", "min", unit="millijoules", label="energy per sample", show="count", ratio=True,
               group="script", compare=50)


@pytest.fixture
def toy_metric() -> Iterator[M.Metric]:
    M.register(TOY)
    yield TOY
    M.unregister(TOY.name)


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three trials reporting the toy metric and its dense baseline; trial 2 is worse on both axes."""
    url = f"sqlite:///{tmp_path_factory.mktemp('toy') / 'toy.db'}"
    study = optuna.create_study(study_name="toy", storage=url, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["score"])
    for score, energy in ((0.9, 3000.0), (0.8, 1000.0), (0.7, 5000.0)):
        trial = study.ask()
        trial.suggest_float("lr", 0.01, 0.1)
        trial.set_user_attr("energy_mj", energy)
        trial.set_user_attr("baseline_energy_mj", 10000.0)
        study.tell(trial, score)
    return url


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_registry_answers_for_the_toy_metric(toy_metric: M.Metric) -> None:
    assert M.direction("energy_mj") == "min" and M.direction("energy_mj_ratio") == "min"
    assert "energy_mj" in M.ratio_metrics() and M.ranked("compare")[-1] == "energy_mj"
    assert fmt.value("energy_mj", 12345.0) == "12.3k"
    assert fmt.axis_label("energy_mj") == "energy per sample [millijoules]"
    assert fmt.axis_label("energy_mj_ratio") == "energy per sample / uncompressed"
    assert fmt.log_scale("energy_mj")
    condition = parse_constraints({"energy_mj": 2000})[0]
    assert condition.value({"energy_mj": 1000.0}) <= 0 < condition.value({"energy_mj": 3000.0})


def test_unregistered_metric_is_a_plain_script_metric() -> None:
    assert M.get("energy_mj") is None and M.direction("energy_mj") == "max"
    assert fmt.value("energy_mj", 12345.0) == "1.234e+04"


def test_registering_a_known_name_with_other_facts_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        M.register(M.Metric(M.MODEL_BYTES, "max"))


def test_toy_metric_in_show_compare_export_and_pareto(toy_metric: M.Metric, toy_store: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rows = json.loads(_run(capsys, "compare", "toy", "--storage", toy_store, "--json"))
    assert [r["energy_mj_ratio"] for r in rows] == pytest.approx([0.3, 0.1, 0.5])
    shown = _run(capsys, "show", "toy", "--storage", toy_store)
    assert re.search(r"energy_mj\s.*3k \(0\.3x\)", shown)  # the best trial's value and ratio
    side = _run(capsys, "compare", "toy", "0", "1", "--storage", toy_store)
    assert "3k (0.3x)" in side and "1k (0.1x)" in side
    out = tmp_path / "toy.csv"
    assert main(["export", "toy", "--format", "csv", "-o", str(out), "--storage", toy_store]) == 0
    record = next(csv.DictReader(io.StringIO(out.read_text())))
    assert float(record["energy_mj"]) == 3000.0 and float(record["energy_mj_ratio"]) == pytest.approx(0.3)
    front = json.loads(_run(capsys, "pareto", "toy", "--objectives", "score,energy_mj", "--storage", toy_store,
                            "--json"))
    assert front["objectives"] == ["score:max", "energy_mj:min"]
    assert sorted(r["number"] for r in front["trials"]) == [0, 1]
    assert pareto.default_direction("energy_mj") == "min"


def test_toy_metric_labels_the_plot_axis(toy_metric: M.Metric, toy_store: str) -> None:
    from aup.views.plot import plot_data
    from aup.views.records import open_store

    experiment, trials = open_store(toy_store).load("toy")
    data = plot_data(experiment, trials, x="energy_mj")
    assert data.log_x and sorted(p["x"] for p in data.front) == [1000.0, 3000.0]


def test_a_hyperparameter_named_like_the_toy_metric_is_a_param_column(toy_metric: M.Metric) -> None:
    from aup.views.rows import param_key

    assert param_key("energy_mj", ["score"]) == "param:energy_mj" and param_key("lr", ["score"]) == "lr"
