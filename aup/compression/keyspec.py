"""What a ``config_list`` entry key accepts, and the keys compressors share (torch-free).

The building blocks of :mod:`aup.compression.catalog` (every compressor's schema is made of these)
and of :mod:`aup.compression.schemas` (which checks a config_list against them). NNI 2.0 checked
entries with the ``schema`` library and produced opaque SchemaErrors; here each key knows what it
expects in words, so an error can say ``expected a number in (0, 1), got 1.6``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence
from aup.numbers import is_number

QUANT_TYPES = ("weight", "input", "output")


@dataclass(frozen=True)
class KeySpec:
    """What one ``config_list`` entry key accepts.

    ``kind`` is ``"float"``, ``"int"``, ``"bool"``, ``"str_list"``, ``"quant_types"``,
    ``"quant_bits"`` or ``"sparsity_nm"`` (a float or an ``"n:m"`` string); ``low``/``high`` bound numbers (open bounds when ``low_open``/``high_open``),
    so a search-space translator can tell whether a range's end points are legal.
    """

    kind: str
    expected: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def accepts(self, value: Any) -> bool:
        return _CHECKERS[self.kind](self, value)

    def check(self, value: Any) -> str | None:
        """Return None when ``value`` is acceptable, else ``"expected ..., got ..."``."""
        return None if self.accepts(value) else f"expected {self.expected}, got {value!r}"


@dataclass(frozen=True)
class Schema:
    """Allowed keys of one compressor's entries and what an entry must contain.

    ``required``: keys every non-excluded entry needs. ``op_types``: the only layer types the
    compressor can handle (None: any type with the parameters it needs); ``"default"`` is accepted
    only when listed there. ``allow_empty``: whether ``config_list: []`` is meaningful.
    ``same_value``: keys that must be equal across entries (e.g. slim's one global sparsity).
    ``ordered_pairs``: ``(low key, high key, what)`` pairs where the second may not be below the first.
    """

    keys: Mapping[str, KeySpec]
    required: tuple[str, ...] = ("sparsity",)
    op_types: tuple[str, ...] | None = None
    allow_empty: bool = False
    same_value: tuple[str, ...] = ()
    ordered_pairs: tuple[tuple[str, str, str], ...] = ()


def _in_bounds(spec: KeySpec, value: float) -> bool:
    if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
        return False
    if spec.high is not None and (value > spec.high or (spec.high_open and value == spec.high)):
        return False
    return True


def _check_float(spec: KeySpec, value: Any) -> bool:
    return is_number(value) and value == value and _in_bounds(spec, float(value))


def _check_int(spec: KeySpec, value: Any) -> bool:
    integral = isinstance(value, int) and not isinstance(value, bool)
    integral = integral or (isinstance(value, float) and value.is_integer())
    return integral and _in_bounds(spec, float(value))


def _check_str_list(spec: KeySpec, value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _check_quant_types(spec: KeySpec, value: Any) -> bool:
    return _check_str_list(spec, value) and len(value) > 0 and all(v in spec.choices for v in value)


def _check_quant_bits(spec: KeySpec, value: Any) -> bool:
    if isinstance(value, Mapping):
        return len(value) > 0 and all(k in spec.choices and _check_int(spec, v) for k, v in value.items())
    return _check_int(spec, value)


_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(value: Any) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)``: at most n non-zero weights in every m consecutive ones (Zhou et al. 2021,
    NVIDIA's 2:4); None for anything that is not a string; ValueError for a malformed string."""
    if not isinstance(value, str):
        return None
    match = _NM.match(value)
    if match is None or not 0 < int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"expected an n:m pattern with 0 < n < m such as \"2:4\", got {value!r}")
    return int(match.group(1)), int(match.group(2))


def _check_sparsity_nm(spec: KeySpec, value: Any) -> bool:
    if isinstance(value, str):
        try:
            return parse_nm(value) is not None
        except ValueError:
            return False
    return _check_float(spec, value)


_CHECKERS: dict[str, Callable[[KeySpec, Any], bool]] = {
    "sparsity_nm": _check_sparsity_nm,
    "float": _check_float,
    "int": _check_int,
    "bool": lambda spec, v: isinstance(v, bool),
    "str_list": _check_str_list,
    "quant_types": _check_quant_types,
    "quant_bits": _check_quant_bits,
}

SPARSITY = KeySpec("float", "a number in (0, 1)", 0.0, 1.0, low_open=True, high_open=True)
# a fraction, or an n:m pattern string (one-shot LLM pruners)
SPARSITY_NM = KeySpec("sparsity_nm", "a number in (0, 1) or an \"n:m\" pattern such as \"2:4\"", 0.0, 1.0,
                      low_open=True, high_open=True)
SPARSITY_CLOSED = KeySpec("float", "a number in [0, 1]", 0.0, 1.0)
# fraction of attention heads / MLP hidden channels removed (0: none; at least one always stays)
UNIT_SPARSITY = KeySpec("float", "a number in [0, 1)", 0.0, 1.0, high_open=True)
OP_TYPES = KeySpec("str_list", "a list of layer type names, e.g. [\"Conv2d\"]")
OP_NAMES = KeySpec("str_list", "a list of module names, e.g. [\"conv1\"]")
EXCLUDE = KeySpec("bool", "true or false")
EPOCH = KeySpec("int", "an integer >= 0", 0.0)
POSITIVE_INT = KeySpec("int", "an integer >= 1", 1.0)
COMMON = {"op_types": OP_TYPES, "op_names": OP_NAMES, "exclude": EXCLUDE}
SPARSITY_KEYS = {"sparsity": SPARSITY, **COMMON}


def quant_keys(types: Sequence[str], fixed_bits: int | None = None, why: str = "") -> dict[str, KeySpec]:
    """``quant_types`` over ``types`` and ``quant_bits`` in [1, 32] (32: left in float, for per-layer mixed
    precision), or only ``fixed_bits`` (with why)."""
    names = " or ".join(f'"{t}"' for t in types)
    if fixed_bits is None:
        bits = KeySpec("quant_bits", f"an integer in [1, 32] (32: float) or a dict {{quant type: integer in [1, 32]}} "
                                     f"over {names}", 1.0, 32.0, choices=tuple(types))
    else:
        bits = KeySpec("quant_bits", f"{fixed_bits} or a dict {{quant type: {fixed_bits}}} over {names} ({why})",
                       float(fixed_bits), float(fixed_bits), choices=tuple(types))
    return {"quant_types": KeySpec("quant_types", f"a non-empty list of {names}", choices=tuple(types)),
            "quant_bits": bits}
