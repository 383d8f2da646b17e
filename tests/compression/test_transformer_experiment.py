"""End to end: the transformer example (heads + MLP channels, then int8) runs through the runner with a
tiny budget and records accuracy, the deployed size and the shrink in the store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from aup import metrics as M

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_heads_mlp_int8_example_records_accuracy_and_a_smaller_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments",
                    ignore=shutil.ignore_patterns("jobs", ".aup", "aup_models"))
    path = tmp_path / "experiments/transformer/exp_heads_mlp_int8.json"
    exp = json.loads(path.read_text())
    exp.update(n_samples=2, population_size=2)
    path.write_text(json.dumps(exp))
    storage = f"sqlite:///{tmp_path / 'aup.db'}"
    env = {**os.environ, "AUP_CACHE": os.environ.get("AUP_CACHE", str(tmp_path / "cache"))}
    done = subprocess.run([sys.executable, "-m", "aup", "run", str(path), "--storage", storage], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name=exp["name"], storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for trial in complete:
        attrs = trial.user_attrs
        assert 0.5 < attrs["accuracy"] <= 1.0 and trial.values[1] == attrs[M.MODEL_BYTES]
        assert attrs[M.PARAM_COUNT] < attrs["baseline_param_count"]
        assert attrs[M.MACS] < attrs["baseline_macs"]
        assert attrs[M.SPARSITY] > 0
