"""End to end on digits: aup's Keras examples run through ``python -m aup`` and the store holds the
accuracy and the measured size metrics of every trial (experiments/tensorflow)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from aup import metrics as M
from keras_helpers import needs_keras

pytestmark = [pytest.mark.slow, needs_keras,
              pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")]

ROOT = Path(__file__).resolve().parents[3]
SIZE = (M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS, M.MODEL_BYTES, M.MODEL_BYTES_GZIP, M.SPARSITY, M.LATENCY_MS)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf-experiments")
    shutil.copytree(ROOT / "experiments" / "tensorflow", root / "experiments" / "tensorflow",
                    ignore=shutil.ignore_patterns("jobs", ".aup", "aup_models", "__pycache__"))
    return root


def run(sandbox: Path, name: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
    path = sandbox / "experiments" / "tensorflow" / name
    exp = json.loads(path.read_text())
    exp.update(overrides)
    path.write_text(json.dumps(exp))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUP_CACHE": str(sandbox / "cache")}
    return subprocess.run([sys.executable, "-m", "aup", "run", str(path), "--storage", storage(sandbox)],
                          cwd=sandbox, capture_output=True, text=True, timeout=600, env=env)


def storage(sandbox: Path) -> str:
    return f"sqlite:///{sandbox / 'aup.db'}"


def test_one_time_level_pruning(sandbox: Path) -> None:
    done = run(sandbox, "exp_level.json")
    assert done.returncode == 0, done.stdout + done.stderr
    (trial,) = optuna.load_study(study_name="digits_keras_level", storage=storage(sandbox)).get_trials()
    attrs = trial.user_attrs
    assert trial.state.name == "COMPLETE" and 0.85 < trial.value <= 1.0
    assert attrs["accuracy"] == trial.value and attrs["baseline_score"] >= 0.9
    for name in SIZE:
        assert isinstance(attrs.get(name), (int, float)), (name, attrs)
    assert attrs[M.SPARSITY] == pytest.approx(0.8, abs=0.01)
    assert attrs[M.LAYER_SPARSITY] == pytest.approx({"conv1": 0.8, "conv2": 0.8, "fc1": 0.8, "fc2": 0.8}, abs=0.01)
    assert attrs[M.NONZERO_PARAMS] < 0.25 * attrs["baseline_nonzero_params"]
    assert attrs[M.MACS] < 0.25 * attrs["baseline_macs"]
    assert attrs[M.MODEL_BYTES] < 0.4 * attrs["baseline_model_bytes"]


def test_automatic_per_layer_sparsity_search(sandbox: Path) -> None:
    done = run(sandbox, "exp_auto_level.json", n_samples=2, n_parallel=2)
    assert done.returncode == 0, done.stdout + done.stderr
    records = optuna.load_study(study_name="digits_keras_auto_level", storage=storage(sandbox)).get_trials()
    assert len(records) == 2 and all(t.state.name == "COMPLETE" for t in records)
    for trial in records:
        attrs = trial.user_attrs
        assert set(trial.params) == {"sparsity (conv1)", "sparsity (conv2)", "sparsity (fc1)", "sparsity (fc2)"}
        for name in SIZE:
            assert isinstance(attrs.get(name), (int, float)), (name, attrs)
        for layer in ("conv1", "conv2", "fc1", "fc2"):
            assert attrs[M.LAYER_SPARSITY][layer] == pytest.approx(trial.params[f"sparsity ({layer})"], abs=0.01)
    study = optuna.load_study(study_name="digits_keras_auto_level", storage=storage(sandbox))
    best = Path(study.user_attrs["best_model_path"])  # save_model: the best trial's files are kept
    assert best.name == "digits_keras_auto_level" and (best / "digits_compressed.keras").exists()
    assert study.best_trial.user_attrs[M.MODEL_BYTES] == (best / "digits_compressed.aup.npz").stat().st_size
    by_nonzero = sorted(records, key=lambda t: t.user_attrs[M.NONZERO_PARAMS])
    sizes = [t.user_attrs[M.MODEL_BYTES] for t in by_nonzero]
    assert sizes == sorted(sizes)  # fewer non-zero weights, smaller artifact
