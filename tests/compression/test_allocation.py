"""Per-layer allocation (``compression.allocation``): the split, the once-per-experiment profile, the errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import aup
from aup.compression import allocation as alloc
from aup.compression.search_space import CompressionJobConfigBuilder, check_compression
from aup.compression.torch import allocation as torch_alloc
from aup.compression.torch.deploy import baseline


class OneFragile(nn.Module):
    """Three convs; conv1 and conv3 have half their filters near zero (prunable for free), conv2 none."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 10)
        with torch.no_grad():
            for conv in (self.conv1, self.conv3):
                conv.weight[4:] *= 1e-3
                conv.bias[4:] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = torch.relu(conv(x))
        return self.head(x.flatten(1))


def job(sparsity: float, method: str = "sensitivity", compressor: str = "l1_filter") -> dict:
    return {"compression_framework": "torch", "compression_type": "pruning", "compressor": compressor,
            "config_list": [{"sparsity": sparsity, "op_names": ["conv1", "conv2", "conv3"]}],
            alloc.JOB_KEY: {"method": method, "max_sparsity": 0.9}}


@pytest.fixture
def trial_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run as inside a trial of one experiment: the caches go next to the channel file."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    monkeypatch.setenv("AUP_CHANNEL", str(jobs / "exp-0.channel.jsonl"))
    monkeypatch.setenv("AUP_TRIAL", "0")
    monkeypatch.setattr(baseline, "_state", {"model": None, "fingerprint": None, "metrics": {}, "deferred": 0})
    return jobs


@pytest.mark.parametrize("inputs", [None, torch.randn(16, 1, 8, 8)], ids=["weights", "outputs"])
def test_fragile_layer_gets_the_lowest_sparsity(inputs: torch.Tensor | None) -> None:
    model = OneFragile()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {} if inputs is None else {"dummy_input": inputs}
    compressor = aup.create_compressor(model, job(0.4), **kwargs)
    used = {name: layer.config["sparsity"] for name, layer in compressor.layers.items()}
    assert used["conv2"] < 0.25 < min(used["conv1"], used["conv3"])
    sizes = {name: getattr(model, name).weight.numel() for name in used}
    mean = sum(used[n] * sizes[n] for n in used) / sum(sizes.values())
    assert mean == pytest.approx(0.4, abs=1e-3)  # the global target is kept, weighted by layer size
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # profiling left no trace


def test_uniform_gives_every_layer_the_global_value() -> None:
    compressor = aup.create_compressor(OneFragile(), job(0.3, "uniform"))
    assert {layer.config["sparsity"] for layer in compressor.layers.values()} == {0.3}


def test_split_is_exact_capped_and_monotone() -> None:
    option = alloc.Allocation("sensitivity", 0.8)
    profile = {"a": {0.1: 0.0, 0.5: 0.0, 0.8: 1.0}, "b": {0.1: 0.5, 0.5: 0.9, 0.8: 1.0}}
    sizes = {"a": 100, "b": 300}
    for target in (0.1, 0.3, 0.5, 0.7):
        split = alloc.allocate(option, target, sizes, profile)
        assert (split["a"] * 100 + split["b"] * 300) / 400 == pytest.approx(target, abs=1e-3)
        assert split["a"] >= split["b"] and max(split.values()) <= 0.8
    assert alloc.allocate(option, 0.95, sizes, profile) == {"a": 0.8, "b": 0.8}


def test_profile_is_measured_once_per_experiment(trial_channel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_alloc, "measurements", 0)
    first = aup.create_compressor(OneFragile(), job(0.4))
    for sparsity in (0.2, 0.6):  # later trials (fresh models, other targets) read the cached profile
        aup.create_compressor(OneFragile(), job(sparsity))
    assert torch_alloc.measurements == 1
    cached = json.loads((trial_channel / "exp.sensitivity.json").read_text())
    assert len(cached) == 1 and set(next(iter(cached.values()))) == {"conv1", "conv2", "conv3"}
    records = [json.loads(line) for line in (trial_channel / "exp-0.channel.jsonl").read_text().splitlines()]
    reported = [r["metrics"][alloc.ATTR] for r in records if r.get("kind") == "metrics" and alloc.ATTR in r["metrics"]]
    assert reported[0] == {name: layer.config["sparsity"] for name, layer in first.layers.items()}


def test_search_space_has_one_global_dimension() -> None:
    section = {"compressor": {"type": "choice", "range": ["l1_filter", "fpgm"]}, "allocation": "sensitivity",
               "config_list": [{"sparsity": {"type": "float", "range": [0.1, 0.8]}, "op_names": ["conv1", "conv2", "conv3"]}]}
    builder = CompressionJobConfigBuilder(section)
    assert builder.space.names == ["compressor", "global sparsity (conv1, conv2, conv3)"]
    built = builder.build({"compressor": "fpgm", "global sparsity (conv1, conv2, conv3)": 0.5})
    assert built["config_list"] == [{"sparsity": 0.5, "op_names": ["conv1", "conv2", "conv3"]}]
    assert built[alloc.JOB_KEY] == {"method": "sensitivity", "max_sparsity": 0.9, "mode": "global"}


@pytest.mark.parametrize("option, message", [
    ("greedy", "compression.allocation.method: expected one of sensitivity, uniform, got 'greedy'"),
    ({"method": "uniform", "max_sparsity": 1.5}, "compression.allocation.max_sparsity: expected a number in [0.1, 1)"),
    ({"method": "sensitivity", "max_sparsity": 0.5}, "goes above the allocation's max_sparsity 0.5"),
])
def test_bad_option_is_one_line_before_any_trial(option: object, message: str) -> None:
    section = {"compressor": "l1_filter", "allocation": option,
               "config_list": [{"sparsity": {"type": "float", "range": [0.1, 0.8]}, "op_names": ["conv1", "conv2"]}]}
    problems = check_compression(section)
    assert len(problems) == 1 and message in problems[0] and "\n" not in problems[0]


def test_allocation_refused_for_a_quantizer() -> None:
    section = {"type": "quantization", "compressor": "qat", "allocation": "uniform",
               "config_list": [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Conv2d"]}]}
    assert check_compression(section) == [
        "compression.allocation: applies to the torch pruners " + ", ".join(alloc.PRUNERS) + ", not 'qat'"]


def test_a_pipeline_stage_is_allocated_too() -> None:
    section = [{"compressor": "l1_filter", "allocation": "sensitivity",
                "config_list": [{"sparsity": {"type": "float", "range": [0.2, 0.6]}, "op_names": ["conv1", "conv2", "conv3"]}]},
               {"type": "quantization", "compressor": "naive",
                "config_list": [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Conv2d"]}]}]
    builder = CompressionJobConfigBuilder(section)
    job = builder.build({"global sparsity (conv1, conv2, conv3)": 0.4})
    compressor = aup.create_compressor(OneFragile(), job, dummy_input=torch.randn(4, 1, 8, 8))
    used = {entry["op_names"][0]: entry["sparsity"] for entry in compressor.specs[0].config_list}
    assert used["conv2"] < min(used["conv1"], used["conv3"])
    assert compressor.specs[1].config_list == job["compression_pipeline"][1]["config_list"]  # the quantizer as given


SEED_SECTION = {"compressor": "l1_filter", "allocation": {"method": "sensitivity", "mode": "seed", "seeds": 2},
                "config_list": [{"sparsity": {"type": "float", "range": [0.1, 0.8]}, "op_names": ["conv1", "conv2", "conv3"]}]}


def test_seed_mode_keeps_one_dimension_per_layer() -> None:
    builder = CompressionJobConfigBuilder(SEED_SECTION)
    names = ["sparsity (conv1)", "sparsity (conv2)", "sparsity (conv3)"]
    assert builder.space.names == names
    (allocation, dims), = builder.allocation_seeds()
    assert allocation.seeds == 2 and dims == [(n, n[10:-1], 0.1, 0.8) for n in names]
    assert builder.build(dict.fromkeys(names, 0.5))[alloc.JOB_KEY]["mode"] == "seed"


def test_seed_mode_trial_keeps_its_values_and_reports_the_profile(trial_channel: Path) -> None:
    config = CompressionJobConfigBuilder(SEED_SECTION).build(
        {"sparsity (conv1)": 0.2, "sparsity (conv2)": 0.4, "sparsity (conv3)": 0.6})
    compressor = aup.create_compressor(OneFragile(), config)
    assert {n: layer.config["sparsity"] for n, layer in compressor.layers.items()} == \
        {"conv1": 0.2, "conv2": 0.4, "conv3": 0.6}
    records = [json.loads(line) for line in (trial_channel / "exp-0.channel.jsonl").read_text().splitlines()]
    (profile,) = [r["metrics"][alloc.PROFILE_ATTR] for r in records if alloc.PROFILE_ATTR in r.get("metrics", {})]
    assert set(profile["curves"]) == set(profile["sizes"]) == {"conv1", "conv2", "conv3"}


@pytest.mark.parametrize("option, message", [
    ({"method": "sensitivity", "mode": "seeds"}, "compression.allocation.mode: expected \"global\""),
    ({"method": "sensitivity", "seeds": 2}, "compression.allocation.seeds: applies to \"mode\": \"seed\" only"),
    ({"method": "sensitivity", "mode": "seed", "seeds": 0}, "compression.allocation.seeds: expected an integer"),
])
def test_bad_seed_options_are_one_line(option: object, message: str) -> None:
    problems = check_compression({**SEED_SECTION, "allocation": option})
    assert len(problems) == 1 and message in problems[0]


def test_seed_mode_needs_named_layers() -> None:
    section = {**SEED_SECTION, "config_list": [{"sparsity": {"type": "float", "range": [0.1, 0.8]},
                                                "op_types": ["Conv2d"]}]}
    assert check_compression(section) == [
        "compression.config_list[0]: \"allocation\" mode \"seed\" needs one searched sparsity per layer: name the "
        "layers in op_names (and do not set expand_op_names to false)"]


def test_a_layer_the_pruner_cannot_prune_is_reported_as_without_allocation() -> None:
    config = job(0.4)
    config["config_list"][0]["op_names"].append("head")
    with pytest.raises(ValueError, match=r"'l1_filter' cannot compress 'head' \(Linear\): it prunes only Conv2d"):
        aup.create_compressor(OneFragile(), config)
