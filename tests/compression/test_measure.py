"""Measured size metrics: exact MAC counts, mask awareness, sizes of the real file, latency rules."""
from __future__ import annotations

import gzip
import math

import pytest
import torch
from torch import nn

from aup.compression.torch import zoo
from aup.compression.torch.artifact.files import save_artifact
from aup.compression.torch.measure import LATENCY_THREADS, count_flops_params, latency_ms, measure_model
from aup.compression.torch.shrink.core import shrink_model
from aup.metrics import SIZE_METRICS


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)  # 72 weights x 16 positions = 1152 MACs
        self.relu = nn.ReLU()
        self.fc = nn.Linear(64, 3)  # 192 MACs

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


def test_dense_macs_and_counts_by_hand():
    torch.manual_seed(0)
    model = Tiny()
    metrics = measure_model(model, torch.randn(5, 2, 4, 4), latency=False)
    assert set(metrics) == set(SIZE_METRICS) - {"latency_ms"}
    assert metrics["macs"] == 1152 + 192  # per sample, batch of 5
    assert metrics["param_count"] == 72 + 64 * 3 + 3
    assert metrics["sparsity"] == 0.0 and metrics["weight_bits"] == 32.0


def test_masks_reduce_macs_nonzero_and_raise_sparsity():
    torch.manual_seed(0)
    model = Tiny()
    mask = torch.ones_like(model.conv.weight)
    mask[:2] = 0  # two of four filters: 36 weights x 16 positions
    fc_mask = (torch.arange(192).reshape(3, 64) % 4 != 0).float()  # 48 weights level-pruned
    masks = {"conv": {"weight": mask, "bias": None}, "fc": {"weight": fc_mask, "bias": None}}
    m = measure_model(model, torch.randn(1, 2, 4, 4), masks=masks, latency=False)
    assert m["macs"] == 36 * 16 + 144
    assert m["nonzero_params"] == 36 + 144 + 3
    assert m["param_count"] == 72 + 192 + 3  # masks do not change the physical size
    assert m["sparsity"] == pytest.approx((36 + 48) / (72 + 192))
    assert measure_model(model, torch.randn(1, 2, 4, 4), masks=masks, compressed_modules=["conv"],
                         latency=False)["sparsity"] == 0.5


def test_shrunk_model_is_measured_as_it_exists(tmp_path):
    torch.manual_seed(0)
    model = zoo.DigitsCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    w = torch.ones_like(model.conv2.weight)
    w[:16] = 0
    bn = torch.ones(32)
    bn[:16] = 0
    masks = {"conv2": {"weight": w, "bias": None}, "bn2": {"weight": bn, "bias": bn.clone()}}
    masked = measure_model(model, x, masks=masks, latency=False)
    shrink_model(model, masks, x)
    path = tmp_path / "m.aup"
    save_artifact(path, model, example_input=x)
    shrunk = measure_model(model, x, artifact_path=path, latency=False)
    assert shrunk["param_count"] < masked["param_count"]
    assert shrunk["macs"] < masked["macs"]  # fc1 lost its inputs from the removed channels too
    data = path.read_bytes()
    assert shrunk["model_bytes"] == len(data)
    assert shrunk["model_bytes_gzip"] == len(gzip.compress(data, 6, mtime=0))
    assert shrunk["model_bytes"] < masked["model_bytes"]


def test_weight_bits_from_quant_bits_and_requires_artifact(tmp_path):
    model = Tiny()
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="artifact_path"):
        measure_model(model, x, quant_bits={"conv.weight": 8}, latency=False)
    path = tmp_path / "a.aup"
    save_artifact(path, model)
    m = measure_model(model, x, quant_bits={"conv.weight": 8, "fc.weight": 4}, artifact_path=path, latency=False)
    assert m["weight_bits"] == pytest.approx((72 * 8 + 192 * 4 + 3 * 32) / 267)


def test_latency_fixed_threads_restored_and_eval_mode():
    model = Tiny().train()
    before = torch.get_num_threads()
    seen = []
    model.register_forward_pre_hook(lambda m, i: seen.append((torch.get_num_threads(), m.training, i[0].shape[0])))
    value = latency_ms(model, torch.randn(8, 2, 4, 4), runs=3, warmup=1)
    assert value > 0 and math.isfinite(value)
    assert torch.get_num_threads() == before and model.training
    assert seen and all(s == (LATENCY_THREADS, False, 1) for s in seen)


def test_count_flops_params_nni_style():
    model = Tiny()
    flops, params, rows = count_flops_params(model, (1, 2, 4, 4), verbose=False)
    assert flops == 1152 + 192 and params == 72 + 192 + 3
    assert [r["name"] for r in rows] == ["conv", "fc"] and rows[0]["output_size"] == [1, 4, 4, 4]
    flops_t, _, _ = count_flops_params(model, torch.randn(3, 2, 4, 4), verbose=False)
    assert flops_t == flops


def test_unknown_names_are_clear_errors():
    model = Tiny()
    with pytest.raises(ValueError, match="not in the model"):
        measure_model(model, torch.randn(1, 2, 4, 4), masks={"nope": {"weight": None}}, latency=False)
