"""Quantizer ``config_list`` defaults (torch-free); the checks are the shared schema's.

``aup.compression.schemas`` checks keys, value types, bit ranges and which bit width applies to which
quant type for every compressor (NNI 2.0's schema with clear one-line errors; naive is int8 only, BNN
binary), before any trial and inside it. This module keeps the quantizers' names for those rules and
the entries an empty config_list stands for, read from the quantizer's entry in
:mod:`aup.compression.catalog`. Errors name the entry and key, e.g. ``config_list[0].quant_bits: ...``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import aup.compression.catalog as catalog
from aup.compression.schemas import quant_types_of, resolve_bits, validate_config_list

__all__ = ["validate_quant_config_list", "quant_types_of", "resolve_bits", "default_entries"]


def validate_quant_config_list(name: str, config_list: Any) -> None:
    """Raise ValueError (entry index and key in the message) for a config_list ``name`` cannot run.

    Keys, types, bit ranges (naive 8 only, bnn 1 only) and a bit width for every listed quant type
    are all the shared schema's job (:func:`aup.compression.schemas.validate_config_list`), which the
    experiment validator runs before any trial.
    """
    validate_config_list("torch", "quantization", name, config_list)


def default_entries(name: str, config_list: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Entries actually applied: where the catalog says so (``empty_means_all``, the naive quantizer),
    an empty list means "all weighted layers at the default width".

    The seed documents ``"compressor": "naive", "config_list": []``; in NNI that quantized nothing,
    which no user intends.
    """
    entry = catalog.get("torch", "quantization", name)
    quant = entry.quant if entry is not None else None
    if not config_list and quant is not None and quant.empty_means_all:
        return [{"quant_types": list(quant.types), "quant_bits": quant.default_bits, "op_types": ["default"]}]
    return [dict(entry) for entry in config_list]
