"""Per-layer precision as deployed: uniform fp32 / int8 / int4 against mixed configurations, one run.

Three models on scikit-learn's digits: the digits CNN and the digits transformer of the examples
(their cached pretrained weights, ``experiments/digits_model.py`` and
``experiments/transformer/digits_transformer.py``) and the zoo's ResNet-style CNN at 32x32 (trained
here). Every quantized variant is what an aup trial ships: the ``qat`` quantizer (weights only, the
per-layer bits of the variant, 32 = float) attached, ``--epochs`` of fine-tuning, then
``export_model(..., format="onnx")`` (8 bits: int8 QDQ calibrated on the fine-tuning batches; 4 bits:
MatMulNBits for linear/attention layers, UINT4 codes for convolutions). fp32 is the pretrained model
fine-tuned for the same epochs without a quantizer, exported as it is.

Reported per variant: deployed file bytes (and ratio to uniform int8), ``weight_bits`` as shipped,
ORT batch-1 latency (``--threads`` threads; rounds interleaved across all variants of a model,
median of the per-round medians; ratio to uniform int8), test accuracy of the deployed file.

Mixed configurations: by default the ones named in MIXED below (``search``: the per-layer bits of a
Pareto trial of the example search, ``experiments/mixed/exp_mixed_digits.json`` /
``experiments/transformer/exp_mixed_precision.json``, without its pruning; ``hand``: chosen by hand
from the layer sizes). ``--mixed MODEL=JSON`` replaces them, e.g.
``--mixed 'digits CNN={"conv1": 8, "conv2": 4, "fc1": 4, "fc2": 32}'``.

Targets (issue 24): the transformer's all-4-bit file <= 0.6x its all-int8 file; at least one mixed
configuration dominates uniform int8 (smaller file, accuracy equal or better).

``--unfolded`` adds the uniform int8 and int4 files written without the shape-arithmetic folding of
``aup/compression/torch/deploy/compact.py`` (same weights, same interleaved timing), to measure what
that pass does.

Run:  python benchmarks/mixed_precision.py [--rounds 7] [--runs 30] [--threads 1] [--epochs 1] [--unfolded]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, os.path.join(ROOT, "experiments", "transformer"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.deploy import onnx_export  # noqa: E402
from aup.compression.torch.deploy.settings import export_onnx, load_deployed  # noqa: E402

TRANSFORMER_LAYERS = ["embed", "encoder.layers.0.self_attn", "encoder.layers.0.self_attn.out_proj",
                      "encoder.layers.0.linear1", "encoder.layers.0.linear2", "encoder.layers.1.self_attn",
                      "encoder.layers.1.self_attn.out_proj", "encoder.layers.1.linear1", "encoder.layers.1.linear2",
                      "head"]

# name -> (how it was chosen, {layer: bits}); layers not named keep the uniform default of 8
MIXED: dict[str, dict[str, tuple[str, dict[str, int]]]] = {
    "digits CNN": {
        "mixed A": ("search", {"conv1": 8, "conv2": 4, "fc1": 4, "fc2": 32}),
        "mixed B": ("hand", {"conv1": 8, "conv2": 8, "fc1": 4, "fc2": 8}),
    },
    "ResNet-style 32x32": {
        "mixed A": ("hand", {"layer4.0.conv1": 4, "layer4.0.conv2": 4}),
        "mixed B": ("hand", {"layer3.0.conv2": 4, "layer4.0.conv1": 4, "layer4.0.conv2": 4, "fc": 32}),
    },
    "digits transformer": {
        "mixed A": ("search", dict(zip(TRANSFORMER_LAYERS, (32, 4, 32, 4, 8, 4, 32, 8, 8, 4)))),
        # the two layers the sensitivity profile (aup show) ranks first stay at 8 bits, the rest 4
        "mixed B": ("hand", {name: 8 if name in ("embed", "encoder.layers.0.self_attn") else 4
                             for name in TRANSFORMER_LAYERS}),
    },
}


def _upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def pretrained(name: str, digits: zoo.DigitsData, epochs: int) -> tuple[Callable[[], torch.nn.Module], int]:
    """(a builder of fresh copies of the pretrained model, input size)."""
    if name == "digits CNN":
        from digits_model import pretrained_model

        return pretrained_model, 8
    if name == "digits transformer":
        from digits_transformer import pretrained_model as transformer

        return transformer, 8
    torch.manual_seed(0)
    model = zoo.resnet_small(num_classes=10, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        zoo.train_epoch(model, _upsample(digits.x_train, 32), digits.y_train, optimizer, seed=epoch)
    state = model.state_dict()

    def build() -> torch.nn.Module:
        fresh = zoo.resnet_small(num_classes=10, in_channels=1)
        fresh.load_state_dict(state)
        return fresh

    return build, 32


def quantizable(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
            or isinstance(m._parameters.get("in_proj_weight"), torch.nn.Parameter)]


def accuracy(model: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(sum(int((model(x[i:i + 256]).argmax(1) == y[i:i + 256]).sum()) for i in range(0, len(y), 256))
                     / len(y))


def deploy(build: Callable[[], torch.nn.Module], bits: dict[str, int], x_train: torch.Tensor, y_train: torch.Tensor,
           epochs: int, path: str, fold: bool = True) -> dict[str, Any]:
    """The file a trial with these per-layer bits ships (``fold=False``: without folding its shape
    arithmetic), and its shipped-precision record."""
    model = build()
    entries = [{"quant_types": ["weight"], "quant_bits": b, "op_names": [name]} for name, b in bits.items()]
    quantizer = aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
                                              "compressor": "qat", "config_list": entries}, dummy_input=x_train[:1])
    quantizer.compress()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        zoo.train_epoch(model, x_train, y_train, optimizer, seed=epoch)
    quantizer.step()
    folder, name = os.path.split(path)
    unfolded = mock.patch.object(onnx_export, "fold_shape_arithmetic", lambda model: 0)
    with contextlib.nullcontext() if fold else unfolded:
        quantizer.export_model(name, folder_name=folder, format="onnx", dummy_input=x_train[:1])
    record = quantizer.shipped_precision
    return {"path": path, "weight_bits": record["weight_bits"], "note": record["note"]}


def time_once(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench(name: str, args: argparse.Namespace, digits: zoo.DigitsData, tmp: str) -> dict[str, Any]:
    build, size = pretrained(name, digits, args.resnet_epochs)
    x_train, x_test = _upsample(digits.x_train, size), _upsample(digits.x_test, size)
    layers = quantizable(build())
    configs: dict[str, tuple[str, dict[str, int]]] = {
        "uniform int8": ("", {n: 8 for n in layers}), "uniform int4": ("", {n: 4 for n in layers})}
    for label, (how, chosen) in MIXED[name].items():
        if chosen:
            configs[label] = (how, {n: chosen.get(n, 8) for n in layers})
    variants: dict[str, dict[str, Any]] = {}
    dense = build()  # fine-tuned like the quantized variants, so accuracies compare
    optimizer = torch.optim.Adam(dense.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        zoo.train_epoch(dense, x_train, digits.y_train, optimizer, seed=epoch)
    fp32 = export_onnx(dense.eval(), x_test[:1], os.path.join(tmp, f"{size}_{len(layers)}_fp32.onnx"))
    variants["uniform fp32"] = {"path": fp32, "weight_bits": 32.0, "note": None, "how": "", "bits": {}}
    runs = [(label, how, bits, True) for label, (how, bits) in configs.items()]
    if args.unfolded:
        runs += [(f"{label} unfolded", "", configs[label][1], False) for label in ("uniform int8", "uniform int4")]
    for label, how, bits, fold in runs:
        path = os.path.join(tmp, f"{name.split()[0]}_{label.replace(' ', '_')}.onnx")
        variants[label] = {**deploy(build, bits, x_train, digits.y_train, args.epochs, path, fold), "how": how,
                           "bits": bits}
    sessions = {label: load_deployed(v["path"], threads=args.threads) for label, v in variants.items()}
    sample = x_test[:1]
    feeds = {label: s.feeds(sample) for label, s in sessions.items()}
    medians: dict[str, list[float]] = {label: [] for label in sessions}
    for label, s in sessions.items():  # warm-up
        time_once(lambda s=s, f=feeds[label]: s.session.run(None, f), 10)
    for _ in range(args.rounds):
        for label, s in sessions.items():
            medians[label].append(time_once(lambda s=s, f=feeds[label]: s.session.run(None, f), args.runs))
    for label, v in variants.items():
        v["bytes"] = os.path.getsize(v["path"])
        v["latency"] = statistics.median(medians[label])
        v["accuracy"] = accuracy(sessions[label], x_test, digits.y_test)
    return {"name": name, "params": sum(p.numel() for p in dense.parameters()), "variants": variants}


def _short(bits: dict[str, int]) -> str:
    counts: dict[int, int] = {}
    for b in bits.values():
        counts[b] = counts.get(b, 0) + 1
    return ", ".join(f"{n}x{b}" for b, n in sorted(counts.items(), reverse=True))


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    variants = result["variants"]
    int8 = variants["uniform int8"]
    print(f"\n{result['name']} ({result['params']:,} parameters), batch 1, {args.threads} thread(s), median of "
          f"{args.rounds} interleaved rounds x {args.runs} runs, {args.epochs} QAT epoch(s) per quantized variant")
    print(f"  {'variant':23} {'file bytes':>10} {'/int8':>6} {'w.bits':>6} {'lat ms':>8} {'/int8':>6} "
          f"{'accuracy':>8}  layers (count x bits)")
    for label, v in variants.items():
        how = f" [{v['how']}]" if v["how"] else ""
        print(f"  {label:23} {v['bytes']:>10,} {v['bytes'] / int8['bytes']:>6.2f} {v['weight_bits']:>6.2f} "
              f"{v['latency']:>8.4f} {v['latency'] / int8['latency']:>6.2f} {v['accuracy']:>8.4f}  "
              f"{_short(v['bits']) or 'all float'}{how}")
    dominating = [label for label, v in variants.items() if label.startswith("mixed")
                  and v["bytes"] < int8["bytes"] and v["accuracy"] >= int8["accuracy"]]
    print(f"  mixed configurations dominating uniform int8 (smaller, accuracy >= int8): "
          f"{', '.join(dominating) or 'none'}")
    for label, v in variants.items():
        if label.startswith("mixed"):
            print(f"  {label}: {json.dumps(v['bits'])}")
    if result["name"] == "digits transformer":
        ratio = variants["uniform int4"]["bytes"] / int8["bytes"]
        print(f"  all-4-bit file / all-int8 file: {ratio:.3f}x (target <= 0.6x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1, help="QAT fine-tuning epochs per quantized variant")
    parser.add_argument("--resnet-epochs", type=int, default=3, help="pre-training epochs of the ResNet-style CNN")
    parser.add_argument("--models", default="digits CNN,ResNet-style 32x32,digits transformer")
    parser.add_argument("--unfolded", action="store_true",
                        help="also time the uniform int8/int4 files without the shape-arithmetic folding")
    parser.add_argument("--mixed", action="append", default=[], metavar="MODEL=JSON",
                        help="replace the mixed configurations of MODEL by this {layer: bits} (repeatable)")
    args = parser.parse_args()
    for item in args.mixed:
        model, _, text = item.partition("=")
        MIXED[model] = {"mixed A": ("given", json.loads(text))}
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    digits = zoo.load_digits_tensors(seed=0)
    with tempfile.TemporaryDirectory(prefix="aup-bench-mixed-") as tmp:
        os.environ.setdefault("XDG_CACHE_HOME", tmp)
        for name in args.models.split(","):
            report(bench(name.strip(), args, digits, tmp), args)


if __name__ == "__main__":
    main()
