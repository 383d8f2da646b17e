"""Every compression trial gets its size metrics, or one line in its log and ``size_missing`` saying why.

Auptimizer's compression examples create the compressor inside ``main()`` and export only when
``save_model`` is set; ``mnist_amc.py`` (its AMC example) ran through aup with a score and no size.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from aup import metrics as M

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SIZES = (M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS, M.MODEL_BYTES)


def run_one(tmp_path: Path, script: str, compression: dict[str, Any], **env: str) -> optuna.trial.FrozenTrial:
    exp = {"name": "sized", "script": str(SCRIPTS / script), "resource": "cpu", "workingdir": str(tmp_path),
           "compression": compression}
    if env:
        exp["runtime_args"] = {"env": env}
    (tmp_path / "exp.json").write_text(json.dumps(exp))
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    done = subprocess.run([sys.executable, "-m", "aup", "run", "exp.json", "--storage", url, "--no-live"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(SCRIPTS.parents[1])})
    assert done.returncode == 0, done.stdout + done.stderr
    [trial] = optuna.load_study(study_name="sized", storage=url).get_trials()
    assert trial.state.name == "COMPLETE"
    return trial


LEVEL = {"framework": "torch", "type": "pruning", "compressor": "level",
         "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d", "Linear"]}]}


@pytest.mark.slow  # a trial script in a subprocess, model measured
def test_a_compressor_local_to_main_is_still_measured_at_the_end(tmp_path: Path) -> None:
    attrs = run_one(tmp_path, "compress_in_main.py", LEVEL).user_attrs
    assert all(isinstance(attrs.get(name), (int, float)) for name in SIZES), attrs
    assert M.SIZE_MISSING not in attrs


@pytest.mark.slow  # trial scripts in subprocesses
@pytest.mark.parametrize("case, why", [("broken", "exporting the model to measure it failed"),
                                       ("none", "the script reported no size metrics")])
def test_no_size_means_one_line_and_a_stored_reason(case: str, why: str, tmp_path: Path) -> None:
    trial = run_one(tmp_path, "compress_in_main.py", LEVEL, AUP_TEST_SIZE_CASE=case)
    assert not any(name in trial.user_attrs for name in SIZES)
    assert trial.user_attrs[M.SIZE_MISSING].startswith(why)
    log = Path(trial.user_attrs["log_path"]).read_text()
    assert [line for line in log.splitlines() if line.startswith("aup: no size metrics for this trial: ")] == [
        f"aup: no size metrics for this trial: {trial.user_attrs[M.SIZE_MISSING]}"]


@pytest.mark.slow
def test_auptimizers_mnist_amc_shape_records_its_size(tmp_path: Path) -> None:
    """``mnist_amc.py`` as Auptimizer ships it (same calls and arguments; digits and a small
    MobileNetV2 instead of MNIST and torch.hub), with ``exp_amc.json``'s compression section."""
    trial = run_one(tmp_path, "mnist_amc_shaped.py", {"framework": "torch", "type": "pruning", "compressor": "amc",
                                                      "config_list": [{"op_types": ["Conv2d", "Linear"]}]})
    assert trial.value is not None
    assert all(isinstance(trial.user_attrs.get(name), (int, float)) for name in SIZES), trial.user_attrs
    assert trial.user_attrs[M.PARAM_COUNT] > 0 and trial.user_attrs[M.NONZERO_PARAMS] > 0
