"""The per-trial environment keeps library caches out of the user's home."""
from __future__ import annotations

import io
import json
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from aup.runner.experiment import run_experiment

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _keras_homes(tmp_path: Path) -> list[str]:
    exp = {"name": "env", "script": str(SCRIPTS / "env_probe.py"), "workingdir": str(tmp_path),
           "resource": "cpu", "proposer": "random", "target": "max", "n_samples": 1, "n_parallel": 1,
           "random_seed": 1, "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}]}
    (tmp_path / "experiment.json").write_text(json.dumps(exp))
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    result = run_experiment(str(tmp_path / "experiment.json"), url, console=Console(file=io.StringIO()), live=False)
    study = optuna.load_study(study_name=result.study_name, storage=url)
    return [t.user_attrs["keras_home"] for t in study.trials]


def test_trials_get_keras_home_under_aup_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_HOME", raising=False)
    assert _keras_homes(tmp_path) == [str(tmp_path.resolve() / ".aup" / "cache" / "keras")]


def test_users_keras_home_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "mine"))
    assert _keras_homes(tmp_path) == [str(tmp_path / "mine")]
