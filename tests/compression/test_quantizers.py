"""Tests of the four PyTorch quantizers (naive, qat, dorefa, bnn).

Hand-computed numbers follow NNI 2.0's own quantizer tests where they exist (QAT scale, zero point,
EMA min/max); the rest are computed by hand in the comments.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aup.compression.torch import zoo
from aup.compression.torch.quantization import attach_activation_quant
from aup.compression.torch.quantization.bnn import BNNQuantizer
from aup.compression.torch.quantization.dorefa import DoReFaQuantizer
from aup.compression.torch.quantization.naive import NaiveQuantizer
from aup.compression.torch.quantization.primitives import affine_qparams
from aup.compression.torch.quantization.qat import QATQuantizer

ALL = [NaiveQuantizer, QATQuantizer, DoReFaQuantizer, BNNQuantizer]


def _config(cls: type, bits: int) -> list[dict]:
    """A config quantizing every weighted layer (and outputs where the quantizer supports them)."""
    if cls is NaiveQuantizer:
        return [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Conv2d", "Linear"]}]
    if cls is DoReFaQuantizer:
        return [{"quant_types": ["weight"], "quant_bits": bits, "op_types": ["default"]}]
    if cls is BNNQuantizer:
        return [{"quant_types": ["weight"], "quant_bits": 1, "op_types": ["Conv2d", "Linear"]},
                {"quant_types": ["output"], "quant_bits": 1, "op_names": ["relu1", "relu2", "relu3"]}]
    return [{"quant_types": ["weight"], "quant_bits": {"weight": bits}, "op_types": ["Conv2d", "Linear"]},
            {"quant_types": ["output"], "quant_bits": 8, "op_types": ["ReLU"]}]


# --------------------------------------------------------------------------- validation

NNI_BAD_CONFIGS = [
    ([{"bad_key": "abc"}], "bad_key"),
    ([{"quant_types": "abc"}], "quant_types"),
    ([{"quant_bits": 34}], "quant_bits"),
    ([{"op_types": "default"}], "op_types"),
    ([{"quant_bits": {"abc": 123}}], "quant_bits"),
]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("config_list,key", NNI_BAD_CONFIGS)
def test_nni_bad_configs_rejected_with_entry_and_key(make_nni_model, cls: type, config_list: list, key: str) -> None:
    with pytest.raises(ValueError) as info:
        cls(make_nni_model(), config_list)
    message = str(info.value)
    assert "config_list[0]" in message and key in message and "\n" not in message


@pytest.mark.parametrize("cls,entry,key", [
    (NaiveQuantizer, {"quant_types": ["weight"], "quant_bits": 4, "op_types": ["Linear"]}, "quant_bits"),
    (BNNQuantizer, {"quant_types": ["weight"], "quant_bits": 2, "op_types": ["Linear"]}, "quant_bits"),
    (DoReFaQuantizer, {"quant_types": ["output"], "quant_bits": 2, "op_types": ["Linear"]}, "quant_types"),
    (NaiveQuantizer, {"quant_types": ["input"], "op_types": ["Linear"]}, "quant_types"),
    (BNNQuantizer, {"quant_types": ["input"], "quant_bits": 1, "op_types": ["Linear"]}, "quant_types"),
    (QATQuantizer, {"quant_types": ["weight", "output"], "quant_bits": {"weight": 8}, "op_types": ["Linear"]},
     "quant_bits"),
    (QATQuantizer, {"quant_types": ["weight"], "quant_bits": 33, "op_types": ["Linear"]}, "quant_bits"),  # 32 = float
    (QATQuantizer, {"quant_types": ["weight"], "quant_bits": 8, "quant_start_step": -1, "op_types": ["Linear"]},
     "quant_start_step"),
    (QATQuantizer, {"quant_types": ["weight"], "quant_bits": 8, "op_types": ["ReLU"]}, "quant_types"),
])
def test_quantizer_specific_rules(make_nni_model, cls: type, entry: dict, key: str) -> None:
    with pytest.raises(ValueError, match=rf"config_list\[0\]\.?.*{key}"):
        cls(make_nni_model(), [entry])


def test_naive_empty_config_quantizes_all_weighted_layers(make_nni_model) -> None:
    quantizer = NaiveQuantizer(make_nni_model(), [])
    assert [layer.name for layer in quantizer.layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(layer.bits == {"weight": 8} for layer in quantizer.layers)


def test_qat_module_detection_like_nni(make_nni_model) -> None:
    config = [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Conv2d", "Linear"]},
              {"quant_types": ["output"], "quant_bits": 8, "quant_start_step": 0, "op_types": ["ReLU"]}]
    names = [layer.name for layer in QATQuantizer(make_nni_model(), config).layers]
    assert names == ["conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2"]


# --------------------------------------------------------------------------- mechanism


@pytest.mark.parametrize("cls", ALL)
def test_state_dict_keys_module_types_and_restore(make_nni_model, cls: type) -> None:
    torch.manual_seed(0)
    model = make_nni_model().eval()
    keys = list(model.state_dict())
    types = {name: type(m) for name, m in model.named_modules()}
    x = torch.randn(3, 1, 28, 28)
    plain = model(x)
    quantizer = cls(model, _config(cls, 4))
    quantizer.compress()
    quantized = model(x)
    assert list(model.state_dict()) == keys
    assert {name: type(m) for name, m in model.named_modules()} == types
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert not torch.allclose(plain, quantized)
    quantizer.remove()
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(model(x), plain)


@pytest.mark.parametrize("cls,bits", [(NaiveQuantizer, 8), (QATQuantizer, 2), (QATQuantizer, 4),
                                      (DoReFaQuantizer, 1), (DoReFaQuantizer, 3), (BNNQuantizer, 1)])
def test_forward_uses_at_most_2_pow_bits_values(cls: type, bits: int) -> None:
    """The linear layer computes with a weight of <= 2^bits distinct values, and gradients flow (STE)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 8))
    config = [{"quant_types": ["weight"], "quant_bits": bits, "op_types": ["Linear"]}]
    quantizer = cls(model, config)
    quantizer.compress()
    _, values = quantizer.quantized_weights()
    qw = values["0.weight"]
    assert qw.unique().numel() <= 2 ** bits
    x = torch.randn(4, 16, requires_grad=True)
    out = model(x)
    torch.testing.assert_close(out, F.linear(x, qw, model[0].bias))
    out.sum().backward()
    # input gradient is computed with the quantized weight; the weight gets an STE gradient
    torch.testing.assert_close(x.grad, torch.ones(4, 8) @ qw)
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_qat_output_takes_at_most_2_pow_bits_values() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
    quantizer = QATQuantizer(model, [{"quant_types": ["input", "output"], "quant_bits": 3, "op_types": ["Linear"]}])
    quantizer.compress()
    out = model(torch.randn(64, 16))
    assert out.unique().numel() <= 2 ** 3


# --------------------------------------------------------------------------- algorithms by hand


def test_naive_rounds_to_nearest_and_keeps_running_max() -> None:
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    model[0].weight.data = torch.tensor([[127.0, 0.6, 1.4, -0.6]])  # scale = 127/127 = 1
    quantizer = NaiveQuantizer(model, [])
    quantizer.compress()
    out = model(torch.eye(4))
    # NNI's int8 cast would truncate to [127, 0, 1, 0]
    torch.testing.assert_close(out.flatten(), torch.tensor([127.0, 1.0, 1.0, -1.0]))
    model[0].weight.data = torch.tensor([[63.5, 0.6, 1.4, -0.6]])  # running max keeps scale 1
    torch.testing.assert_close(model(torch.eye(4)).flatten(), torch.tensor([64.0, 1.0, 1.0, -1.0]))
    spec = quantizer.weight_specs()["0.weight"]
    assert (spec.bits, spec.scale, spec.zero_point) == (8, 1.0, 128.0)


def _qat_linear(config_extra: dict | None = None) -> tuple[nn.Module, QATQuantizer]:
    model = nn.Sequential()
    model.add_module("conv2", nn.Linear(2, 2))
    model.add_module("relu", nn.ReLU())
    config = [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Linear"], **(config_extra or {})},
              {"quant_types": ["output"], "quant_bits": 8, "quant_start_step": 0, "op_types": ["ReLU"]}]
    quantizer = QATQuantizer(model, config)
    quantizer.compress()
    return model, quantizer


def test_qat_weight_scale_and_zero_point_by_hand() -> None:
    model, quantizer = _qat_linear()
    model.conv2.weight.data = torch.tensor([[1.0, 2.0], [3.0, 5.0]])  # range not including 0 -> [0, 5]
    spec = quantizer.weight_specs()["conv2.weight"]
    assert math.isclose(spec.scale, 5 / 255, abs_tol=1e-7) and spec.zero_point == 0
    model.conv2.weight.data = torch.tensor([[-1.0, 2.0], [3.0, 5.0]])  # [-1, 5]: zero point 1/(6/255) = 42.5
    spec = quantizer.weight_specs()["conv2.weight"]
    assert math.isclose(spec.scale, 6 / 255, abs_tol=1e-7) and spec.zero_point in (42, 43)
    # values: scale 5.9723/255; 1.1287/scale = 48.19 -> 48 -> 1.1242, and so on
    model.conv2.weight.data = torch.tensor([[1.1287, 2.3456], [3.7814, 5.9723]])
    _, values = quantizer.quantized_weights()
    torch.testing.assert_close(values["conv2.weight"], torch.tensor([[1.1242, 2.3421], [3.7707, 5.9723]]),
                               rtol=1e-4, atol=0)


def test_qat_ema_min_max_by_hand() -> None:
    model, quantizer = _qat_linear()
    observer = quantizer.observers["relu"]["output"]
    out = model.relu(torch.tensor([[-0.2, 0.0], [0.1, 0.2]]))
    # biased EMA from 0 with decay 0.99: min 0, max 0.01 * 0.2 = 0.002; corrected max 0.002 / 0.01 = 0.2
    assert math.isclose(observer.min_biased, 0.0, abs_tol=1e-7)
    assert math.isclose(observer.max_biased, 0.002, abs_tol=1e-7)
    assert math.isclose(observer.max, 0.2, rel_tol=1e-6)
    # scale 0.2/255, zero point 0: 0.1 -> 127.5 -> 128 (half to even) -> 128 * 0.2/255
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [128 * 0.2 / 255, 0.2]]))
    quantizer.step()
    model.relu(torch.tensor([[0.2, 0.4], [0.6, 0.8]]))
    # min 0.99 * 0 + 0.01 * 0.2 = 0.002; max 0.99 * 0.002 + 0.01 * 0.8 = 0.00998 (NNI's numbers)
    assert math.isclose(observer.min_biased, 0.002, abs_tol=1e-7)
    assert math.isclose(observer.max_biased, 0.00998, abs_tol=1e-7)
    # bias correction over 2 updates: divide by 1 - 0.99^2 = 0.0199
    assert math.isclose(observer.min, 0.002 / 0.0199, rel_tol=1e-6)
    assert math.isclose(observer.max, 0.00998 / 0.0199, rel_tol=1e-6)
    assert observer.qparams(8) == (pytest.approx(0.00998 / 0.0199 / 255), 0.0)  # range widened to include 0


def test_qat_ranges_frozen_in_eval() -> None:
    model, quantizer = _qat_linear()
    observer = quantizer.observers["relu"]["output"]
    model.relu(torch.tensor([1.0, 2.0]))
    model.eval()
    model.relu(torch.tensor([10.0, 20.0]))
    assert observer.count == 1 and math.isclose(observer.max, 2.0, rel_tol=1e-6)


def test_qat_quant_start_step_counts_optimizer_steps() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights stay put, steps still count
    quantizer = QATQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 2, "quant_start_step": 2,
                                      "op_types": ["Linear"]}], optimizer=optimizer)
    quantizer.compress()
    x = torch.randn(5, 8)
    plain = F.linear(x, model[0].weight, model[0].bias)
    _, values = quantizer.quantized_weights()
    quantized = F.linear(x, values["0.weight"], model[0].bias)
    for step in range(4):
        expected = quantized if step >= 2 else plain
        torch.testing.assert_close(model(x), expected)
        model(x).sum().backward()
        optimizer.step()
        quantizer.step()  # a no-op when the optimizer is hooked: no double counting
    assert quantizer.steps_done == 4


def test_dorefa_weights_by_hand() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    model[0].weight.data = torch.tensor([[-1.0, 0.1], [0.5, 2.0]])
    quantizer = DoReFaQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 2, "op_types": ["Linear"]}])
    quantizer.compress()
    # tanh/(2 max|tanh|) + 0.5 = [0.105, 0.552, 0.740, 1.0]; x3 -> round [0, 2, 2, 3]; 2q/3 - 1
    expected = torch.tensor([[-1.0, 1 / 3], [1 / 3, 1.0]])
    torch.testing.assert_close(model(torch.eye(2)).T, expected)
    spec = quantizer.weight_specs()["0.weight"]
    assert (spec.bits, spec.scale, spec.zero_point) == (2, pytest.approx(2 / 3), 1.5)
    # gradient flows through tanh (not straight to w): it differs between equal upstream gradients
    model(torch.eye(2)).sum().backward()
    grad = model[0].weight.grad
    assert grad.abs().sum() > 0 and not torch.allclose(grad, torch.full_like(grad, grad[0, 0].item()))


def test_bnn_sign_clipped_ste_and_weight_clipping() -> None:
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Hardtanh())
    model[0].weight.data = torch.tensor([[0.0, -0.5, 3.0], [1.0, -2.0, 0.2], [-0.1, 0.1, 0.0]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    quantizer = BNNQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 1, "op_types": ["Linear"]},
                                     {"quant_types": ["output"], "quant_bits": 1, "op_names": ["1"]}],
                             optimizer=optimizer)
    assert [(layer.name, layer.quant_types) for layer in quantizer.layers] == [("0", ("weight",)), ("1", ("output",))]
    quantizer.compress()
    _, values = quantizer.quantized_weights()
    torch.testing.assert_close(values["0.weight"], torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, 1.0],
                                                                 [-1.0, 1.0, 1.0]]))  # sign(0) = +1
    x = torch.tensor([[0.5, 0.2, 0.1]])
    out = model(x)
    # pre-activation with binary weights: [0.5-0.2+0.1, 0.5-0.2+0.1, -0.5+0.2+0.1] = [0.4, 0.4, -0.2]
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, -1.0]]))
    # clipped STE on outputs: pre-activation 1.5 would get no gradient
    from aup.compression.torch.quantization.primitives import binarize
    z = torch.tensor([-1.5, -0.5, 0.0, 0.7, 2.0], requires_grad=True)
    binarize(z, clip=True)[0].sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    out.sum().backward()
    optimizer.step()
    assert model[0].weight.abs().max() <= 1.0  # clipped to [-1, 1] after the step (Hubara et al.)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("cls,bits", [(NaiveQuantizer, 8), (QATQuantizer, 4), (DoReFaQuantizer, 3),
                                      (BNNQuantizer, 1)])
def test_export_codes_and_frozen_activations_reproduce_model(make_nni_model, cls: type, bits: int) -> None:
    torch.manual_seed(4)
    model = make_nni_model()
    quantizer = cls(model, _config(cls, bits))
    quantizer.compress()
    x = torch.randn(8, 1, 28, 28)
    model(x)  # observe activation ranges
    model.eval()
    expected = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quant, values = quantizer.quantized_weights()
    assert set(quant) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    for key, spec in quant.items():
        q = torch.round(values[key].double() / spec["scale"] + spec["zero_point"])
        assert q.min() >= 0 and q.max() < 2 ** spec["bits"] and spec["bits"] == quantizer.layers[0].bits["weight"]
        torch.testing.assert_close(((q - spec["zero_point"]) * spec["scale"]).float(), values[key])
    with quantizer.exported_view() as (quant2, specs):
        assert quant2 == quant
        assert not any("forward" in m.__dict__ or m._forward_hooks for m in model.modules())
        handle = attach_activation_quant(model, specs)
        # equal up to float rounding: the exported weights are recomputed from the integer codes
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-4)
        handle.remove()
    # the live model is back: full-precision weights, quantization attached
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), expected)
    n_weights = sum(model.get_parameter(k).numel() for k in quant)
    n_all = sum(p.numel() for p in model.parameters())
    assert quantizer.weight_bits() == pytest.approx((bits * n_weights + 32 * (n_all - n_weights)) / n_all)


def test_attach_activation_quant_rejects_unknown_module(make_nni_model) -> None:
    with pytest.raises(ValueError, match="nope"):
        attach_activation_quant(make_nni_model(), {"nope": {"output": {"bits": 8, "scale": 1.0, "zero_point": 0}}})


def test_create_compressor_builds_quantizers_by_name(make_nni_model) -> None:
    from aup.compression import create_compressor

    model = make_nni_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config = {"compression_framework": "torch", "compression_type": "quantization", "compressor": "qat",
              "config_list": [{"quant_types": ["weight"], "quant_bits": {"weight": 8}, "op_types": ["Conv2d", "Linear"]},
                              {"quant_types": ["output"], "quant_bits": 8, "quant_start_step": 7000,
                               "op_types": ["ReLU"]}]}
    quantizer = create_compressor(model, config, optimizer)  # optimizer by position
    assert isinstance(quantizer, QATQuantizer) and quantizer.optimizer is optimizer
    assert quantizer.compress() is model
    with pytest.raises(ValueError, match=r"config_list\[0\]"):
        create_compressor(model, {**config, "compressor": "dorefa",
                                  "config_list": [{"quant_types": ["weight"], "quant_bits": 34,
                                                   "op_types": ["default"]}]})


# --------------------------------------------------------------------------- end to end on digits


E2E = {
    "naive": (NaiveQuantizer, [], 0.02),
    "qat4": (QATQuantizer, [{"quant_types": ["weight"], "quant_bits": 4, "op_types": ["Conv2d", "Linear"]},
                            {"quant_types": ["output"], "quant_bits": 8, "op_types": ["ReLU"]}], 0.03),
    "dorefa2": (DoReFaQuantizer, [{"quant_types": ["weight"], "quant_bits": 2, "op_types": ["default"]}], 0.05),
    "bnn": (BNNQuantizer, [{"quant_types": ["weight"], "quant_bits": 1, "op_types": ["Conv2d", "Linear"]}], 0.10),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(E2E))
def test_digits_quantize_finetune_accuracy(key: str, pretrained_digits, tmp_path: object) -> None:
    """Quantize a trained digits CNN, fine-tune briefly, and check accuracy stays near full precision."""
    cls, config, allowed_drop = E2E[key]
    data, fp_accuracy = pretrained_digits.data, pretrained_digits.accuracy
    torch.manual_seed(0)
    model = pretrained_digits.model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    quantizer = cls(model, config, optimizer)  # counts its steps; BNN clips weights after each
    quantizer.compress()
    before = zoo.evaluate(model, data.x_test, data.y_test)
    for epoch in range(3):
        zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=epoch)
    after = zoo.evaluate(model, data.x_test, data.y_test)
    bits = quantizer.weight_bits()
    print(f"\n{key}: fp32 {fp_accuracy:.3f}, quantized {before:.3f}, fine-tuned {after:.3f}, weight_bits {bits:.2f}")
    assert fp_accuracy > 0.93
    assert after >= fp_accuracy - allowed_drop


def test_deepcopy_of_quantized_model_is_independent() -> None:
    import copy

    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 4))
    quantizer = DoReFaQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 2, "op_types": ["Linear"]}])
    quantizer.compress()
    clone = copy.deepcopy(model)
    x = torch.randn(3, 4)
    torch.testing.assert_close(clone(x), model(x))
    with torch.no_grad():
        clone[0].weight.mul_(-1)  # the copy must compute with its own weight, not the original's
    torch.testing.assert_close(clone(x), F.linear(x, _dorefa(clone[0].weight), clone[0].bias))
    assert not torch.allclose(clone(x), model(x))


def _dorefa(w: torch.Tensor) -> torch.Tensor:
    from aup.compression.torch.quantization.primitives import dorefa_weight

    return dorefa_weight(w.detach(), 2)[0]


def test_export_model_artifact_roundtrip_and_real_size(make_nni_model, tmp_path: object) -> None:
    """The exported file stores k-bit integers (smaller for fewer bits) and loads back the same model."""
    artifact = pytest.importorskip("aup.compression.torch.artifact.files")
    torch.manual_seed(6)
    x = torch.randn(4, 1, 28, 28)
    baseline = make_nni_model().eval()
    sizes = {32: os.path.getsize(_save_plain(artifact, baseline, x, tmp_path))}
    for bits in (8, 4, 2):
        model = make_nni_model()
        model.load_state_dict(baseline.state_dict())
        quantizer = QATQuantizer(model, [
            {"quant_types": ["weight"], "quant_bits": bits, "op_types": ["Conv2d", "Linear"]},
            {"quant_types": ["output"], "quant_bits": 8, "op_types": ["ReLU"]}], dummy_input=x)
        quantizer.compress()
        model(x)
        model.eval()
        expected = model(x)
        path = quantizer.export_model(f"qat{bits}.pt", folder_name=str(tmp_path))
        sizes[bits] = os.path.getsize(path)
        loaded = artifact.load_compressed(path).eval()
        assert list(loaded.state_dict()) == list(baseline.state_dict())
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(model(x), expected)  # the live model is untouched by export
    assert sizes[2] < sizes[4] < sizes[8] < sizes[32]
    weights = sum(p.numel() for n, p in baseline.named_parameters() if n.endswith("weight") and p.dim() > 1)
    assert sizes[8] < sizes[32] - weights * 3 * 0.9  # ~3 bytes saved per quantized weight


def _save_plain(artifact: object, model: nn.Module, x: torch.Tensor, folder: object) -> str:
    path = os.path.join(str(folder), "fp32.pt")
    artifact.save_artifact(path, model, example_input=x)
    return path


def test_affine_qparams_edge_cases() -> None:
    assert affine_qparams(1.0, 5.0, 8) == (pytest.approx(5 / 255), 0.0)  # widened to [0, 5]
    assert affine_qparams(-4.0, -1.0, 2) == (pytest.approx(4 / 3), 3.0)  # widened to [-4, 0]: zero is code 3
    assert affine_qparams(0.0, 0.0, 8) == (1.0, 0.0)  # empty range: no division by zero


def test_export_model_passes_integer_specs_to_save_artifact(make_nni_model, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Contract with artifact.save_artifact: plain model holding the grid values, quant specs, activation specs."""
    import sys
    import types

    seen: dict = {}

    def save_artifact(path: str, model: nn.Module, *, example_input: object = None, masks: object = None,
                      quant: dict | None = None, meta: dict | None = None) -> None:
        seen.update(path=path, quant=quant, meta=meta, example=example_input,
                    state={k: v.clone() for k, v in model.state_dict().items()},
                    hooked=any("forward" in m.__dict__ or m._forward_hooks for m in model.modules()))

    monkeypatch.setitem(sys.modules, "aup.compression.torch.artifact.files",
                        types.SimpleNamespace(save_artifact=save_artifact))
    torch.manual_seed(7)
    model = make_nni_model()
    x = torch.randn(2, 1, 28, 28)
    quantizer = QATQuantizer(model, _config(QATQuantizer, 4), dummy_input=x)
    quantizer.compress()
    model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Auptimizer's examples pass **config: unused keywords are accepted and logged at debug level only
    path = quantizer.export_model("m.pt", folder_name=str(tmp_path / "out"), extra_unknown=1)
    assert path == os.path.join(str(tmp_path / "out"), "m.pt") and seen["example"] is x
    assert not seen["hooked"]
    quant, values = quantizer.quantized_weights()
    assert seen["quant"] == quant and all(spec["bits"] == 4 for spec in quant.values())
    for key, value in values.items():
        assert torch.equal(seen["state"][key], value)
    assert set(seen["meta"]["activation_quant"]) == {"relu1", "relu2", "relu3"}
    assert seen["meta"]["weight_bits"] == pytest.approx(quantizer.weight_bits())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "forward" in model.conv1.__dict__  # still quantizing after export
