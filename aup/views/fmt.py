"""How metric values read to a human: units, magnitudes and ratios to the baseline.

One place for it so the terminal tables and the plot axes agree (``model_bytes`` is "18.3 kB" in
a table and "model size (bytes)" on a log axis).
"""
from __future__ import annotations

import math
from typing import Any

from aup import metrics as M

BYTES = frozenset({M.MODEL_BYTES, M.MODEL_BYTES_GZIP, M.MODEL_BYTES_PACKED})
COUNTS = frozenset({M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS})
UNITS = {M.MODEL_BYTES: "bytes", M.MODEL_BYTES_GZIP: "bytes", M.PARAM_COUNT: "parameters",
         M.NONZERO_PARAMS: "non-zero parameters", M.MACS: "MACs per sample", M.LATENCY_MS: "ms",
         M.LATENCY_MS_TORCH: "ms", M.MODEL_BYTES_PACKED: "bytes",
         M.WEIGHT_BITS: "bits per weight", M.SPARSITY: "fraction of zeros", "duration_s": "s"}
LABELS = {M.MODEL_BYTES: "model size", M.MODEL_BYTES_GZIP: "gzipped model size", M.PARAM_COUNT: "parameters",
          M.NONZERO_PARAMS: "non-zero parameters", M.MACS: "MACs", M.LATENCY_MS: "CPU latency (batch 1)",
          M.LATENCY_MS_TORCH: "torch eager latency (batch 1)", M.MODEL_BYTES_PACKED: "packed torch artifact",
          M.DEPLOY_AGREEMENT: "deployed vs in-memory agreement",
          M.WEIGHT_BITS: "weight bits", M.SPARSITY: "sparsity", M.SCORE: "score",
          M.LATENCY_MS_RATIO_IQR: "spread (IQR) of the side-by-side latency ratio",
          M.PERPLEXITY: "perplexity (lower is better)"}
# Metrics whose natural scale is logarithmic: sizes span orders of magnitude across compressions.
LOG_SCALE = BYTES | COUNTS


def axis_label(name: str) -> str:
    """``model_bytes`` -> ``model size [bytes]``; unknown metrics keep their own name."""
    base = name[:-len("_ratio")] if name.endswith("_ratio") else name
    if name.endswith("_ratio"):
        return f"{LABELS.get(base, base)} / uncompressed"
    unit = UNITS.get(name)
    label = LABELS.get(name, name)
    return f"{label} [{unit}]" if unit and unit != label else label


def _si(value: float, suffixes: tuple[str, ...], step: float) -> str:
    magnitude = 0
    while abs(value) >= step and magnitude < len(suffixes) - 1:
        value /= step
        magnitude += 1
    if magnitude == 0:
        return f"{value:.0f}{suffixes[0]}"
    return f"{value:.3g}{suffixes[magnitude]}"


def value(name: str, raw: Any) -> str:
    """A cell: sizes with units, counts with k/M/G, other floats to 4 significant digits."""
    if raw is None:
        return ""
    if name == "feasible" and isinstance(raw, bool):
        return "yes" if raw else "no"
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return str(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return str(raw)
    if name in BYTES:
        return _si(float(raw), (" B", " kB", " MB", " GB"), 1000.0)
    if name in COUNTS:
        return _si(float(raw), ("", "k", "M", "G"), 1000.0)
    if name in (M.LATENCY_MS, M.LATENCY_MS_TORCH):
        return f"{raw:.3g} ms"
    if name == "duration_s":
        return f"{raw:.1f} s"
    if isinstance(raw, int):
        return str(raw)
    return f"{raw:.4g}"


def ratio(raw: Any) -> str:
    """A ratio to the uncompressed model, e.g. ``0.038x`` (26x smaller)."""
    if not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return ""
    return f"{raw:.2g}x"


def cell(name: str, row: dict[str, Any]) -> str:
    """The value of ``name`` in ``row`` with its baseline ratio appended when one was recorded."""
    text = value(name, row.get(name))
    r = row.get(f"{name}_ratio")
    if text and r is not None:
        spread = row.get(f"{name}_ratio_iqr")
        if within_noise(r, spread):
            return f"{text} (~{ratio(r)} +-{spread:.1g})"
        return f"{text} ({ratio(r)})"
    return text


def within_noise(r: Any, spread: Any) -> bool:
    """Whether a ratio's measured spread (the IQR of a side-by-side latency's rounds) is larger than
    its distance from 1: the difference it shows is noise. Such cells read ``~0.8x +-0.3``."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (r, spread))
    return numbers and spread > abs(r - 1.0)
