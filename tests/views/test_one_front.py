"""One Pareto front everywhere: run end, list, show, pareto, compare's ``*``, plot and export agree.

The front puts feasible trials first as Optuna's constrained domination does (feasible dominates
infeasible; of two infeasible trials the smaller total violation dominates). The stores are made
with ``optuna.trial.create_trial`` carrying the constraint values the runner records
(``trial.set_constraint`` -> system attributes ``constraints:NAME``) and the ``feasible`` attribute.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from aup.cli import main
from aup.runner.progress import best_trials
from aup.views import pareto, plot, tables
from aup.views.records import open_store

# (score, model_bytes, constraint value): feasible when <= 0.
TRIALS = [
    (0.99, 9000.0, 0.02),   # 0: best on both objectives but infeasible (violates by 0.02)
    (0.97, 5000.0, 0.0),    # 1: feasible, on the feasible front
    (0.95, 3000.0, -0.01),  # 2: feasible, on the feasible front
    (0.94, 6000.0, -0.03),  # 3: feasible, dominated by 1
    (0.99, 1000.0, 0.5),    # 4: dominates everything, infeasible
]


def _store(url: str, name: str, trials: list[tuple[float, float, float]]) -> None:
    study = optuna.create_study(storage=url, study_name=name, directions=["maximize", "minimize"])
    study.set_metric_names(["score", "model_bytes"])
    for number, (score, size, constraint) in enumerate(trials):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[score, size], params={"lr": 0.001 * (number + 1)},
            distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
            user_attrs={"score": score, "model_bytes": size, "feasible": constraint <= 0},
            system_attrs={"constraints:score": constraint}))


@pytest.fixture()
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'front.db'}"
    _store(url, "mixed", TRIALS)
    # none feasible: the least-violating trials (1 and 2 violate by 0.1), not Optuna's empty best_trials
    _store(url, "none-feasible", [(0.99, 1000.0, 0.3), (0.9, 2000.0, 0.1), (0.8, 500.0, 0.1), (0.7, 400.0, 0.2)])
    return url


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name, front", [("mixed", [1, 2]), ("none-feasible", [1, 2])])
def test_every_view_has_the_same_constrained_front(url: str, name: str, front: list[int],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # aup pareto
    shown = _json(capsys, "pareto", name, "--storage", url)["trials"]
    assert sorted(t["number"] for t in shown) == front
    # aup compare's * (on_front) and the feasible column
    compared = _json(capsys, "compare", name, "--storage", url)
    assert sorted(t["number"] for t in compared if t["on_front"]) == front
    feasible = {t["number"] for t in compared if t["feasible"]}
    assert feasible == ({1, 2, 3} if name == "mixed" else set())
    # aup show's best trials, aup list's count, both readers
    for reader_url in (url, url.replace("sqlite:///", "sqlite+pysqlite:///")):
        assert sorted(t["number"] for t in _json(capsys, "show", name, "--storage", reader_url)["best"]) == front
        listed = {e["name"]: e for e in _json(capsys, "list", "--storage", reader_url)}
        assert sorted(listed[name]["best_trials"]) == front
    # aup plot's front line
    experiment, trials = open_store(url).load(name)
    assert sorted(p["number"] for p in plot.plot_data(experiment, trials).front) == front
    # the run's end (Optuna FrozenTrials)
    study = optuna.load_study(study_name=name, storage=url)
    assert sorted(t.number for t in best_trials(study, single=False)) == front
    assert sorted(t.number for t in pareto.frozen_front(study.get_trials(), study.directions)) == front


def test_show_and_compare_print_feasibility(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["compare", "mixed", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "feasible" in out and " no " in out and " yes " in out


def test_constrained_front_rule() -> None:
    points = [[0.0, 0.0], [1.0, 1.0], [2.0, 0.5], [0.5, 2.0]]
    assert pareto.constrained_front(points, [0.0, 0.0, 0.0, 0.0]) == [0]
    assert pareto.constrained_front(points, [1.0, 0.0, 0.0, 0.0]) == [1, 2, 3]
    assert pareto.constrained_front(points, [3.0, 1.0, 2.0, 1.0]) == [1, 3]  # equal violations: both kept
    assert pareto.violation({"a": 0.2, "b": -5.0, "c": 0.1}) == pytest.approx(0.3)
    assert pareto.row_violation({"feasible": False}) == float("inf")
    assert pareto.row_violation({}) == 0.0


def test_front_in_json_rows_of_unconstrained_study_has_no_feasible_column(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(storage=url, study_name="plain", directions=["maximize", "minimize"])
    study.set_metric_names(["score", "model_bytes"])
    for score, size in ((0.9, 100.0), (0.8, 50.0), (0.7, 80.0)):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[score, size]))
    compared = _json(capsys, "compare", "plain", "--storage", url)
    assert sorted(t["number"] for t in compared if t["on_front"]) == [0, 1]
    assert all("feasible" not in t for t in compared)
    experiment, trials = open_store(url).load("plain")
    assert tables.front_numbers(experiment, tables.flat_rows(trials)) == {0, 1}


def test_show_and_pareto_say_when_no_trial_is_feasible(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["show", "none-feasible", "--storage", url, "--no-config"]) == 0
    assert "no trial met the constraints, the least-violating" in " ".join(capsys.readouterr().out.split())
    assert main(["pareto", "mixed", "--storage", url]) == 0
    assert "feasible trials first" in capsys.readouterr().out
