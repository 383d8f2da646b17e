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


def _keras_homes(tmp_path: Path, attr: str = "keras_home") -> list[str]:
    exp = {"name": "env", "script": str(SCRIPTS / "env_probe.py"), "workingdir": str(tmp_path),
           "resource": "cpu", "proposer": "random", "target": "max", "n_samples": 1, "n_parallel": 1,
           "random_seed": 1, "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}]}
    (tmp_path / "experiment.json").write_text(json.dumps(exp))
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    result = run_experiment(str(tmp_path / "experiment.json"), url, console=Console(file=io.StringIO()), live=False)
    study = optuna.load_study(study_name=result.study_name, storage=url)
    return [t.user_attrs[attr] for t in study.trials]


def test_trials_get_keras_home_under_aup_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_HOME", raising=False)
    assert _keras_homes(tmp_path) == [str(tmp_path.resolve() / ".aup" / "cache" / "keras")]


def test_trials_get_mplconfigdir_under_aup_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing TensorFlow imports matplotlib, which writes ~/.cache/matplotlib and ~/.config/matplotlib."""
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    assert _keras_homes(tmp_path, "mplconfigdir") == [str(tmp_path.resolve() / ".aup" / "cache" / "matplotlib")]
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mine"))
    assert _keras_homes(tmp_path, "mplconfigdir") == [str(tmp_path / "mine")]


def test_users_keras_home_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "mine"))
    assert _keras_homes(tmp_path) == [str(tmp_path / "mine")]


def test_ray_node_without_shared_storage_moves_aups_keras_home_to_its_copy(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's default KERAS_HOME names a folder on the runner's machine; a node with its own copy
    of the working dir gets the same folder under that copy."""
    import os

    from aup.runner import ray_launcher

    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "train.py").write_text("import os\nprint('KERAS_HOME=' + os.environ['KERAS_HOME'])\n")
    monkeypatch.chdir(node_dir)
    runner_dir = tmp_path / "runner"
    spec = {"command": ["/not/the/runner/python", "/runner/only/train.py"], "python": True, "script_rel": "train.py",
            "job_path": str(runner_dir / "jobs" / "t-0.json"), "job_text": "{}", "workingdir": str(runner_dir),
            "env": {"KERAS_HOME": str(runner_dir / ".aup" / "cache" / "keras")}, "return_dirs": []}
    log = b"".join(item.get("log", b"") for item in ray_launcher.run_on_node(spec)).decode()
    assert f"KERAS_HOME={os.path.join(os.getcwd(), '.aup', 'cache', 'keras')}" in log
    spec["env"] = {"KERAS_HOME": str(tmp_path / "mine")}  # the user's own setting travels unchanged
    log = b"".join(item.get("log", b"") for item in ray_launcher.run_on_node(spec)).decode()
    assert f"KERAS_HOME={tmp_path / 'mine'}" in log
