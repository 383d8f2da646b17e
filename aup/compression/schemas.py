"""Checking a ``config_list`` against its compressor's schema (torch-free), NNI 2.0's keys and ranges.

Used twice: by ``create_compressor`` inside the trial, and by the experiment validator before any
trial runs (which must not import torch). The schemas themselves live in the compressors' entries of
:mod:`aup.compression.catalog`. Errors are :class:`aup.errors.FieldError` (a ValueError) carrying the
entry index, the key, the expected value and what was given, and read e.g.
``config_list[1].sparsity: expected a number in (0, 1), got 1.6``.

Deliberate differences from NNI 2.0 (whose schema library produced opaque SchemaErrors):
- ``sparsity`` may be an ``int`` or ``float`` (NNI demanded a Python float, so a search space
  proposing ints broke the trial); booleans are refused.
- ``exclude`` must be a boolean and ``exclude: false`` does *not* exclude (NNI excluded on the mere
  presence of the key).
- op type names are matched case-insensitively (the seed's BNN example writes ``"relu"``).
- NNI 2.0's NaiveQuantizer only produces int8 (its schema was ``Or(8, {"weight": 8})``) and BNN only
  produces +-1, so any other width is refused before a trial runs rather than silently ignored.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import aup.compression.catalog as catalog
from aup.compression.keyspec import QUANT_TYPES, KeySpec, Schema
from aup.errors import FieldError, did_you_mean

__all__ = ["QUANT_TYPES", "KeySpec", "Schema", "SCHEMAS", "get_schema", "entry_keys", "check_value",
           "validate_config_list", "quant_types_of", "resolve_bits"]

# {(framework, type, name): Schema}, a read-only view of the catalog
SCHEMAS: dict[tuple[str, str, str], Schema] = {
    (e.framework, e.compression_type, e.name): e.schema for e in catalog.ENTRIES
}


def get_schema(framework: str, compression_type: str, name: str) -> Schema:
    """The schema of a catalogued compressor (ValueError listing names for unknown ones)."""
    return catalog.lookup(framework, compression_type, name).schema


def entry_keys(name: str, framework: str = "torch", compression_type: str | None = None) -> dict[str, KeySpec]:
    """The keys a compressor's entries accept, for search-space translators."""
    return dict(_schema_by_name(name, framework, compression_type).keys)


def check_value(
    name: str, key: str, value: Any, framework: str = "torch", compression_type: str | None = None
) -> str | None:
    """None when ``value`` is legal for ``key`` of compressor ``name``, else a reason.

    A translator checks both ends of a search range with it: for ``sparsity`` a float range
    ``[0.1, 1.0]`` is refused because 1.0 is outside (0, 1).
    """
    keys = _schema_by_name(name, framework, compression_type).keys
    if key not in keys:
        return f"unknown key {key!r}{did_you_mean(key, keys)}; allowed: {', '.join(sorted(keys))}"
    return keys[key].check(value)


def _schema_by_name(name: str, framework: str, compression_type: str | None) -> Schema:
    framework = catalog.canonical_framework(framework)
    if compression_type is None:
        types = [ty for fw, ty in catalog.find_types(name) if fw == framework]
        if not types:
            catalog.lookup(framework, "pruning", name)  # raises with the listing
        compression_type = types[0]
    return get_schema(framework, compression_type, name)


def validate_config_list(
    framework: str,
    compression_type: str,
    name: str,
    config_list: Any,
    *,
    extra_keys: Iterable[str] = (),
) -> None:
    """Raise :class:`FieldError` at the first problem in ``config_list``; model-independent checks only.

    ``extra_keys`` are tolerated without checks (the automatic-mode translator passes
    ``expand_op_names`` here before it strips it).
    """
    schema = get_schema(framework, compression_type, name)
    if not isinstance(config_list, (list, tuple)):
        raise FieldError(f"expected a list of entries, got {type(config_list).__name__}",
                         expected="a list of entries", got=config_list)
    if not config_list and not schema.allow_empty:
        raise FieldError(f"expected at least one entry for {name!r}, got []",
                         expected="at least one entry", got=config_list)
    tolerated = set(extra_keys)
    for index, entry in enumerate(config_list):
        _validate_entry(schema, name, index, entry, tolerated)
    _validate_cross_entry(schema, name, config_list)
    if catalog.lookup(framework, compression_type, name).quant is not None:
        _validate_bits(name, config_list)


def _validate_bits(name: str, config_list: Sequence[Mapping[str, Any]]) -> None:
    """Every quant type an entry lists gets a bit width (given, per type, or the quantizer's default)."""
    for index, entry in enumerate(config_list):
        if entry.get("exclude") is True:
            continue
        for quant_type in quant_types_of(name, entry, index):
            resolve_bits(name, entry, quant_type, index)


def _validate_entry(schema: Schema, name: str, index: int, entry: Any, tolerated: set[str]) -> None:
    if not isinstance(entry, Mapping):
        expected = "an object like {\"sparsity\": 0.5, \"op_types\": [...]}"
        raise FieldError(f"expected {expected}, got {entry!r}", entry=index, expected=expected, got=entry)
    for key, value in entry.items():
        if key in tolerated:
            continue
        if key not in schema.keys:
            allowed = ", ".join(sorted(schema.keys))
            raise FieldError(f"unknown key {key!r}{did_you_mean(str(key), schema.keys)} for {name!r}; allowed: {allowed}",
                             entry=index, key=str(key), expected=f"one of {allowed}", got=key, locate_key=False)
        spec = schema.keys[key]
        if not spec.accepts(value):
            raise FieldError(f"expected {spec.expected}, got {value!r}", entry=index, key=key,
                             expected=spec.expected, got=value)
    if "op_types" not in entry and "op_names" not in entry:
        raise FieldError("expected \"op_types\" or \"op_names\" to say which layers it applies to", entry=index,
                         key="op_types", expected="\"op_types\" or \"op_names\"", locate_key=False)
    if entry.get("exclude") is True:
        return
    for key in schema.required:
        if key not in entry:
            raise FieldError(f"required by {name!r} ({schema.keys[key].expected})", entry=index, key=key,
                             expected=schema.keys[key].expected)
    _validate_op_types(schema, name, index, entry.get("op_types"))
    _validate_ordered_pairs(schema, index, entry)


def _validate_op_types(schema: Schema, name: str, index: int, op_types: Sequence[str] | None) -> None:
    if schema.op_types is None or op_types is None:
        return
    allowed = {t.lower() for t in schema.op_types}
    for op_type in op_types:
        if op_type.lower() not in allowed:
            layers = ", ".join(schema.op_types)
            raise FieldError(f"{name!r} can only prune {layers} layers, got {op_type!r}", entry=index,
                             key="op_types", expected=f"{layers} layers", got=op_type)


def _validate_ordered_pairs(schema: Schema, index: int, entry: Mapping[str, Any]) -> None:
    for low_key, high_key, kind in schema.ordered_pairs:
        low, high = entry.get(low_key), entry.get(high_key)
        if low is not None and high is not None and high < low:
            expected = f"{kind} >= {low_key} ({low})"
            raise FieldError(f"expected {expected}, got {high!r}", entry=index, key=high_key,
                             expected=expected, got=high)


def _validate_cross_entry(schema: Schema, name: str, config_list: Sequence[Mapping[str, Any]]) -> None:
    for key in schema.same_value:
        seen: dict[Any, int] = {}
        for index, entry in enumerate(config_list):
            if key in entry and not entry.get("exclude") is True:
                seen.setdefault(entry[key], index)
        if len(seen) > 1:
            (first, i0), (second, i1) = list(seen.items())[:2]
            raise FieldError(
                f"{name!r} uses one {key} for all layers, so every entry must have "
                f"the same value; config_list[{i0}] has {first!r}, got {second!r} "
                f"(for automatic search set \"expand_op_names\": false)",
                entry=i1, key=key, expected=repr(first), got=second,
            )


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
