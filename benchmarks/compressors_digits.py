"""Accuracy and measured size of every compressor's one-time example on scikit-learn's digits.

Runs each one-time experiment in ``experiments/`` through the real runner (``python -m aup``) into a
throw-away SQLite store, then reads the trials back with ``aup export --format json`` and prints one
Markdown row per compressor: accuracy, parameters, MACs and file bytes, each with its ratio to the
uncompressed model measured in the same trial (``baseline_*``), plus the wall time of the trial.
This is what the README's compressor table shows.

    python benchmarks/compressors_digits.py            # all of them (about 2-3 minutes on 2 cores)
    python benchmarks/compressors_digits.py l1_filter qat   # a subset, by experiment file stem suffix
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = [
    *(f"pruning/exp_{n}.json" for n in (
        "level", "slim", "fpgm", "l1_filter", "l2_filter", "activation_apoz_rank_filter",
        "activation_mean_rank_filter", "taylor_fo_weight_filter")),
    *(f"iterative/exp_{n}.json" for n in ("agp", "agp_l1", "lottery_ticket", "admm", "sensitivity")),
    *(f"search/exp_{n}.json" for n in ("net_adapt", "simulated_annealing", "auto_compress", "amc")),
    *(f"quantization/exp_{n}.json" for n in ("naive", "qat", "dorefa", "bnn")),
    "pipeline/exp_prune_then_quantize.json",
]


def compressor_names(experiment: dict) -> str:
    """The compressor(s) an experiment file applies, e.g. ``l1_filter+qat`` for a pipeline."""
    section = experiment["compression"]
    stages = section if isinstance(section, list) else [section]
    return "+".join(str(stage["compressor"]) for stage in stages)


def run(experiment: str, storage: str) -> tuple[dict, float]:
    """Run one experiment; return its (last) trial row, with the compressor name, and the wall time."""
    path = ROOT / "experiments" / experiment
    spec = json.loads(path.read_text())
    name = spec["name"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aup", str(path), "--storage", storage],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{experiment} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    exported = subprocess.run([sys.executable, "-m", "aup", "export", name, "--format", "json", "--storage", storage],
                              cwd=ROOT, capture_output=True, text=True, check=True)
    row = json.loads(exported.stdout)[-1]
    row.setdefault("compressor", compressor_names(spec))
    return row, seconds


def _get(row: dict, key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def cell(row: dict, key: str, unit: str = "") -> str:
    value, base = _get(row, key), _get(row, f"baseline_{key}")
    if value is None:
        return "-"
    text = f"{value / 1000:.1f}k{unit}" if value >= 1000 else f"{value:.3g}{unit}"
    return f"{text} ({value / base:.2f}x)" if base else text


def packed_cell(row: dict) -> str:
    """A deployed (ONNX) trial also records aup's packed torch artifact (``model_bytes_packed``), with its
    integer codes at their bit width; its ratio is to the dense model's file, like ``file bytes``."""
    packed, base = _get(row, "model_bytes_packed"), _get(row, "baseline_model_bytes")
    if packed is None:
        return "-"
    return f"{packed / 1000:.1f}kB" + (f" ({packed / base:.2f}x)" if base else "")


def main(selected: list[str]) -> None:
    chosen = [e for e in EXPERIMENTS if not selected or any(e.endswith(f"_{s}.json") for s in selected)]
    with tempfile.TemporaryDirectory(prefix="aup-bench-") as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        print("| example | compressor | accuracy | params | MACs | file bytes | weight bits | trial wall time "
              "| packed torch artifact |")
        print("|---|---|---|---|---|---|---|---|---|")
        for experiment in chosen:
            row, seconds = run(experiment, storage)
            compressor = row["compressor"]
            accuracy = _get(row, "accuracy") or _get(row, "score")
            bits = _get(row, "weight_bits")
            print(f"| `{experiment}` | {compressor or '-'} | {accuracy:.4f} | {cell(row, 'param_count')} | "
                  f"{cell(row, 'macs')} | {cell(row, 'model_bytes', 'B')} | {bits:.3g} | {seconds:.1f} s | "
                  f"{packed_cell(row)} |"
                  if accuracy is not None and bits is not None else f"| `{experiment}` | incomplete row: {row} |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
