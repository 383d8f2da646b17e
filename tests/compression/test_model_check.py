"""Op names and types of a compression section checked against the model before the trials: with
``"model": "module:callable"`` before the first trial, otherwise the first trial's mismatch stops
the run. Messages name the user's own entry, not the expanded one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aup.compression import model_check
from aup.compression.search_space import CompressionJobConfigBuilder, check_compression

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [["conv1", "Conv2d"], ["conv2", "Conv2d"], ["relu", "ReLU"], ["fc", "Linear"]]

MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))
'''

SCRIPT = '''
import sys
import time

import aup
from model_def import Net

config = aup.BasicConfig().load(sys.argv[1])
time.sleep(float(config.get("config_list")[0].get("sparsity", 0)))  # trials overlap
aup.compression.create_compressor(Net(), config).compress()
aup.print_result(1.0)
'''


def section(config_list: list[Any], **extra: Any) -> dict[str, Any]:
    return {"framework": "torch", "type": "pruning", "compressor": "l1_filter", "config_list": config_list, **extra}


SPARSITY = {"type": "float", "range": [0.2, 0.8]}


def test_unknown_op_name_names_the_users_entry_and_the_layers() -> None:
    builder = CompressionJobConfigBuilder(section([{"sparsity": 0.5, "op_types": ["Conv2d"]},
                                                   {"sparsity": SPARSITY, "op_names": ["conv1", "conv3"]}]))
    problems, warnings = model_check.check_entries(builder, LAYERS, "model_def:Net")
    assert len(problems) == 1 and not warnings
    assert problems[0].startswith("compression.config_list[1].op_names: the model model_def:Net has no layer 'conv3'")
    assert "did you mean 'conv2'?" in problems[0] and "conv2 (Conv2d), relu (ReLU), fc (Linear)" in problems[0]


def test_absent_op_type_warns_and_a_list_matching_nothing_is_a_problem() -> None:
    builder = CompressionJobConfigBuilder(section([{"sparsity": 0.5, "op_types": ["Conv1d"]}], compressor="level"))
    problems, warnings = model_check.check_entries(builder, LAYERS, "m:f")
    assert warnings == ["compression.config_list[0].op_types: the model m:f has no Conv1d layer "
                        "(the entry selects nothing of that type)"]
    assert problems and problems[0].startswith("compression.config_list: no layer of the model m:f matches")
    fine = CompressionJobConfigBuilder(section([{"sparsity": 0.5, "op_types": ["Conv2d"]},
                                                {"exclude": True, "op_names": ["conv2"]}]))
    assert model_check.check_entries(fine, LAYERS, "m:f") == ([], [])


def test_trial_mismatch_is_relocated_to_the_users_entry() -> None:
    builder = CompressionJobConfigBuilder(section([{"sparsity": 0.5, "op_types": ["Conv2d"]},
                                                   {"sparsity": SPARSITY, "op_names": ["conv1", "conv3"]}]))
    # the job config's config_list is expanded: [entry 0, conv1, conv3]; the trial names index 2
    record = {"compressor": "l1_filter", "entry": 2, "layers": LAYERS,
              "message": "config_list[2].op_names: no module named 'conv3' in the model (did you mean 'conv2'?)"}
    line = model_check.mismatch_line(builder, builder.build({"sparsity (conv1)": 0.5, "sparsity (conv3)": 0.5}),
                                     record)
    assert line.startswith("compression.config_list[1].op_names: no module named 'conv3'")
    assert line.endswith("the model's layers: conv1 (Conv2d), conv2 (Conv2d), relu (ReLU), fc (Linear)")
    nothing = {"compressor": "l1_filter", "entry": None, "layers": [], "message": "config_list: no layer matches"}
    assert model_check.mismatch_line(builder, {}, nothing) == "compression.config_list: no layer matches"
    assert model_check.mismatch_line(None, {}, nothing) == "config_list: no layer matches"


def test_model_reference_must_be_module_colon_callable() -> None:
    problems = check_compression(section([{"sparsity": 0.5, "op_types": ["Conv2d"]}], model="model_def.Net"))
    assert len(problems) == 1 and problems[0].startswith("compression.model: expected \"module:callable\"")
    assert not check_compression(section([{"sparsity": 0.5, "op_types": ["Conv2d"]}], model="model_def:Net"))
    builder = CompressionJobConfigBuilder(section([{"sparsity": 0.5, "op_types": ["Conv2d"]}], model="m:build"))
    assert builder.model_ref == "m:build" and "model" not in builder.build({})  # never reaches the trial


@pytest.mark.slow  # probes a model in a child process (imports torch)
def test_probe_lists_the_layers_of_a_model_built_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "model_def.py").write_text(MODEL)
    assert model_check.probe_layers("model_def:Net", tmp_path) == [
        ["conv1", "Conv2d"], ["conv2", "Conv2d"], ["fc", "Linear"]]
    with pytest.raises(ValueError, match="cannot build the model 'model_def:Missing'.*AttributeError"):
        model_check.probe_layers("model_def:Missing", tmp_path)


# ---------------------------------------------------------------------------------------------- end to end
def write(folder: Path, config_list: list[Any], **extra: Any) -> Path:
    (folder / "model_def.py").write_text(MODEL)
    (folder / "trial.py").write_text(SCRIPT)
    exp = {"name": "ops", "script": "trial.py", "resource": "cpu", "proposer": "random", "target": "max",
           "n_samples": 6, "n_parallel": 2, "job_failure": {"ignore_fail": True},
           "compression": section(config_list, **extra.pop("compression_extra", {})), **extra}
    path = folder / "exp.json"
    path.write_text(json.dumps(exp))
    return path


def run(folder: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aup", "run", str(path), "--storage", f"sqlite:///{folder}/aup.db",
                           "--no-live"], cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_named_model_catches_a_wrong_op_name_before_any_trial(tmp_path: Path) -> None:
    path = write(tmp_path, [{"sparsity": SPARSITY, "op_names": ["conv1", "conv3"]}],
                 compression_extra={"model": "model_def:Net"})
    done = run(tmp_path, path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "compression.config_list[0].op_names" in lines[0] and "conv2 (Conv2d)" in lines[0]
    assert not (tmp_path / "aup.db").exists() and not (tmp_path / "jobs").exists()


@pytest.mark.slow
def test_first_trial_mismatch_stops_the_experiment(tmp_path: Path) -> None:
    import optuna

    path = write(tmp_path, [{"sparsity": SPARSITY, "op_names": ["conv1", "conv3"]}])
    done = run(tmp_path, path)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "compression.config_list[0].op_names: no module named 'conv3'" in out
    assert "the model's layers: conv1 (Conv2d), conv2 (Conv2d), fc (Linear)" in out
    trials = optuna.load_study(study_name="ops", storage=f"sqlite:///{tmp_path}/aup.db").get_trials()
    started = [t for t in trials if t.state.name != "WAITING"]  # an interrupted trial is queued again for resume
    assert len(started) <= 2 < 6  # stopped at the first failure although ignore_fail is true
    failed = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("interrupted")]
    # the two trials running side by side may both meet the mismatch before the runner stops: every
    # failure is that mismatch, and none comes from a trial started after the first one failed
    assert 1 <= len(failed) <= len(started)
    assert all(t.user_attrs["status_reason"].startswith("compression.config_list[0]") for t in failed)
