"""The experiment's one-shot quantization-sensitivity profile, as ``aup show`` prints it.

The profile (``quant_sensitivity`` study attribute, written by the runner from the first trial that
called ``aup.compression.quantization_sensitivity``) holds the score with only one layer's weight at
k bits; the table sorts layers from most to least sensitive so a user (or a hand-written search
space) keeps the top ones at 8 or 32 bits.
"""
from __future__ import annotations

from typing import Any

__all__ = ["sensitivity_rows", "render_sensitivity"]


def sensitivity_rows(profile: Any) -> list[tuple[str, float, float]]:
    """``[(layer, score, change from the unquantized score)]``, largest loss first; [] when malformed."""
    if not isinstance(profile, dict) or not isinstance(profile.get("layers"), dict):
        return []
    try:
        baseline = float(profile["baseline"])
        rows = [(str(name), float(score), float(score) - baseline) for name, score in profile["layers"].items()]
    except (KeyError, TypeError, ValueError):
        return []
    return sorted(rows, key=lambda row: (row[2], row[0]))


def render_sensitivity(profile: Any) -> Any | None:
    """A rich Table of :func:`sensitivity_rows`, or None when the experiment has no profile."""
    rows = sensitivity_rows(profile)
    if not rows:
        return None
    from rich.table import Table

    from aup.safe_text import escape

    table = Table(title=f"Quantization sensitivity: score with only that layer's weight at {profile.get('bits')} "
                        f"bits (unquantized {float(profile['baseline']):.4f})")
    for column in ("layer", "score", "change"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, score, change in rows:
        table.add_row(escape(name), f"{score:.4f}", f"{change:+.4f}")
    return table
