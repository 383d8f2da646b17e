"""Per-layer precision in the deployed ONNX file (32 float, 8 int8 QDQ, <= 4 bits MatMulNBits / int4).

Tolerances: a file whose low-bit layers hold the quantizer's own grid and whose other layers are float
reproduces the in-memory model to 1e-4 of its largest logit (the codes are the same; only float
summation order differs). With an int8 QDQ layer the activations are int8 too, so the check is the
deploy tests' one: top-1 agreement >= 99% on the 450 digits test images.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import aup  # noqa: E402
from aup.compression import load_deployed  # noqa: E402
from aup.compression.torch import base as base_module  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.deploy.settings import agreement, export_onnx  # noqa: E402
from aup.testing.models import TinyEncoder  # noqa: E402
from aup.compression.torch.deploy.nbits import WeightGrid, matmul_nbits_nodes, per_row_grid  # noqa: E402

TP = onnx.TensorProto


pytestmark = pytest.mark.usefixtures("fresh_trial_state")  # each test is its own trial (conftest)


@pytest.fixture(scope="module")
def digits():
    return zoo.load_digits_tensors(seed=0)


@pytest.fixture(scope="module")
def pretrained(digits):
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(4):
        zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
    return model.state_dict()


def _entries(bits: dict[str, int]) -> list[dict]:
    return [{"quant_types": ["weight"], "quant_bits": b, "op_names": [name]} for name, b in bits.items()]


def _quantized(pretrained, digits, bits: dict[str, int], tmp_path: Path, compressor: str = "qat"):
    """(model in eval mode, quantizer, deployed file) after one epoch of quantization-aware training."""
    model = zoo.DigitsCNN()
    model.load_state_dict(pretrained)
    quantizer = aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
                                              "compressor": compressor, "config_list": _entries(bits)})
    quantizer.compress()
    zoo.train_epoch(model, digits.x_train, digits.y_train, torch.optim.Adam(model.parameters(), lr=1e-3), seed=1)
    quantizer.step()
    path = quantizer.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")
    model.eval()
    return model, quantizer, path


def _initializers(path) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in onnx.load(path).graph.initializer}


def _nbits_width(node) -> int:
    """A MatMulNBits node's ``bits`` (the file leaves out attributes equal to the default, 4)."""
    return next((a.i for a in node.attribute if a.name == "bits"), 4)


def _max_logit_error(path, model, x) -> float:
    with torch.no_grad():
        expected = model(x)
        return float((load_deployed(path)(x) - expected).abs().max() / expected.abs().max())


def test_weight_grid_writer_reproduces_the_grid(tmp_path):
    """MatMulNBits from an explicit grid computes exactly a @ w.T for 1..8-bit grids (per row or grouped)."""
    import onnxruntime as ort
    from onnx import helper

    rng = np.random.default_rng(0)
    for bits, k, grouped in [(1, 8, False), (2, 40, True), (3, 64, False), (4, 96, True), (8, 32, False)]:
        n = 6
        if grouped:
            groups = -(-k // 32)
            scales = rng.uniform(0.01, 0.1, (n, groups))
            zps = rng.integers(0, 2 ** bits, (n, groups)).astype(float)
            grid = WeightGrid(bits, 32, scales, zps, symmetric=False)
        else:
            grid = per_row_grid(bits, 0.05, 0.5 if bits == 1 else 2 ** (bits - 1) - 1, n, k)
        scales, zps = grid.arrays()
        index = np.minimum(np.arange(k) // grid.group_size, scales.shape[1] - 1)
        codes = rng.integers(0, 2 ** bits, (n, k))
        weight = (codes - zps[:, index]) * scales[:, index]
        nodes, inits, _stored = matmul_nbits_nodes("w", "a", "y", weight, grid)
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TP.FLOAT, ["b", k])],
                                  [helper.make_tensor_value_info("y", TP.FLOAT, ["b", n])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        a = rng.standard_normal((3, k)).astype(np.float32)
        assert np.abs(session.run(None, {"a": a})[0] - a @ weight.T).max() < 1e-4, (bits, k)


def test_one_layer_at_each_of_32_8_4_bits_ships_those_types(digits, pretrained, tmp_path):
    bits = {"conv1": 32, "conv2": 8, "fc1": 4, "fc2": 4}
    model, quantizer, path = _quantized(pretrained, digits, bits, tmp_path)
    inits = _initializers(path)
    by_type = {name: init.data_type for name, init in inits.items()}
    conv1 = [n for n in by_type if "conv1.weight" in n]
    conv2 = [n for n in by_type if "conv2.weight" in n and by_type[n] == TP.INT8]
    assert conv1 and all(by_type[n] == TP.FLOAT for n in conv1)  # 32: float, not quantized
    assert conv2  # 8: int8 QDQ weights
    assert by_type["fc1_q4"] == TP.UINT8 and by_type["fc2_q4"] == TP.UINT8  # 4: packed 4-bit codes
    graph = onnx.load(path).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 and all(_nbits_width(n) == 4 for n in nbits)
    assert not any(n.op_type == "Gemm" for n in graph.node)
    assert {m: e["shipped"] for m, e in quantizer.shipped_precision["layers"].items()} == bits
    deployed = load_deployed(path)
    assert agreement(deployed, model, [digits.x_test]) >= 0.99


def test_float_and_low_bit_layers_reproduce_the_in_memory_model(digits, pretrained, tmp_path):
    """No int8 activation in between: the 4-bit convolution (BatchNorm folded by ORT) and linears hold
    the quantizer's own codes, so the file computes the in-memory model."""
    bits = {"conv1": 32, "conv2": 4, "fc1": 4, "fc2": 2}
    model, quantizer, path = _quantized(pretrained, digits, bits, tmp_path)
    assert _max_logit_error(path, model, digits.x_test) < 1e-4
    layers = quantizer.shipped_precision["layers"]
    assert layers["conv2"]["as"] == "UINT4 conv weights"  # exact grid, not the RTN fallback
    assert any(i.data_type == TP.UINT4 for i in _initializers(path).values())


def test_a_linear_asked_for_4_bits_is_never_left_fp32(tmp_path):
    """A Linear on a 2-D input exports as Gemm, which ORT's MatMulNBitsQuantizer skips: here it ships 4-bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(8, 20)
    shipped: dict = {}
    path = export_onnx(model, x[:1], tmp_path / "m.onnx", int8_modules=[], low_bits={"0": 4, "2": 4},
                       shipped=shipped)  # no grid given: symmetric RTN, group 32
    graph = onnx.load(path).graph
    assert [n.op_type for n in graph.node if n.op_type in ("Gemm", "MatMul", "MatMulNBits")] == ["MatMulNBits"] * 2
    float_matrices = [i for i in graph.initializer if i.data_type == TP.FLOAT and len(i.dims) == 2]
    assert not float_matrices
    assert {m: e["shipped"] for m, e in shipped.items()} == {"0": 4, "2": 4}
    with torch.no_grad():
        assert torch.allclose(load_deployed(path)(x), model(x), atol=0.15)  # 4-bit RTN of random weights


def test_attention_projections_asked_for_4_bits_are_never_left_fp32(tmp_path):
    """nn.MultiheadAttention's packed q/k/v weight is read through a Transpose by a 3-D MatMul (and its
    bias by a separate Add): it ships as one 4-bit MatMulNBits like every other linear, none left float."""
    torch.manual_seed(0)


    model = TinyEncoder().eval()
    modules = ["embed", "layer.self_attn", "layer.self_attn.out_proj", "layer.linear1", "layer.linear2", "head"]
    shipped: dict = {}
    x = torch.randn(8, 4, 4)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx", int8_modules=[], low_bits={m: 4 for m in modules},
                       shipped=shipped)
    graph = onnx.load(path).graph
    assert {m: e["shipped"] for m, e in shipped.items()} == {m: 4 for m in modules}
    assert sum(n.op_type == "MatMulNBits" for n in graph.node) == len(modules)
    assert not [i.name for i in graph.initializer if i.data_type == TP.FLOAT and len(i.dims) == 2]
    with torch.no_grad():
        expected = model(x)
        assert float((load_deployed(path)(x) - expected).abs().max() / expected.abs().max()) < 0.25  # RTN


def test_two_and_three_bit_asks_ship_as_documented(digits, pretrained, tmp_path, monkeypatch, capsys):
    channel = tmp_path / "exp-0.channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    monkeypatch.setenv("AUP_TRIAL", "0")
    bits = {"conv1": 2, "conv2": 8, "fc1": 3, "fc2": 2}
    _model, quantizer, path = _quantized(pretrained, digits, bits, tmp_path)
    layers = quantizer.shipped_precision["layers"]
    assert {m: e["shipped"] for m, e in layers.items()} == {"conv1": 4, "conv2": 8, "fc1": 4, "fc2": 2}
    graph = onnx.load(path).graph
    widths = sorted(_nbits_width(n) for n in graph.node if n.op_type == "MatMulNBits")
    assert widths == [2, 4]  # fc2 in 2-bit storage, fc1's 3-bit grid in 4-bit storage
    codes = np.frombuffer(_initializers(path)["fc1_q4"].raw_data, np.uint8)
    assert max(int((codes & 0xF).max()), int((codes >> 4).max())) < 8  # a 3-bit grid: 8 levels
    note = quantizer.shipped_precision["note"]
    assert "fc1 asked 3-bit" in note and "holding the 3-bit grid" in note and "conv1 asked 2-bit" in note
    assert "fc2" not in note  # shipped as asked
    recorded = _channel_metrics(channel)  # in the store, and one line in the trial's log
    assert recorded["precision_note"] == note and recorded["layer_bits_shipped"]["fc1"] == 4
    assert capsys.readouterr().out.count(f"aup: {note}") == 1


def _channel_metrics(path: Path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {k: v for r in records if r["kind"] == "metrics" for k, v in r["metrics"].items()}


def test_weight_bits_and_model_bytes_follow_the_asked_bits(digits, pretrained, tmp_path, monkeypatch):
    monkeypatch.setenv("AUP_TRIAL", "0")
    measured = []
    for index, bits in enumerate([{"conv1": 8, "conv2": 8, "fc1": 8, "fc2": 8},
                                  {"conv1": 8, "conv2": 8, "fc1": 4, "fc2": 8},
                                  {"conv1": 4, "conv2": 4, "fc1": 4, "fc2": 4}]):
        channel = tmp_path / f"exp-{index}.channel.jsonl"
        monkeypatch.setenv("AUP_CHANNEL", str(channel))
        monkeypatch.setattr(base_module, "_live", [])
        _quantized(pretrained, digits, bits, tmp_path / str(index))
        measured.append(_channel_metrics(channel))
    for before, after in zip(measured, measured[1:]):
        assert after["weight_bits"] < before["weight_bits"]
        assert after["model_bytes"] < before["model_bytes"]
    assert all("model_bytes_packed" in m and m["layer_bits_shipped"] for m in measured)
    assert measured[2]["layer_bits_shipped"] == {"conv1": 4, "conv2": 4, "fc1": 4, "fc2": 4}
    assert 4 < measured[2]["weight_bits"] < 4.5  # biases and BatchNorm stay float


def test_quant_bits_32_leaves_the_layer_in_float(digits, pretrained):
    model = zoo.DigitsCNN()
    model.load_state_dict(pretrained)
    quantizer = aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
                                              "compressor": "qat", "config_list": _entries({"fc1": 32, "fc2": 4})})
    assert [layer.name for layer in quantizer.layers] == ["fc2"]
    assert quantizer.layer_bits() == {"fc1": {"weight": 32}, "fc2": {"weight": 4}}
    with pytest.raises(ValueError, match=r"quant_bits: expected an integer in \[1, 32\]"):
        aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
                                      "compressor": "qat", "config_list": _entries({"fc1": 33})})


def test_prune_then_quantize_ships_the_shrunk_model_per_layer(digits, pretrained, tmp_path):
    model = zoo.DigitsCNN()
    model.load_state_dict(pretrained)
    config = {"compression_pipeline": [
        {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
         "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]},
        {"compression_framework": "torch", "compression_type": "quantization", "compressor": "qat",
         "config_list": _entries({"conv1": 4, "conv2": 8, "fc1": 4, "fc2": 32})}]}
    pipeline = aup.create_compressor(model, config, dummy_input=digits.x_train[:8])
    pipeline.compress()
    zoo.train_epoch(model, digits.x_train, digits.y_train, torch.optim.Adam(model.parameters(), lr=1e-3), seed=2)
    path = pipeline.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")
    model.eval()
    inits = _initializers(path)
    assert list(inits["conv1_w4_q4"].dims)[0] == 8  # conv1 shrunk 16 -> 8, stored as UINT4
    assert inits["conv1_w4_q4"].data_type == TP.UINT4
    assert inits["fc1_q4"].dims[0] == 64  # fc1 reads the shrunk conv2: 16 * 4 * 4 = 256 inputs, 4-bit
    assert [a.i for n in onnx.load(path).graph.node if n.op_type == "MatMulNBits" for a in n.attribute
            if a.name == "K"] == [256]
    assert agreement(load_deployed(path), model, [digits.x_test]) >= 0.99


def test_sensitivity_profile_quantizes_one_layer_at_a_time_and_restores_it(digits, pretrained):
    from aup.compression.torch.quant_profile import quantization_sensitivity
    from aup.views.sensitivity import render_sensitivity, sensitivity_rows

    model = zoo.DigitsCNN()
    model.load_state_dict(pretrained)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def evaluate(m):
        seen.append({name: bool(torch.equal(p, before[name])) for name, p in m.state_dict().items()
                     if name.endswith(".weight") and p.dim() > 1})
        return float((m(digits.x_test).argmax(1) == digits.y_test).float().mean())

    profile = quantization_sensitivity(model, evaluate, bits=2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored
    assert all(seen[0].values())  # the baseline evaluation sees the float model
    assert [sum(not same for same in s.values()) for s in seen[1:]] == [1, 1, 1, 1]  # one layer at a time
    assert set(profile["layers"]) == {"conv1", "conv2", "fc1", "fc2"} and profile["bits"] == 2
    rows = sensitivity_rows(profile)
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)  # most sensitive first
    assert render_sensitivity(profile) is not None and render_sensitivity({"layers": "x"}) is None
    with pytest.raises(ValueError, match="no conv/linear/attention layer named 'bn1'"):
        quantization_sensitivity(model, evaluate, layers=["bn1"])
