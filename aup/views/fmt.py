"""How metric values read to a human: units, magnitudes and ratios to the baseline.

One place for it so the terminal tables and the plot axes agree (``model_bytes`` is "18.3 kB" in
a table and "model size (bytes)" on a log axis); the facts (unit, label, how a value reads) are the
metric's row in the registry (aup.metrics), so a new metric needs no table here.
"""
from __future__ import annotations

import math
from typing import Any

from aup import metrics as M
from aup.numbers import is_finite_number

# Bookkeeping columns that read like metrics but are not in the registry (aup.metrics).
_OWN_UNITS = {"duration_s": "s"}


def log_scale(name: str) -> bool:
    """Sizes and counts (the registry's ``show``): sizes span orders of magnitude across compressions,
    so they get log axes and ticks that read 40 kB, 60 kB, 100 kB."""
    row = M.get(name)
    return row is not None and row.log_scale


def axis_label(name: str) -> str:
    """``model_bytes`` -> ``model size [bytes]``; unknown metrics keep their own name."""
    base = name[:-len("_ratio")] if name.endswith("_ratio") else name
    if name.endswith("_ratio"):
        return f"{M.label(base)} / uncompressed"
    unit = M.unit(name) or _OWN_UNITS.get(name)
    label = M.label(name)
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
    show = M.show(name)
    if show == "bytes":
        return _si(float(raw), (" B", " kB", " MB", " GB"), 1000.0)
    if show == "count":
        return _si(float(raw), ("", "k", "M", "G"), 1000.0)
    if show == "ms":
        return f"{raw:.3g} ms"
    if name == "duration_s":
        return f"{raw:.1f} s"
    if isinstance(raw, int):
        return str(raw)
    return f"{raw:.4g}"


def ratio(raw: Any) -> str:
    """A ratio to the uncompressed model, e.g. ``0.038x`` (26x smaller)."""
    if not is_finite_number(raw):
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
    return is_finite_number(r) and is_finite_number(spread) and spread > abs(r - 1.0)
