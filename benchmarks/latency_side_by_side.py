"""Latency ratio of one model across trials under changing load: side by side vs baseline-once.

Simulates ``--trials`` trials of one experiment in this process (each with a fresh dense snapshot
and its own result channel, as a new trial process has), all compressing the same model the same
way (l1_filter 75 % on the convolutions of a width-48 digits CNN, shrunk). Every other trial runs
next to ``--busy`` processes spinning on the CPU. For each trial it prints

* the ratio aup stores now (``latency_ms_ratio``: the model and the dense baseline timed
  interleaved in the trial, median of the per-round ratios, with their IQR), and
* the ratio the old way: the model timed alone in this trial over the baseline timed alone by the
  first trial (``baseline_latency_ms`` as cached in the experiment's ``baseline.json``),

and, per method, the spread of the ratios over trials (max / min - 1). ``--deploy`` times the ONNX
files in ONNX Runtime instead of the torch models.

    python benchmarks/latency_side_by_side.py                 # 8 trials, torch, 2 busy processes
    python benchmarks/latency_side_by_side.py --deploy --trials 6
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import aup
from aup.compression.torch.deploy import baseline
from aup.compression.torch.measure import latency_ms
from aup.compression.torch.zoo import DigitsCNN

PRUNE = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
         "config_list": [{"sparsity": 0.75, "op_types": ["Conv2d"]}]}


def trial(folder: Path, number: int, state: dict, deploy: bool) -> dict:
    """One simulated trial: compress, shrink, export; returns its reported metrics plus the alone timing."""
    baseline._state.update({"model": None, "fingerprint": None, "metrics": {}, "deferred": 0})
    channel = folder / f"exp-{number}.channel.jsonl"
    os.environ["AUP_CHANNEL"], os.environ["AUP_TRIAL"] = str(channel), str(number)
    model = DigitsCNN(width=48)
    model.load_state_dict(state)
    x = torch.rand(2, 1, 8, 8)
    config = {**PRUNE, "compression_deploy": {"int8": "none"}} if deploy else PRUNE
    pruner = aup.create_compressor(model, config, dummy_input=x)
    pruner.compress()
    pruner.apply_speedup(x[:1])
    pruner.export_model("model.pth", folder_name=str(folder / str(number)))
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    metrics = {k: v for r in records if r["kind"] == "metrics" for k, v in r["metrics"].items()}
    if deploy:
        from aup.compression.torch.deploy.settings import load_deployed, ort_latency_ms

        path = str(folder / "alone.onnx")
        pruner.write_deployed(path, example_input=x)
        metrics["alone_ms"] = ort_latency_ms(load_deployed(path, threads=1), x)
    else:
        metrics["alone_ms"] = latency_ms(model, x)
    return metrics


def spread(values: list[float]) -> float:
    return max(values) / min(values) - 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--busy", type=int, default=2, help="processes spinning next to every other trial")
    parser.add_argument("--deploy", action="store_true", help="time the ONNX files in ONNX Runtime")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    state = DigitsCNN(width=48).state_dict()
    side, old = [], []
    with tempfile.TemporaryDirectory(prefix="aup-latency-") as tmp:
        folder = Path(tmp)
        first_baseline = None
        print("| trial | load | side by side (IQR) | old: alone / first trial's baseline |")
        print("|---|---|---|---|")
        for number in range(args.trials):
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)] \
                if number % 2 else []
            try:
                metrics = trial(folder, number, state, args.deploy)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
            cached = json.loads((folder / "exp.baseline.json").read_text())
            first_baseline = first_baseline or next(iter(cached.values()))["latency_ms"]
            side.append(metrics["latency_ms_ratio"])
            old.append(metrics["alone_ms"] / first_baseline)
            print(f"| {number} | {'busy x' + str(args.busy) if busy else 'quiet'} | {side[-1]:.3f} "
                  f"({metrics['latency_ms_ratio_iqr']:.3f}) | {old[-1]:.3f} |")
    print(f"\nside by side: median {statistics.median(side):.3f}, max/min - 1 = {spread(side):.1%}")
    print(f"old way:      median {statistics.median(old):.3f}, max/min - 1 = {spread(old):.1%}")


if __name__ == "__main__":
    main()
