"""The whole user path of structured pruning against torch-pruning doing the same job alone.

aup's physical shrink is built on torch-pruning, so torch-pruning on its own is the bar. Per model,
in one process, runs interleaved (aup, torch-pruning, torch-pruning, aup, ...: the order rotates
every round), each on a freshly built model (construction not timed):

* **aup**: ``aup.create_compressor(model, l1_filter 50% on every Conv2d, dependency_aware=True,
  dummy_input=x)`` + ``compress()`` + ``apply_speedup(x)`` (phases timed separately);
* **torch-pruning**: ``tp.pruner.MetaPruner(model, x, importance=GroupMagnitudeImportance(p=1),
  pruning_ratio=0.5, ignored_layers=[classifier])`` construction + ``step()``.

Both remove half of the filters of every prunable conv group; the parameter counts after are
printed next to each other (they differ slightly: aup keeps NNI's per-layer filter choice and
sums scores inside dependency sets, torch-pruning ranks whole groups). Reported: medians and the
ratio aup / torch-pruning (target <= 1.0), on a ResNet-50 (224x224) and a MobileNetV2-style model,
and (``bert``) the BERT-base-shaped encoder of ``transformer_shrink.py`` (50% heads + 50% MLP
channels; aup's ``transformer`` pruner vs torch-pruning's head pruning), interleaved the same way.

Every aup run asserts that the shrink checked masked against shrunk outputs (max abs diff <= 1e-4);
the seconds of that check's forward passes (the masked reference, unless the trace's forward gave
it, and the shrunk model) are printed too, with the ratio aup would have without them.
``--plain`` also times the same pruning without ``dependency_aware`` (interleaved as a third run).
Quick check: ``--runs 1 --size 64 --models resnet50,mobilenetv2``.

Run:  python benchmarks/shrink_speed.py [--runs 5] [--threads 2] [--size 224]
      [--models resnet50,mobilenetv2,bert] [--plain]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

CONFIG = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
          "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}


def build(name: str) -> nn.Module:
    from aup.compression.torch import zoo

    torch.manual_seed(0)
    return (zoo.resnet50() if name == "resnet50" else zoo.mobilenetv2_small(num_classes=1000)).eval()


def classifier(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def run_aup(name: str, x: torch.Tensor, dependency_aware: bool = True) -> dict:
    import aup

    model = build(name)
    t0 = time.perf_counter()
    pruner = aup.create_compressor(model, CONFIG, dependency_aware=dependency_aware, dummy_input=x)
    t1 = time.perf_counter()
    pruner.compress()
    t2 = time.perf_counter()
    pruner.apply_speedup(x)
    t3 = time.perf_counter()
    assert pruner.shrink_report.max_abs_diff <= 1e-4  # the shrink verified masked == shrunk outputs
    return {"total": t3 - t0, "create": t1 - t0, "compress": t2 - t1, "apply_speedup": t3 - t2,
            "check": pruner.shrink_report.check_seconds, "params": sum(p.numel() for p in model.parameters())}


def run_tp(name: str, x: torch.Tensor) -> dict:
    import torch_pruning as tp

    model = build(name)
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[classifier(model)])
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    return {"total": t2 - t0, "create": t1 - t0, "step": t2 - t1, "params": sum(p.numel() for p in model.parameters())}


def interleave(jobs: list, runs: int) -> None:
    """Run every job ``runs`` times, rotating the order each round (a run right after another one is
    not always the same)."""
    for round_ in range(runs):
        for k in range(len(jobs)):
            jobs[(round_ + k) % len(jobs)]()


def cnn(name: str, args: argparse.Namespace) -> None:
    x = torch.randn(1, 3, args.size, args.size)
    run_aup(name, x), run_tp(name, x)  # warm-up: imports, first-call costs
    ours, theirs, plain = [], [], []
    jobs = [lambda: ours.append(run_aup(name, x)), lambda: theirs.append(run_tp(name, x))]
    if args.plain:
        jobs.append(lambda: plain.append(run_aup(name, x, dependency_aware=False)))
    interleave(jobs, args.runs)
    med = {k: statistics.median(r[k] for r in ours) for k in ("total", "create", "compress", "apply_speedup")}
    unchecked = statistics.median(r["total"] - r["check"] for r in ours)
    check = statistics.median(r["check"] for r in ours)
    tp_med = {k: statistics.median(r[k] for r in theirs) for k in ("total", "create", "step")}
    dense = sum(p.numel() for p in build(name).parameters())
    print(f"\n{name} {args.size}x{args.size}, 50% L1 filters, {args.threads} threads, {args.runs} interleaved runs "
          f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  aup create+compress+apply_speedup : {med['total']:.3f} s median (create {med['create']:.3f}, "
          f"compress {med['compress']:.3f}, apply_speedup {med['apply_speedup']:.3f}, of which the output check "
          f"{check:.3f}); params {dense:,} -> {ours[0]['params']:,}")
    print(f"  torch-pruning MetaPruner + step   : {tp_med['total']:.3f} s median (construct {tp_med['create']:.3f}, "
          f"step {tp_med['step']:.3f}); params {dense:,} -> {theirs[0]['params']:,}")
    print(f"  ratio aup / torch-pruning         : {med['total'] / tp_med['total']:.2f}  (target <= 1.0); "
          f"without the output check's forward passes {unchecked / tp_med['total']:.2f}")
    if plain:
        plain_total = statistics.median(r["total"] for r in plain)
        print(f"  without dependency_aware          : {plain_total:.3f} s median, ratio to dependency_aware "
              f"{plain_total / med['total']:.2f} (target <= 1.0); params -> {plain[0]['params']:,}")


def bert(args: argparse.Namespace) -> None:
    import transformers

    import transformer_shrink as ts

    transformers.logging.set_verbosity_error()
    times: dict[str, list[float]] = {"aup": [], "tp": []}
    shapes: dict[str, tuple[int, int]] = {}

    def job(name: str, fn) -> None:
        model, x = ts.build(args.layers)
        before = ts.params(model)
        times[name].append(fn(model, x))
        shapes[name] = (before, ts.params(model))

    interleave([lambda: job("aup", ts.run_aup), lambda: job("tp", ts.run_torch_pruning)], args.runs)
    aup_s, tp_s = statistics.median(times["aup"]), statistics.median(times["tp"])
    print(f"\nbert-base-shaped encoder ({args.layers} layers, 128 tokens), 50% heads + 50% MLP channels, "
          f"{args.threads} threads, {args.runs} interleaved runs (load {os.getloadavg()[0]:.1f})")
    print(f"  aup transformer pruner            : {aup_s:.3f} s median; params {shapes['aup'][0]:,} -> "
          f"{shapes['aup'][1]:,}")
    print(f"  torch-pruning MetaPruner + step   : {tp_s:.3f} s median; params {shapes['tp'][0]:,} -> {shapes['tp'][1]:,}")
    print(f"  ratio aup / torch-pruning         : {aup_s / tp_s:.2f}  (target <= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layers", type=int, default=12, help="encoder layers of the bert model")
    parser.add_argument("--models", default="resnet50,mobilenetv2,bert")
    parser.add_argument("--plain", action="store_true",
                        help="also time the path without dependency_aware (interleaved), as a ratio to the aware one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        bert(args) if name == "bert" else cnn(name, args)


if __name__ == "__main__":
    main()
