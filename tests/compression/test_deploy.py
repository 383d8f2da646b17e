"""The deployable artifact: ONNX export, ORT static int8, load_deployed, and the metrics of what ships.

Agreement tolerance: top-1 agreement between the deployed ONNX model and the in-memory model of
at least 99% on the digits test set (450 images), for every quantizer and for prune-then-quantize.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import aup  # noqa: E402
from aup.compression import load_deployed  # noqa: E402
from aup.compression.torch import base as base_module  # noqa: E402
from aup.compression.torch.deploy import baseline as baseline_module  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.deploy.settings import CalibrationRecorder, DeploySettings, agreement, export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUANTIZERS = {
    "naive": [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}],
    "qat": [{"quant_types": ["weight", "output"], "quant_bits": {"weight": 8, "output": 8}, "op_types": ["default"]}],
    "dorefa": [{"quant_types": ["weight"], "quant_bits": 4, "op_types": ["default"]}],
    "bnn": [{"quant_types": ["weight", "output"], "quant_bits": 1, "op_types": ["Conv2d"]}],
}


def _job(name: str, config_list: list, kind: str = "quantization", **extra) -> dict:
    return {"compression_framework": "torch", "compression_type": kind, "compressor": name,
            "config_list": config_list, **extra}


pytestmark = pytest.mark.usefixtures("fresh_trial_state")  # each test is its own trial (conftest)


@pytest.fixture(scope="module")
def digits():
    return zoo.load_digits_tensors(seed=0)


@pytest.fixture(scope="module")
def pretrained(digits):
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):
        zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
    return model.state_dict()


def _trained(state) -> torch.nn.Module:
    model = zoo.DigitsCNN()
    model.load_state_dict(state)
    return model


def _channel_metrics(path: Path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {k: v for r in records if r["kind"] == "metrics" for k, v in r["metrics"].items()}


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_every_quantizer_deploys_at_its_bits_and_agrees(name, digits, pretrained, tmp_path):
    model = _trained(pretrained)
    dense_onnx = export_onnx(_trained(pretrained).eval(), digits.x_test[:1], tmp_path / "dense.onnx")
    quantizer = aup.create_compressor(model, _job(name, QUANTIZERS[name]))
    quantizer.compress()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=1)  # calibration batches come from here
    quantizer.step()
    path = quantizer.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")
    deployed = load_deployed(path)
    model.eval()
    assert agreement(deployed, model, [digits.x_test]) >= 0.99
    assert abs(_accuracy(deployed, digits.x_test, digits.y_test) - _accuracy(model, digits.x_test, digits.y_test)) <= 0.01
    assert os.path.getsize(path) < os.path.getsize(dense_onnx)
    graph = onnx.load(path).graph
    types = {i.data_type for i in graph.initializer}
    if name in ("naive", "qat"):  # 8 bits: real int8 weights
        assert onnx.TensorProto.INT8 in types
    else:  # dorefa 4 bits, bnn 1 bit: convolutions as UINT4, linears (dorefa) as MatMulNBits, never int8
        assert onnx.TensorProto.UINT4 in types and onnx.TensorProto.INT8 not in types
        assert (name == "dorefa") == any(n.op_type == "MatMulNBits" for n in graph.node)


@pytest.mark.slow
def test_prune_then_quantize_pipeline_deploys_shrunk_int8(digits, pretrained, tmp_path):
    model = _trained(pretrained)
    config = {"compression_pipeline": [
        _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "pruning"),
        _job("naive", QUANTIZERS["naive"])]}
    pipeline = aup.create_compressor(model, config, dummy_input=digits.x_train[:8])
    pipeline.compress()
    zoo.train_epoch(model, digits.x_train, digits.y_train, torch.optim.Adam(model.parameters(), lr=1e-3), seed=2)
    path = pipeline.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")
    model.eval()
    deployed = load_deployed(path)
    assert agreement(deployed, model, [digits.x_test]) >= 0.99
    weights = {i.name: list(i.dims) for i in onnx.load(path).graph.initializer}
    assert any("conv1.weight" in name and dims[0] == 8 for name, dims in weights.items())  # shrunk 16 -> 8


def test_structured_pruner_exports_shrunk_onnx_and_leaves_the_model(tmp_path):
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    pruner = aup.create_compressor(model, _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "pruning"))
    pruner.compress()
    x = torch.randn(16, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        masked = model(x)
    path = pruner.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")
    assert model.conv1.out_channels == 16  # the live model is not shrunk by the export
    graph = onnx.load(path).graph
    convs = [i for i in graph.initializer if len(i.dims) == 4]
    assert sorted(c.dims[0] for c in convs) == [8, 16]  # conv1 16 -> 8, conv2 32 -> 16
    assert torch.allclose(load_deployed(path)(x), masked, atol=1e-4)


def test_quantizer_that_never_exports_reports_size_at_trial_end(tmp_path, monkeypatch):
    channel = tmp_path / "exp-0.channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    monkeypatch.setenv("AUP_TRIAL", "0")
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    quantizer = aup.create_compressor(model, _job("naive", QUANTIZERS["naive"]))
    quantizer.compress()
    for _ in range(4):
        model(torch.rand(64, 1, 8, 8))
    aup.print_result(0.5)
    base_module.report_at_trial_end()
    metrics = _channel_metrics(channel)
    for name in ("param_count", "nonzero_params", "macs", "model_bytes", "model_bytes_packed", "weight_bits",
                 "latency_ms", "latency_ms_torch", "deploy_agreement", "baseline_model_bytes", "baseline_latency_ms"):
        assert name in metrics, name
    assert metrics["weight_bits"] < 10
    assert metrics["model_bytes"] < 0.4 * metrics["baseline_model_bytes"]  # int8 ONNX vs the dense fp32 ONNX
    assert metrics["deploy_agreement"] >= 0.9  # random weights: near-tied logits (trained: >= 0.99, slow tests)
    assert (tmp_path / "exp.baseline.json").exists()
    lines = channel.read_text().count('"metrics"')
    base_module.report_at_trial_end()  # reports once
    assert channel.read_text().count('"metrics"') == lines


def test_compressor_whose_model_never_ran_reports_what_it_can(tmp_path, monkeypatch):
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model = zoo.DigitsCNN()
    quantizer = aup.create_compressor(model, _job("dorefa", QUANTIZERS["dorefa"]))
    quantizer.compress()
    base_module.report_at_trial_end()
    metrics = _channel_metrics(channel)
    assert metrics["param_count"] == sum(p.numel() for p in model.parameters())
    assert metrics["model_bytes"] > 0 and metrics["weight_bits"] < 8
    assert "latency_ms" not in metrics and "macs" not in metrics


def test_pruner_with_deploy_setting_times_the_onnx_file(tmp_path, monkeypatch):
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model = zoo.DigitsCNN()
    job = _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "pruning",
               compression_deploy={"format": "onnx", "int8": "none"})
    pruner = aup.create_compressor(model, job, dummy_input=torch.randn(4, 1, 8, 8))
    pruner.compress()
    pruner.apply_speedup(torch.randn(1, 1, 8, 8))
    assert not channel.exists()  # apply_speedup no longer reports on its own: the end of the trial does
    base_module.report_at_trial_end()
    metrics = _channel_metrics(channel)
    assert metrics["deploy_agreement"] == 1.0 and metrics["latency_ms"] > 0 and metrics["latency_ms_torch"] > 0
    assert metrics["model_bytes"] < metrics["baseline_model_bytes"]


def test_early_size_with_a_deploy_setting_is_the_deployed_files(tmp_path, monkeypatch):
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    monkeypatch.setenv("AUP_EARLY_SIZE", "1")  # the runner's multi-objective early stopping asks for it
    job = _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "pruning",
               compression_deploy={"format": "onnx", "int8": "none"})
    pruner = aup.create_compressor(zoo.DigitsCNN(), job, dummy_input=torch.randn(4, 1, 8, 8))
    pruner.compress()
    pruner.apply_speedup(torch.randn(1, 1, 8, 8))
    early = _channel_metrics(channel)
    assert "latency_ms" not in early and "deploy_agreement" not in early  # sizes only, no timing
    base_module.report_at_trial_end()
    final = _channel_metrics(channel)
    assert final["deploy_agreement"] == 1.0 and early["model_bytes"] == final["model_bytes"]


def test_baseline_is_measured_once_per_experiment(tmp_path, monkeypatch):
    calls = []
    real = baseline_module._measure
    monkeypatch.setattr(baseline_module, "_measure", lambda *a: calls.append(1) or real(*a))
    for trial in (0, 1):
        monkeypatch.setenv("AUP_CHANNEL", str(tmp_path / f"exp-{trial}.channel.jsonl"))
        monkeypatch.setenv("AUP_TRIAL", str(trial))
        monkeypatch.setitem(baseline_module._state, "fingerprint", None)
        monkeypatch.setitem(baseline_module._state, "model", None)
        monkeypatch.setitem(baseline_module._state, "metrics", {})
        pruner = aup.create_compressor(zoo.DigitsCNN(), _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
                                                             "pruning"), dummy_input=torch.randn(2, 1, 8, 8))
        pruner.compress()
        pruner.export_model("model.pth", folder_name=str(tmp_path / str(trial)))
        metrics = _channel_metrics(tmp_path / f"exp-{trial}.channel.jsonl")
        assert "baseline_param_count" in metrics and "latency_ms_ratio" in metrics
        # a torch-latency trial keeps its dense copy to time it side by side (an ONNX one does not:
        # test_latency_side_by_side), but the baseline's other metrics are measured once
        assert baseline_module._state["model"] is not None
    assert len(calls) == 1
    monkeypatch.setitem(baseline_module._state, "fingerprint", None)
    monkeypatch.setitem(baseline_module._state, "model", None)
    monkeypatch.setitem(baseline_module._state, "metrics", {})
    monkeypatch.setenv("AUP_CHANNEL", str(tmp_path / "exp-2.channel.jsonl"))
    monkeypatch.setenv("AUP_TRIAL", "2")
    wider = aup.create_compressor(zoo.DigitsCNN(width=8), _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
                                                               "pruning"), dummy_input=torch.randn(2, 1, 8, 8))
    wider.compress()
    wider.export_model("model.pth", folder_name=str(tmp_path / "2"))
    assert len(calls) == 2  # a different architecture measures its own baseline


def _new_trial(monkeypatch, tmp_path, trial: int) -> Path:
    channel = tmp_path / f"exp-{trial}.channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    monkeypatch.setenv("AUP_TRIAL", str(trial))
    monkeypatch.setitem(baseline_module._state, "fingerprint", None)
    monkeypatch.setitem(baseline_module._state, "model", None)
    monkeypatch.setitem(baseline_module._state, "metrics", {})
    return channel


@pytest.mark.parametrize("direct", [False, True], ids=["create_compressor", "constructed"])
def test_a_quantizer_trial_after_pruner_trials_measures_the_deployed_baseline(tmp_path, monkeypatch, direct):
    """Trials choosing between a pruner (torch metrics) and a quantizer (a deployed int8 file) need
    both baselines: the first quantizer trial copies the dense model although a torch baseline exists."""
    pytest.importorskip("onnxruntime")
    from aup.compression.torch.quantization import NaiveQuantizer

    x = torch.randn(2, 1, 8, 8)
    channel = _new_trial(monkeypatch, tmp_path, 0)
    pruner = aup.create_compressor(zoo.DigitsCNN(), _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
                                                         "pruning"), dummy_input=x)
    pruner.compress()
    pruner.export_model("model.pth", folder_name=str(tmp_path / "0"))
    assert "baseline_latency_ms_torch" in _channel_metrics(channel)
    channel = _new_trial(monkeypatch, tmp_path, 1)
    config_list = [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}]
    model = zoo.DigitsCNN()
    quantizer = (NaiveQuantizer(model, config_list) if direct
                 else aup.create_compressor(model, _job("naive", config_list)))
    assert baseline_module._state["model"] is not None  # a deployed baseline is still missing: copied
    quantizer.compress()
    model(x)
    quantizer.export_model("model.pth", folder_name=str(tmp_path / "1"), dummy_input=x)
    metrics = _channel_metrics(channel)
    assert metrics["model_bytes"] < metrics["baseline_model_bytes"]
    assert "baseline_deploy_agreement" in metrics or "baseline_latency_ms" in metrics
    keys = json.loads((tmp_path / "exp.baseline.json").read_text())
    assert sorted(key.rsplit("|", 1)[1] for key in keys) == ["onnx", "torch"]
    _new_trial(monkeypatch, tmp_path, 2)
    aup.create_compressor(zoo.DigitsCNN(), _job("naive", config_list))
    assert baseline_module._state["model"] is None  # both kinds measured now: nothing copied


@pytest.mark.slow
def test_script_that_never_exports_reports_at_exit(tmp_path):
    script = tmp_path / "trial.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, aup
        from aup.compression.torch import zoo
        torch.set_num_threads(1)
        model = zoo.DigitsCNN()
        q = aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
            "compressor": "qat", "config_list": [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}]})
        q.compress()
        model(torch.randn(8, 1, 8, 8))
        aup.print_result(0.9)
    """))
    channel = tmp_path / "run-3.channel.jsonl"
    env = {**os.environ, "AUP_CHANNEL": str(channel), "AUP_TRIAL": "3", "PYTHONPATH": str(ROOT),
           "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    metrics = _channel_metrics(channel)
    assert {"param_count", "model_bytes", "weight_bits", "latency_ms", "deploy_agreement"} <= set(metrics)
    assert not (tmp_path / "xdg" / "Microsoft").exists()  # onnxruntime's cache went to aup's folder


def test_calibration_recorder_keeps_a_bounded_reservoir():
    model = torch.nn.Linear(4, 2)
    recorder = CalibrationRecorder(model, max_batches=3, max_rows=5)
    for i in range(50):
        model(torch.full((8, 4), float(i)))
    assert recorder.first.shape == (1, 4) and float(recorder.first[0, 0]) == 0.0
    assert len(recorder.batches) == 3 and all(b[0].shape == (5, 4) for b in recorder.batches)
    assert any(float(b[0][0, 0]) > 3 for b in recorder.batches)  # later batches replace early ones
    with recorder.pause():
        model(torch.zeros(1, 4))
    assert recorder.seen == 50


def test_deploy_settings_are_checked():
    assert DeploySettings.parse(True) == DeploySettings()
    assert DeploySettings.parse(False) is None
    assert DeploySettings.parse({"int8": None}).int8 == "none"
    with pytest.raises(ValueError, match="int8"):
        DeploySettings.parse({"int8": "dynamic"})
    from aup.compression.search_space import CompressionSpaceError, CompressionJobConfigBuilder

    section = {"compressor": "naive", "config_list": QUANTIZERS["naive"], "deploy": {"format": "tflite"}}
    with pytest.raises(CompressionSpaceError, match="compression.deploy.format"):
        CompressionJobConfigBuilder(section)
    section["deploy"] = {"format": "onnx", "int8": "static"}
    assert CompressionJobConfigBuilder(section).build({})["compression_deploy"] == section["deploy"]


def test_load_deployed_rejects_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_deployed(tmp_path / "nope.onnx")


@pytest.mark.slow
def test_deploy_example_experiment_scores_the_int8_artifact(tmp_path):
    import shutil

    import optuna

    shutil.copytree(ROOT / "experiments", tmp_path / "experiments",
                    ignore=shutil.ignore_patterns("jobs", ".aup", "aup_models", "iterative", "search", "hpo_digits"))
    path = tmp_path / "experiments" / "deploy" / "exp_deploy_int8.json"
    experiment = json.loads(path.read_text())
    experiment.update(n_samples=2, population_size=2, n_parallel=1)
    path.write_text(json.dumps(experiment))
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    done = subprocess.run([sys.executable, "-m", "aup", "run", str(path), "--storage", url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    complete = [t for t in optuna.load_study(study_name=experiment["name"], storage=url).trials
                if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for trial in complete:
        attrs = trial.user_attrs
        assert trial.values[1:] == [attrs["latency_ms"], attrs["model_bytes"]]  # the ORT int8 latency and file
        assert attrs["deploy_agreement"] >= 0.95 and attrs["latency_ms_torch"] > 0
        assert attrs["model_bytes"] < 0.3 * attrs["baseline_model_bytes"]  # pruned + int8 vs dense fp32 ONNX
        assert abs(trial.values[0] - attrs["accuracy_in_memory"]) <= 0.02


def test_onnx_export_of_a_pruner_compares_with_the_dense_onnx(tmp_path, monkeypatch):
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model = zoo.DigitsCNN()
    pruner = aup.create_compressor(model, _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "pruning"),
                                   dummy_input=torch.randn(2, 1, 8, 8))
    pruner.compress()
    path = pruner.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")
    metrics = _channel_metrics(channel)
    assert metrics["model_bytes"] == os.path.getsize(path)
    dense = os.path.getsize(export_onnx(zoo.DigitsCNN().eval(), torch.randn(1, 1, 8, 8), tmp_path / "dense.onnx"))
    assert metrics["baseline_model_bytes"] == dense  # like for like: both ONNX files
    assert metrics["model_bytes_packed"] < metrics["baseline_model_bytes_packed"]


def test_compressors_on_one_model_share_one_recorder():
    model = zoo.DigitsCNN()
    first = aup.create_compressor(model, _job("naive", QUANTIZERS["naive"]))
    second = aup.create_compressor(model, _job("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "pruning"))
    assert first._recorder is second._recorder
    assert sum(isinstance(h, CalibrationRecorder) for h in model._forward_pre_hooks.values()) == 1


def test_quantized_trial_without_onnxruntime_records_no_latency(tmp_path, monkeypatch, capsys):
    from aup.compression.torch.deploy import settings as deploy

    monkeypatch.setattr(deploy, "ort_available", lambda: False)
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model = zoo.DigitsCNN()
    quantizer = aup.create_compressor(model, _job("naive", QUANTIZERS["naive"]))
    quantizer.compress()
    model(torch.rand(4, 1, 8, 8))
    base_module.report_at_trial_end()
    metrics = _channel_metrics(channel)
    assert "latency_ms" not in metrics and metrics["latency_ms_torch"] > 0  # fake quantization is not the deployed speed
    assert "deploy_agreement" not in metrics and metrics["weight_bits"] < 10
    assert capsys.readouterr().out.count("no latency_ms for this quantized model") == 1
