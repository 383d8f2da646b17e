"""Auptimizer's entry point ``python -m aup.compression EXP.json [--automatic] [--launch_dashboard]``,
its module paths, and ``export_model`` keywords it passes (``save_best_only``, ``**config``).

The end-to-end runs use a tiny model defined in the test's working directory (random weights, no
training): what is checked is the command's behaviour, not compression quality.
"""
from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

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
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))
'''

# Written like Auptimizer's examples: export_model gets save_best_only and the whole job config.
SCRIPT = '''
import os
import sys
import urllib.request

import torch
import aup
from model_def import Net

config = aup.BasicConfig().load(sys.argv[1])
torch.manual_seed(0)
model = Net()
compressor = aup.compression.create_compressor(model, config)
compressor.compress()
port = os.environ.get("DASHBOARD_PORT")
if port:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as answer:
        aup.log_metrics(dashboard_status=answer.status)
if config.get("save_model"):
    compressor.export_model("model.pt", save_best_only=True, dummy_input=torch.zeros(1, 1, 8, 8), **config)
else:
    compressor.apply_speedup(torch.zeros(1, 1, 8, 8))
aup.print_result(float(config["config_list"][0]["sparsity"]))
'''


def experiment(folder: Path, sparsity: Any, **extra: Any) -> Path:
    (folder / "model_def.py").write_text(MODEL)
    (folder / "trial.py").write_text(SCRIPT)
    exp = {"name": "entry", "script": "trial.py", "resource": "cpu",
           "compression": {"framework": "torch", "type": "pruning", "compressor": "l1_filter",
                           "config_list": [{"sparsity": sparsity, "op_types": ["Conv2d"]}]}, **extra}
    path = folder / "exp.json"
    path.write_text(json.dumps(exp))
    return path


def compression_cli(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "aup.compression", *args, "--storage", storage(folder), "--no-live"],
                          cwd=folder, capture_output=True, text=True, timeout=300, env=environ)


def storage(folder: Path) -> str:
    return f"sqlite:///{folder / 'aup.db'}"


def trials(folder: Path) -> list[Any]:
    import optuna

    return optuna.load_study(study_name="entry", storage=storage(folder)).get_trials()


# ---------------------------------------------------------------------------------------------- fast
def test_ranges_without_automatic_is_one_line_exit_2(tmp_path: Path) -> None:
    path = experiment(tmp_path, {"type": "float", "range": [0.2, 0.8]}, proposer="random", n_samples=2,
                      target="max")
    done = compression_cli(tmp_path, str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "add --automatic" in lines[0] and "exp.json" in lines[0], done.stderr
    assert not (tmp_path / "aup.db").exists()


def test_one_time_experiment_keeps_the_config_and_saves_the_model() -> None:
    from aup.compression_cli import one_time_experiment

    raw = {"name": "x", "script": "s.py", "resource": "cpu", "proposer": "random", "n_samples": 5, "n_parallel": 4,
           "target": "min", "compression": {"compressor": "level", "config_list": [{"sparsity": 0.5}]}}
    one = one_time_experiment(raw, "exp.json")
    assert "proposer" not in one and "n_samples" not in one and "n_parallel" not in one
    assert one["resource_args"] == {"save_model": True} and one["target"] == "min"
    assert raw["n_samples"] == 5  # the caller's dict is untouched
    from aup.errors import UserError

    with pytest.raises(UserError, match="parameter_config is set"):
        one_time_experiment({**raw, "parameter_config": [{"name": "lr", "type": "float", "range": [0, 1]}]}, "e")
    with pytest.raises(UserError, match="compression: required key is missing"):
        one_time_experiment({"name": "x"}, "e")


def test_dashboard_port_needs_the_flag(tmp_path: Path) -> None:
    path = experiment(tmp_path, 0.5)
    done = compression_cli(tmp_path, str(path), "--dashboard_port", "0")
    assert done.returncode == 2 and "--dashboard_port needs --launch_dashboard" in done.stderr


def test_entry_point_stays_torch_free_until_a_trial_runs() -> None:
    code = ("import sys, runpy; sys.argv=['x','--help']\n"
            "try:\n    runpy.run_module('aup.compression', run_name='__main__')\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


@pytest.mark.parametrize("module, name", [("sensitivity_analysis", "SensitivityAnalysis"),
                                          ("shape_dependency", "ChannelDependency"),
                                          ("counter", "count_flops_params"),
                                          ("mask_conflict", "fix_mask_conflict")])
def test_auptimizer_module_paths_resolve(module: str, name: str) -> None:
    import aup

    imported = importlib.import_module(f"aup.compression.{module}")
    assert getattr(getattr(aup.compression, module), name) is getattr(imported, name)
    assert callable(getattr(imported, name))


def test_fix_mask_conflict_keeps_the_union_of_tied_channels() -> None:
    import torch
    from torch import nn

    from aup.compression.mask_conflict import fix_mask_conflict

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.c, self.d = nn.Conv2d(4, 2, 1), nn.Conv2d(3, 4, 1)

        def forward(self, x: Any) -> Any:
            return self.c(self.a(x) + self.b(x)) + self.d(x).sum()

    model = Residual()

    def filters(drop: list[int], weight: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = torch.ones_like(weight)
        mask[drop] = 0
        bias = torch.ones(weight.shape[0])
        bias[drop] = 0
        return {"weight": mask, "bias": bias}

    masks = {"a": filters([0, 1], model.a.weight), "b": filters([1, 2], model.b.weight),
             "d": filters([3], model.d.weight)}
    fixed = fix_mask_conflict(masks, model, torch.randn(1, 3, 6, 6))
    for name in ("a", "b"):  # tied by the add: keep what either keeps, drop only channel 1
        assert fixed[name]["weight"].flatten(1).all(1).tolist() == [True, False, True, True]
        assert fixed[name]["bias"].tolist() == [1, 0, 1, 1]
    assert torch.equal(fixed["d"]["weight"], masks["d"]["weight"])  # untied: unchanged
    assert masks["a"]["weight"][0].sum() == 0  # the input is not modified


def test_export_model_ignores_job_config_keys_at_debug_level(tmp_path: Path, caplog: Any) -> None:
    import warnings

    import torch
    from torch import nn

    import aup

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    config = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "level",
              "config_list": [{"sparsity": 0.5, "op_types": ["default"]}], "tid": 3, "save_model": True,
              "folder_name": str(tmp_path / "out")}
    compressor = aup.create_compressor(model, config)
    compressor.compress()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for keywords Auptimizer's examples pass
        with caplog.at_level("DEBUG", logger="aup.compression.torch.base"):
            path = compressor.export_model("m.pt", save_best_only=True, dummy_input=torch.zeros(1, 1, 8, 8), **config)
    assert Path(path).is_file() and Path(path).parent == tmp_path / "out"
    assert "save_best_only" in caplog.text and "config_list" in caplog.text and "tid" in caplog.text


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_one_time_run_is_one_trial_with_the_model_saved_in_its_folder(tmp_path: Path) -> None:
    path = experiment(tmp_path, 0.5)
    done = compression_cli(tmp_path, str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    (trial,) = trials(tmp_path)
    assert trial.state.name == "COMPLETE" and trial.value == 0.5
    job = trial.user_attrs["job_config"]
    assert job["save_model"] is True and job["config_list"] == [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    assert isinstance(trial.user_attrs.get("model_bytes"), (int, float))
    assert (tmp_path / job["folder_name"] / "model.pt").is_file()
    assert f"best model (trial 0): {tmp_path / job['folder_name']}" in done.stdout.replace("\n", "")


@pytest.mark.slow
def test_automatic_runs_the_search(tmp_path: Path) -> None:
    path = experiment(tmp_path, {"type": "float", "range": [0.2, 0.8]}, proposer="random", n_samples=2,
                      target="max", n_parallel=2)
    done = compression_cli(tmp_path, str(path), "--automatic")
    assert done.returncode == 0, done.stdout + done.stderr
    records = trials(tmp_path)
    assert len(records) == 2 and all(t.state.name == "COMPLETE" for t in records)
    assert {t.value for t in records} == {t.params["sparsity (Conv2d)"] for t in records}
    assert all("param_count" in t.user_attrs for t in records)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_launch_dashboard_serves_the_store_while_the_trial_runs(tmp_path: Path) -> None:
    pytest.importorskip("optuna_dashboard")
    port = _free_port()
    path = experiment(tmp_path, 0.5, runtime_args={"env": {"DASHBOARD_PORT": str(port)}})
    done = compression_cli(tmp_path, str(path), "--launch_dashboard", "--dashboard_port", str(port))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"http://127.0.0.1:{port}/dashboard" in done.stderr
    (trial,) = trials(tmp_path)
    assert trial.user_attrs["dashboard_status"] == 200  # the trial itself read the dashboard's API
    with pytest.raises(OSError):  # and it is gone after the run (not a terminal: no lingering server)
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.parametrize("compressor", ["naive", "dorefa"])
def test_quantizer_export_measures_with_an_input_seen_in_training(tmp_path: Path, monkeypatch: Any,
                                                                  compressor: str) -> None:
    """Auptimizer's mnist_no_speedup.py exports a quantizer without a dummy input: the sizes must still
    reach the store (the quantizer keeps one input sample seen while the script trains/evaluates)."""
    import torch
    from torch import nn

    import aup

    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    config = {"compression_framework": "torch", "compression_type": "quantization", "compressor": compressor,
              "config_list": [{"quant_types": ["weight"], "quant_bits": {"weight": 8}, "op_types": ["default"]}]}
    quantizer = aup.create_compressor(model, config)
    quantizer.compress()
    model(torch.randn(5, 1, 8, 8))  # the script's test pass
    quantizer.export_model("q.pt", folder_name=str(tmp_path), save_best_only=True, **config)
    metrics = {k: v for line in channel.read_text().splitlines() for k, v in json.loads(line).get("metrics", {}).items()}
    assert metrics["model_bytes"] > 0 and metrics["param_count"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("compressor", ["activation_apoz_rank_filter", "activation_mean_rank_filter",
                                        "taylor_fo_weight_filter", "l1_filter"])
def test_statistics_pruners_report_sizes_on_export_inside_a_trial(tmp_path: Path, monkeypatch: Any,
                                                                  compressor: str) -> None:
    """Auptimizer's mnist.py flow (statistics from training, apply_speedup, export with speedup): every
    filter pruner must report its sizes (an attribute of the activation pruners once shadowed the
    measuring code and no size reached the store)."""
    import warnings

    import torch
    from torch import nn

    import aup

    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config = {"compression_framework": "torch", "compression_type": "pruning", "compressor": compressor,
              "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "save_model": True,
              "folder_name": str(tmp_path / "out")}
    pruner = aup.create_compressor(model, config, optimizer=optimizer)
    pruner.compress()
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        optimizer.step()
    pruner.apply_speedup(torch.randn(1, 1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # (a failure to measure sends size_missing: no model_bytes below)
        pruner.export_model("m.pt", speedup=True, folder_name=config["folder_name"])
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    last = [r["metrics"] for r in records if r["kind"] == "metrics"][-1]
    assert last["model_bytes"] > 0 and last["param_count"] < sum(p.numel() for p in nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8 * 4 * 4, 3)).parameters())
