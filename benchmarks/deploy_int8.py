"""What ships: torch fp32 eager vs ONNX Runtime fp32 vs ONNX Runtime static int8 (QDQ), one run.

Two models trained here on scikit-learn's digits: the digits CNN (8x8 input, 38k parameters) and
the zoo's ResNet-style model at 32x32 (digits upsampled; about 0.3M parameters, a mid-size CNN for
batch-1 CPU inference). For each: file bytes (torch ``state_dict`` file, fp32 ONNX, int8 ONNX),
batch-1 latency (``--threads`` threads, rounds interleaved across the three variants, median of the
per-round medians) and test accuracy. The int8 file is what ``export_model(..., format="onnx")``
writes for a quantized trial: ``aup.compression.torch.deploy.settings.export_onnx`` with every conv/linear
layer int8, calibrated on 8 training batches of 32.

Targets (docs/design.md, mid-size CNN): int8 file <= 0.3x fp32, ORT int8 latency <= 0.5x torch fp32
eager, accuracy within 1 point.

Run:  python benchmarks/deploy_int8.py [--rounds 7] [--runs 30] [--threads 1] [--epochs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.deploy.settings import export_onnx, load_deployed  # noqa: E402


def _upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def trained(name: str, epochs: int, digits: zoo.DigitsData) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    if name == "digits CNN":
        model, size = zoo.DigitsCNN(), 8
    else:
        model, size = zoo.resnet_small(num_classes=10, in_channels=1), 32
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = _upsample(digits.x_train, size)
    for epoch in range(epochs):
        zoo.train_epoch(model, x, digits.y_train, optimizer, seed=epoch)
    return model.eval(), size


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(sum(int((model(x[i:i + 256]).argmax(1) == y[i:i + 256]).sum()) for i in range(0, len(y), 256))
                     / len(y))


def time_once(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench(name: str, args: argparse.Namespace, digits: zoo.DigitsData, tmp: str) -> dict:
    model, size = trained(name, args.epochs, digits)
    x_train, x_test = _upsample(digits.x_train, size), _upsample(digits.x_test, size)
    torch_file = os.path.join(tmp, f"{size}.pt")
    torch.save(model.state_dict(), torch_file)
    fp32 = export_onnx(model, x_test[:1], os.path.join(tmp, f"{size}_fp32.onnx"))
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    calibration = [x_train[i * 32:(i + 1) * 32] for i in range(8)]
    int8 = export_onnx(model, x_test[:1], os.path.join(tmp, f"{size}_int8.onnx"), int8_modules=layers,
                       calibration=calibration)
    ort_fp32, ort_int8 = load_deployed(fp32, threads=args.threads), load_deployed(int8, threads=args.threads)
    sample = x_test[:1]
    feeds32, feeds8 = ort_fp32.feeds(sample), ort_int8.feeds(sample)
    variants = {
        "torch fp32": lambda: model(sample),
        "ORT fp32": lambda: ort_fp32.session.run(None, feeds32),
        "ORT int8": lambda: ort_int8.session.run(None, feeds8),
    }
    medians: dict[str, list[float]] = {k: [] for k in variants}
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        for fn in variants.values():  # warm-up
            time_once(fn, 10)
        for _ in range(args.rounds):
            for key, fn in variants.items():
                medians[key].append(time_once(fn, args.runs))
    return {
        "name": name, "params": sum(p.numel() for p in model.parameters()),
        "bytes": {"torch fp32": os.path.getsize(torch_file), "ORT fp32": os.path.getsize(fp32),
                  "ORT int8": os.path.getsize(int8)},
        "latency": {k: statistics.median(v) for k, v in medians.items()},
        "accuracy": {"torch fp32": accuracy(model, x_test, digits.y_test),
                     "ORT fp32": accuracy(ort_fp32, x_test, digits.y_test),
                     "ORT int8": accuracy(ort_int8, x_test, digits.y_test)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    digits = zoo.load_digits_tensors(seed=0)
    with tempfile.TemporaryDirectory(prefix="aup-bench-") as tmp:
        os.environ.setdefault("XDG_CACHE_HOME", tmp)
        results = [bench(name, args, digits, tmp) for name in ("digits CNN", "ResNet-style 32x32")]
    for r in results:
        b, lat, acc = r["bytes"], r["latency"], r["accuracy"]
        print(f"\n{r['name']} ({r['params']:,} parameters), batch 1, {args.threads} thread(s), "
              f"median of {args.rounds} interleaved rounds x {args.runs} runs")
        print(f"  {'':12} {'file bytes':>12} {'latency ms':>11} {'accuracy':>9}")
        for key in ("torch fp32", "ORT fp32", "ORT int8"):
            print(f"  {key:12} {b[key]:>12,} {lat[key]:>11.4f} {acc[key]:>9.4f}")
        print(f"  int8 file / fp32 ONNX file      {b['ORT int8'] / b['ORT fp32']:.2f}x   (target <= 0.30x)")
        print(f"  ORT int8 / torch fp32 latency   {lat['ORT int8'] / lat['torch fp32']:.2f}x   (target <= 0.50x)")
        print(f"  ORT fp32 / torch fp32 latency   {lat['ORT fp32'] / lat['torch fp32']:.2f}x")
        print(f"  ORT int8 / ORT fp32 latency     {lat['ORT int8'] / lat['ORT fp32']:.2f}x")
        print(f"  accuracy int8 - torch fp32      {100 * (acc['ORT int8'] - acc['torch fp32']):+.1f} points "
              "(target within 1)")


if __name__ == "__main__":
    main()
