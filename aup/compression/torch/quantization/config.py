"""Quantizer ``config_list`` rules on top of the shared schema (torch-free).

``aup.compression.schemas`` checks keys, value types and bit ranges for every compressor (NNI 2.0's
schema with clear one-line errors; naive is int8 only, BNN binary).  This module adds which bit width
applies to which quant type and the defaults, both read from the quantizer's entry in
:mod:`aup.compression.catalog`.  Errors name the entry and key, e.g. ``config_list[0].quant_bits: ...``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import aup.compression.catalog as catalog
from aup.compression.schemas import validate_config_list
from aup.errors import FieldError

__all__ = ["validate_quant_config_list", "quant_types_of", "resolve_bits", "default_entries"]


def validate_quant_config_list(name: str, config_list: Any) -> None:
    """Raise ValueError (entry index and key in the message) for a config_list ``name`` cannot run.

    Keys, types and bit ranges (naive 8 only, bnn 1 only) are the shared schema's job; on top of
    it every listed quant type must get a bit width.
    """
    validate_config_list("torch", "quantization", name, config_list)
    for index, entry in enumerate(config_list):
        if entry.get("exclude") is True:
            continue
        for quant_type in quant_types_of(name, entry, index):
            resolve_bits(name, entry, quant_type, index)


def _error(reason: str, name: str, index: int | None, key: str, expected: str) -> FieldError:
    """Located at ``config_list[index].key``, or at ``<name>.key`` when no entry index is known."""
    if index is None:
        return FieldError(reason, field=f"{name}.{key}", expected=expected)
    return FieldError(reason, entry=index, key=key, expected=expected)


def quant_types_of(name: str, entry: Mapping[str, Any], index: int | None = None) -> list[str]:
    """The entry's quant types; a weight-only quantizer defaults to ``["weight"]``."""
    if "quant_types" in entry:
        return list(entry["quant_types"])
    types = catalog.quantization(name).types
    if len(types) == 1:
        return list(types)
    expected = f"a list from {list(types)}"
    raise _error(f"required by {name!r} ({expected})", name, index, "quant_types", expected)


def resolve_bits(name: str, entry: Mapping[str, Any], quant_type: str, index: int | None = None) -> int:
    """Bit width of ``quant_type`` in ``entry``: the int, the per-type dict value, or the default."""
    bits: Any = entry.get("quant_bits")
    if isinstance(bits, Mapping):
        bits = bits.get(quant_type)
    if bits is None:
        bits = catalog.quantization(name).default_bits
    if bits is None:
        expected = f"an integer in [1, 32] or {{\"{quant_type}\": integer}}"
        raise _error(f"no bit width for {quant_type!r}; give {expected}", name, index, "quant_bits", expected)
    return int(bits)


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
