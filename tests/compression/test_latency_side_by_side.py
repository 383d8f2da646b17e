"""Latency ratios measured side by side with the dense baseline (issue: ratios were noise).

Under real load the same model's ratio stays within 10 % from trial to trial:
``python benchmarks/latency_side_by_side.py`` measures that. The suite checks the mechanism with a
deterministic clock instead, since no test may depend on how busy the machine is."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import aup
from aup.compression.torch.deploy import baseline
from aup.compression.torch.deploy.latency import interleaved
from aup.compression.torch.zoo import DigitsCNN
from aup.views import fmt

PRUNE = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
         "config_list": [{"sparsity": 0.75, "op_types": ["Conv2d"]}]}


def _fresh_trial(monkeypatch: pytest.MonkeyPatch, folder: Path, trial: int) -> Path:
    """What a new trial process starts with: no dense snapshot, its own channel in the jobs folder."""
    monkeypatch.setattr(baseline, "_state", {"model": None, "fingerprint": None, "metrics": {}, "deferred": 0})
    channel = folder / f"exp-{trial}.channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    monkeypatch.setenv("AUP_TRIAL", str(trial))
    return channel


def _trial_metrics(monkeypatch: pytest.MonkeyPatch, folder: Path, trial: int, state: dict) -> dict:
    channel = _fresh_trial(monkeypatch, folder, trial)
    model = DigitsCNN(width=48)
    model.load_state_dict(state)
    x = torch.rand(4, 1, 8, 8)
    pruner = aup.create_compressor(model, PRUNE)
    pruner.compress()
    pruner.apply_speedup(x[:1])
    pruner.report_metrics(example_input=x[:1])
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    return {k: v for r in records if r["kind"] == "metrics" for k, v in r["metrics"].items()}


def test_a_trial_reports_its_latency_ratio_and_spread_from_one_side_by_side_run(tmp_path, monkeypatch):
    torch.manual_seed(0)
    metrics = _trial_metrics(monkeypatch, tmp_path, 0, DigitsCNN(width=48).state_dict())
    for name in ("latency_ms", "baseline_latency_ms", "latency_ms_ratio", "latency_ms_ratio_iqr"):
        assert name in metrics, name
    assert metrics["latency_ms_ratio_iqr"] >= 0 and metrics["latency_ms_ratio"] > 0
    assert metrics["latency_ms_torch"] == metrics["latency_ms"]  # both from the side-by-side run


class _FakeClock:
    """A deterministic clock: each call of a "model" advances it by its cost times the current load,
    and the load switches between 1x and 4x every ``period`` calls (of either model)."""

    def __init__(self, period: int) -> None:
        self.now, self.calls, self.period = 0.0, 0, period

    def perf_counter(self) -> float:
        return self.now

    def model(self, cost_ms: float):
        def call() -> None:
            load = 4.0 if (self.calls // self.period) % 2 else 1.0
            self.calls += 1
            self.now += cost_ms * load / 1000.0
        return call


def test_interleaved_rounds_cancel_a_load_that_comes_and_goes(monkeypatch):
    from aup.compression.torch.deploy import latency

    clock = _FakeClock(period=50)
    monkeypatch.setattr(latency, "_clock", clock.perf_counter)
    side = interleaved(clock.model(0.2), clock.model(0.4), rounds=15)  # the model costs half the baseline
    assert side.ratio == pytest.approx(0.5, rel=0.10)
    assert side.ratio_iqr < 0.1  # every round saw one load on both sides
    # the old way under the same load: each timed alone, 60 calls one after the other, reads 0.125
    clock = _FakeClock(period=50)
    monkeypatch.setattr(latency, "_clock", clock.perf_counter)
    alone = latency._time(clock.model(0.2), 60) / latency._time(clock.model(0.4), 60)
    assert alone == pytest.approx(0.125)


def test_views_mark_a_latency_ratio_within_its_spread():
    noisy = {"latency_ms": 0.05, "latency_ms_ratio": 0.9, "latency_ms_ratio_iqr": 0.3}
    clear = {"latency_ms": 0.05, "latency_ms_ratio": 0.5, "latency_ms_ratio_iqr": 0.05}
    assert fmt.cell("latency_ms", noisy) == "0.05 ms (~0.9x +-0.3)"
    assert fmt.cell("latency_ms", clear) == "0.05 ms (0.5x)"
    assert fmt.cell("latency_ms", {"latency_ms": 0.05, "latency_ms_ratio": 0.9}) == "0.05 ms (0.9x)"


def test_rows_keep_the_side_by_side_ratio_instead_of_dividing_by_the_cached_baseline():
    from aup.views.rows import TrialRow

    row = TrialRow(0, "COMPLETE", [0.9], {}, {"latency_ms": 0.05, "baseline_latency_ms": 0.2,
                                                "latency_ms_ratio": 0.7, "latency_ms_ratio_iqr": 0.01}).flat()
    assert row["latency_ms_ratio"] == 0.7


def test_a_deployed_trial_times_the_dense_onnx_file_cached_by_the_first_trial(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    state = DigitsCNN().state_dict()
    ratios = []
    for trial in (0, 1):
        channel = _fresh_trial(monkeypatch, tmp_path, trial)
        model = DigitsCNN()
        model.load_state_dict(state)
        pruner = aup.create_compressor(model, {**PRUNE, "compression_deploy": {"int8": "none"}},
                                       dummy_input=torch.rand(2, 1, 8, 8))
        pruner.compress()
        pruner.export_model("model.pth", folder_name=str(tmp_path / str(trial)))
        records = [json.loads(line) for line in channel.read_text().splitlines()]
        metrics = {k: v for r in records if r["kind"] == "metrics" for k, v in r["metrics"].items()}
        ratios.append(metrics["latency_ms_ratio"])
        assert metrics["latency_ms_ratio_iqr"] >= 0 and metrics["baseline_latency_ms"] > 0
        if trial == 1:  # the dense file of trial 0 is timed: this trial copied no dense model
            assert baseline._state["model"] is None
    assert len(list(tmp_path.glob("exp.baseline-*.onnx"))) == 1


def test_a_torch_trial_over_the_copy_limit_keeps_no_dense_copy(tmp_path, monkeypatch):
    torch.manual_seed(0)
    state = DigitsCNN(width=48).state_dict()
    _trial_metrics(monkeypatch, tmp_path, 0, state)  # measures and caches the baseline
    monkeypatch.setattr(baseline, "_COPY_LIMIT_MB", 0.001)
    metrics = _trial_metrics(monkeypatch, tmp_path, 1, state)
    assert baseline._state["model"] is None
    assert "latency_ms_ratio" not in metrics and "baseline_latency_ms" in metrics
