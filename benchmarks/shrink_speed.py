"""Time of the physical shrink of a hand-written ResNet-50 (224x224) after 50% L1 filter pruning.

DESIGN.md's budget: ``shrink_model`` under 1 s on 2 CPU cores, masked and shrunk outputs equal
within 1e-4.  The masks come from aup's own ``l1_filter`` pruner (``dependency_aware=True``, so
residual groups share their pruned channels) on every Conv2d; the final Linear is never pruned.
The model is freshly initialised (BatchNorm running statistics at their defaults), so a filter
masked by the pruner also has a zero BatchNorm output and can really be removed.

Each run builds a fresh model and masks (not timed), then times ``shrink_model`` (dependency
graph built once, whose trace also gives the reference output, the pruning, and one verification
forward pass).  Reported: median of the runs, params / MACs / batch-1 latency before and after,
max abs diff, and the ratio to the 1 s target.

Run:  python benchmarks/shrink_speed.py [--runs 3] [--threads 2] [--size 224]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn


def l1_masks(model: nn.Module, x: torch.Tensor) -> dict:
    """50% L1 filter masks from aup's l1_filter pruner (the hooks are removed; masks stay applied)."""
    import aup

    config = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
              "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}
    compressor = aup.create_compressor(model, config, dependency_aware=True, dummy_input=x)
    compressor.compress()
    masks = compressor.get_masks()
    compressor.masks.apply_all()
    compressor.masks.detach()
    return masks


def one_run(size: int, measure: bool) -> dict:
    from aup.compression.torch import zoo
    from aup.compression.torch.measure import latency_ms, measure_model
    from aup.compression.torch.shrink import shrink_model

    torch.manual_seed(0)
    model = zoo.resnet50().eval()
    x = torch.randn(1, 3, size, size)
    masks = l1_masks(model, x)
    row: dict = {}
    if measure:
        before = measure_model(model, x, masks=masks, latency=False)
        row["macs_before"] = before["macs"]
        row["latency_before"] = latency_ms(model, x, runs=5, warmup=1)
    report = shrink_model(model, masks, x)
    row.update(seconds=report.seconds, params_before=report.params_before, params_after=report.params_after,
               max_abs_diff=report.max_abs_diff, kept_dense=len(report.kept_dense),
               kept_masked=sum(report.kept_masked.values()))
    if measure:
        row["macs_after"] = measure_model(model, x, latency=False)["macs"]
        row["latency_after"] = latency_ms(model, x, runs=5, warmup=1)
    return row


def main() -> None:
    from aup.compression.torch.measure import LATENCY_THREADS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [one_run(args.size, measure=(i == 0)) for i in range(args.runs)]
    first = rows[0]
    median = statistics.median(r["seconds"] for r in rows)
    print(f"ResNet-50 {args.size}x{args.size}, 50% L1 filter masks, {args.threads} threads, {args.runs} fresh runs")
    runs = ", ".join(f"{r['seconds']:.3f}" for r in rows)
    print(f"shrink_model time  : median {median:.3f} s, best {min(r['seconds'] for r in rows):.3f} s  (runs: {runs})")
    print(f"load average       : {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings scale with contention)")
    print(f"target 1 s         : ratio {median / 1.0:.2f}  ({'OK' if median < 1.0 else 'OVER'})")
    print(f"params             : {first['params_before']:,} -> {first['params_after']:,} "
          f"({first['params_after'] / first['params_before']:.3f})")
    print(f"MACs (mask-aware)  : {first['macs_before']:,.0f} -> {first['macs_after']:,.0f}")
    print(f"latency b1 (ms)    : {first['latency_before']:.1f} -> {first['latency_after']:.1f} "
          f"(median of 5, {LATENCY_THREADS} threads)")
    print(f"max abs diff       : {first['max_abs_diff']:.2e} (atol 1e-4)")
    print(f"kept dense / masked channels kept: {first['kept_dense']} / {first['kept_masked']}")
    t = time.perf_counter()
    with torch.no_grad():
        from aup.compression.torch import zoo

        zoo.resnet50().eval()(torch.randn(1, 3, args.size, args.size))
    print(f"(one dense forward pass on this machine now: {time.perf_counter() - t:.3f} s)")


if __name__ == "__main__":
    main()
