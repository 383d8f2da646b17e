"""End to end: the compression examples run through the runner with tiny budgets; the store holds
one record per trial with accuracy and every size metric, sizes shrink as sparsity grows, and the
multi-objective example yields a Pareto front. The pretrained digits CNN is cached under AUP_CACHE
(trained once, a few seconds)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from aup import metrics as M

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "experiments"
pytestmark = pytest.mark.slow


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "experiments",
                    ignore=shutil.ignore_patterns("jobs", ".aup", "aup_models", "iterative", "search", "hpo_digits"))
    return tmp_path


def run(sandbox: Path, relative: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
    path = sandbox / relative
    exp = json.loads(path.read_text())
    exp.update(overrides)
    path.write_text(json.dumps(exp))
    return subprocess.run([sys.executable, "-m", "aup", "run", str(path), "--storage", storage(sandbox)],
                          cwd=sandbox, capture_output=True, text=True, timeout=300)


def storage(sandbox: Path) -> str:
    return f"sqlite:///{sandbox / 'aup.db'}"


def trials(sandbox: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage(sandbox)).get_trials()


def test_invalid_range_exits_2_before_any_trial(sandbox: Path) -> None:
    section = json.loads((sandbox / "experiments/pruning/exp_auto_fpgm_random.json").read_text())["compression"]
    section["config_list"][0]["sparsity"]["range"] = [0.1, 1.0]
    done = run(sandbox, "experiments/pruning/exp_auto_fpgm_random.json", compression=section)
    assert done.returncode == 2, done.stderr
    assert "compression.config_list[0].sparsity: range [0.1, 1.0] reaches 1.0" in done.stderr + done.stdout
    assert not (sandbox / "aup.db").exists() or not optuna.get_all_study_summaries(storage(sandbox))


def test_shared_sparsity_sweep_records_sizes_that_shrink(sandbox: Path) -> None:
    done = run(sandbox, "experiments/pruning/exp_auto_fpgm_no_expand.json", proposer="sequence",
               n_parallel=2, compression={"framework": "torch", "type": "pruning", "compressor": "fpgm", "config_list": [
                   {"sparsity": {"type": "float", "range": [0.25, 0.75], "interval": 0.25},
                    "op_names": ["conv1", "conv2"], "op_types": ["Conv2d"], "expand_op_names": False}]})
    assert done.returncode == 0, done.stdout + done.stderr
    records = trials(sandbox, "digits_auto_fpgm_no_expand")
    assert len(records) == 3 and all(t.state.name == "COMPLETE" for t in records)
    for trial in records:
        attrs = trial.user_attrs
        assert attrs["accuracy"] == trial.value and 0.5 < trial.value <= 1.0
        for name in (M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS, M.MODEL_BYTES, M.SPARSITY):
            assert isinstance(attrs.get(name), (int, float)), (name, attrs)
        job = json.loads(Path(attrs["job_config_path"]).read_text())
        assert job == attrs["job_config"]  # the file and the database agree
        assert job["config_list"][0]["sparsity"] == trial.params["sparsity (conv1, conv2)"]
        assert "expand_op_names" not in job["config_list"][0]
    by_sparsity = sorted(records, key=lambda t: t.params["sparsity (conv1, conv2)"])
    # the trial script shrinks the pruned model: the deployed parameters and the file shrink too
    for key in (M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS, M.MODEL_BYTES):
        sizes = [t.user_attrs[key] for t in by_sparsity]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1], (key, sizes)
    for trial in records:  # against the dense model measured in the same trial
        assert trial.user_attrs[M.PARAM_COUNT] < trial.user_attrs["baseline_param_count"]
        assert trial.user_attrs[M.MODEL_BYTES] < trial.user_attrs["baseline_model_bytes"]


def test_multi_objective_pipeline_gives_a_pareto_front(sandbox: Path) -> None:
    done = run(sandbox, "experiments/pipeline/exp_multi_objective.json", n_samples=4, population_size=2)
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name="digits_accuracy_vs_size", storage=storage(sandbox))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    for trial in complete:
        assert trial.values[1] == trial.user_attrs[M.MODEL_BYTES]
        assert trial.user_attrs[M.WEIGHT_BITS] < 9  # quantized integers are stored
        stages = trial.user_attrs["job_config"]["compression_pipeline"]
        assert [s["compressor"] for s in stages] == ["l1_filter", "qat"]
        assert trial.user_attrs["baseline_score"] > 0.9  # the dense accuracy, for the constraint
        feasible = trial.values[0] >= trial.user_attrs["baseline_score"] - 0.05 and \
            trial.values[1] <= 0.25 * trial.user_attrs["baseline_model_bytes"]
        assert trial.user_attrs["feasible"] == feasible
    front = study.best_trials
    assert front and all(t.user_attrs["feasible"] for t in front)
    for a in front:  # nobody on the front is dominated by another complete trial
        assert not any(b.values[0] >= a.values[0] and b.values[1] <= a.values[1] and b.values != a.values
                       for b in complete if b.user_attrs.get("feasible", True))


def test_mixed_precision_example_ships_the_searched_bits_and_stores_the_profile(sandbox: Path) -> None:
    done = run(sandbox, "experiments/mixed/exp_mixed_digits.json", n_samples=2, n_parallel=1, population_size=2)
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="digits_mixed_precision", storage=storage(sandbox))
    profile = study.user_attrs["quant_sensitivity"]
    assert profile["bits"] == 4 and set(profile["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    for trial in study.get_trials():
        attrs = trial.user_attrs
        asked = {name: trial.params[f"quant_bits.weight ({name})"] for name in ("conv1", "conv2", "fc1", "fc2")}
        assert attrs["layer_bits_shipped"] == asked  # {32, 8, 4} all ship as asked
        assert attrs["model_bytes_packed"] != attrs["model_bytes"] and attrs["latency_ms"] > 0
    shown = subprocess.run([sys.executable, "-m", "aup", "show", "digits_mixed_precision", "--storage",
                            storage(sandbox)], cwd=sandbox, capture_output=True, text=True, timeout=120)
    assert "Quantization sensitivity" in shown.stdout
