"""Which layers an NNI 2.0 ``config_list`` picks, and its model-dependent checks: torch and Keras alike.

The model-independent checks (keys, values, ranges, cross-entry rules) are the catalog schema's
(:func:`aup.compression.schemas.validate_config_list`, run before any trial). Once a model exists, the
same rules hold for both frameworks, so they live here once, framework-free: for every layer the *last*
entry whose ``op_types`` and ``op_names`` both match wins (a missing key matches everything) and an
entry with ``exclude: true`` leaves the layer alone; every ``op_names`` must name a layer; an
``op_types`` the model lacks is a warning; a selected layer the compressor cannot handle, or a
config_list selecting nothing, is an error naming the entry. ``aup.compression.torch.config_list`` and
``aup.compression.tensorflow.config_list`` only say how to list a model's layers and test their types.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from aup.errors import FieldError, did_you_mean

__all__ = ["TypeMatch", "match_entry", "select", "unknown_op_name", "warn_unmatched_types", "refusal",
           "nothing_selected"]

L = TypeVar("L")
# (layer, op_types of one entry) -> whether the layer is of one of those types ("default" included)
TypeMatch = Callable[[Any, Sequence[str]], bool]


def _matches(name: str, layer: Any, entry: Mapping[str, Any], type_match: TypeMatch) -> bool:
    if "op_types" in entry and not type_match(layer, entry["op_types"]):
        return False
    return "op_names" not in entry or name in entry["op_names"]


def match_entry(name: str, layer: Any, config_list: Sequence[Mapping[str, Any]],
                type_match: TypeMatch) -> tuple[int, dict[str, Any]] | None:
    """The winning ``(entry index, entry)`` for a layer, or None (no match or excluded)."""
    winner: tuple[int, dict[str, Any]] | None = None
    for index, entry in enumerate(config_list):
        if _matches(name, layer, entry, type_match):
            winner = (index, dict(entry))
    if winner is None or winner[1].get("exclude") is True:
        return None
    return winner


def select(layers: Iterable[tuple[str, L]], config_list: Sequence[Mapping[str, Any]],
           type_match: TypeMatch) -> list[tuple[str, L, int, dict[str, Any]]]:
    """``(name, layer, entry index, entry)`` of every layer the config_list picks, in model order."""
    picked = []
    for name, layer in layers:
        match = match_entry(name, layer, config_list, type_match)
        if match is not None:
            picked.append((name, layer, match[0], match[1]))
    return picked


def unknown_op_name(names: Sequence[str], config_list: Sequence[Mapping[str, Any]], what: str = "module",
                    *, list_layers: bool = True) -> FieldError | None:
    """The first ``op_names`` entry that is no layer of the model, as an error listing the layers (up
    to 30; ``list_layers=False`` for a report that carries the layers separately)."""
    known = set(names)
    for index, entry in enumerate(config_list):
        for op_name in entry.get("op_names", ()):
            if op_name not in known:
                shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
                listing = f"; {what}s: {shown}" if list_layers else ""
                return FieldError(f"no {what} named {op_name!r} in the model{did_you_mean(op_name, names)}{listing}",
                                  entry=index, key="op_names", expected=f"a {what} name of the model", got=op_name)
    return None


def warn_unmatched_types(present: set[str], config_list: Sequence[Mapping[str, Any]], stacklevel: int = 2) -> None:
    """Warn for every ``op_types`` name (lower-cased ``present``) that no layer of the model has."""
    for index, entry in enumerate(config_list):
        for op_type in entry.get("op_types", ()):
            if op_type != "default" and op_type.lower() not in present:
                warnings.warn(f"config_list[{index}].op_types: the model has no {op_type!r} layer",
                              stacklevel=stacklevel + 1)


def refusal(compressor: str, name: str, type_name: str, entry_index: int, reason: str | None) -> FieldError | None:
    """The error for a selected layer the compressor cannot handle (``reason``), at the winning entry."""
    if not reason:
        return None
    return FieldError(f"{compressor!r} cannot compress {name!r} ({type_name}): {reason}", entry=entry_index,
                      got=name)


def nothing_selected(compressor: str, types_present: Iterable[str]) -> FieldError:
    """A config_list that picks no layer: compressing nothing would still be recorded as compressed."""
    present = ", ".join(sorted(set(types_present)))
    return FieldError(f"no layer of the model matches any entry for {compressor!r}; layer types present: {present}",
                      expected="an entry matching a layer of the model")
