"""``config_list`` schemas of every compressor (torch-free), with NNI 2.0's keys and value ranges.

Used twice: by ``create_compressor`` inside the trial, and by the experiment validator before any
trial runs (which must not import torch). Errors name the entry, the key, the expected value and
what was given, e.g. ``config_list[1].sparsity: expected a number in (0, 1), got 1.6``.

Deliberate differences from NNI 2.0 (whose schema library produced opaque SchemaErrors):
- ``sparsity`` may be an ``int`` or ``float`` (NNI demanded a Python float, so a search space
  proposing ints broke the trial); booleans are refused.
- ``exclude`` must be a boolean and ``exclude: false`` does *not* exclude (NNI excluded on the mere
  presence of the key).
- op type names are matched case-insensitively (the seed's BNN example writes ``"relu"``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Iterable, Mapping, Sequence

from aup.compression import registry

QUANT_TYPES = ("weight", "input", "output")


@dataclass(frozen=True)
class KeySpec:
    """What one ``config_list`` entry key accepts.

    ``kind`` is ``"float"``, ``"int"``, ``"bool"``, ``"str_list"``, ``"quant_types"`` or
    ``"quant_bits"``; ``low``/``high`` bound numbers (open bounds when ``low_open``/``high_open``),
    so a search-space translator can tell whether a range's end points are legal.
    """

    kind: str
    expected: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> str | None:
        """Return None when ``value`` is acceptable, else ``"expected ..., got ..."``."""
        ok = _CHECKERS[self.kind](self, value)
        return None if ok else f"expected {self.expected}, got {value!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _in_bounds(spec: KeySpec, value: float) -> bool:
    if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
        return False
    if spec.high is not None and (value > spec.high or (spec.high_open and value == spec.high)):
        return False
    return True


def _check_float(spec: KeySpec, value: Any) -> bool:
    return _is_number(value) and value == value and _in_bounds(spec, float(value))


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
        return len(value) > 0 and all(
            k in spec.choices and _check_int(spec, v) for k, v in value.items()
        )
    return _check_int(spec, value)


_CHECKERS: dict[str, Callable[[KeySpec, Any], bool]] = {
    "float": _check_float,
    "int": _check_int,
    "bool": lambda spec, v: isinstance(v, bool),
    "str_list": _check_str_list,
    "quant_types": _check_quant_types,
    "quant_bits": _check_quant_bits,
}

SPARSITY = KeySpec("float", "a number in (0, 1)", 0.0, 1.0, low_open=True, high_open=True)
SPARSITY_CLOSED = KeySpec("float", "a number in [0, 1]", 0.0, 1.0)
UNIT_SPARSITY = KeySpec("float", "a number in [0, 1) (fraction of heads / hidden channels removed)", 0.0, 1.0,
                        high_open=True)
OP_TYPES = KeySpec("str_list", "a list of layer type names, e.g. [\"Conv2d\"]")
OP_NAMES = KeySpec("str_list", "a list of module names, e.g. [\"conv1\"]")
EXCLUDE = KeySpec("bool", "true or false")
EPOCH = KeySpec("int", "an integer >= 0", 0.0)
POSITIVE_INT = KeySpec("int", "an integer >= 1", 1.0)
COMMON = {"op_types": OP_TYPES, "op_names": OP_NAMES, "exclude": EXCLUDE}


def _quant_keys(types: Sequence[str]) -> dict[str, KeySpec]:
    names = " or ".join(f'"{t}"' for t in types)
    return {
        "quant_types": KeySpec("quant_types", f"a non-empty list of {names}", choices=tuple(types)),
        "quant_bits": KeySpec(
            "quant_bits", f"an integer in [1, 31] or a dict {{quant type: integer in [1, 31]}} over {names}",
            1.0, 31.0, choices=tuple(types),
        ),
    }


@dataclass(frozen=True)
class Schema:
    """Allowed keys of one compressor's entries and what an entry must contain.

    ``required``: keys every non-excluded entry needs. ``op_types``: the only layer types the
    compressor can handle (None: any type with the parameters it needs); ``"default"`` is accepted
    only when listed there. ``allow_empty``: whether ``config_list: []`` is meaningful.
    ``same_value``: keys that must be equal across entries (e.g. slim's one global sparsity).
    """

    keys: Mapping[str, KeySpec]
    required: tuple[str, ...] = ("sparsity",)
    op_types: tuple[str, ...] | None = None
    allow_empty: bool = False
    same_value: tuple[str, ...] = ()


_SPARSITY_KEYS = {"sparsity": SPARSITY, **COMMON}
_FILTER = Schema(_SPARSITY_KEYS, op_types=("Conv2d",))
_OVERALL = Schema(_SPARSITY_KEYS)

SCHEMAS: dict[tuple[str, str, str], Schema] = {
    ("torch", "pruning", "level"): Schema(_SPARSITY_KEYS),
    ("torch", "pruning", "slim"): Schema(_SPARSITY_KEYS, op_types=("BatchNorm2d",), same_value=("sparsity",)),
    ("torch", "pruning", "fpgm"): _FILTER,
    ("torch", "pruning", "l1_filter"): _FILTER,
    ("torch", "pruning", "l2_filter"): _FILTER,
    ("torch", "pruning", "activation_apoz_rank_filter"): _FILTER,
    ("torch", "pruning", "activation_mean_rank_filter"): _FILTER,
    ("torch", "pruning", "taylor_fo_weight_filter"): _FILTER,
    ("torch", "pruning", "agp"): Schema(
        {
            "initial_sparsity": SPARSITY_CLOSED,
            "final_sparsity": SPARSITY_CLOSED,
            "start_epoch": EPOCH,
            "end_epoch": EPOCH,
            "frequency": POSITIVE_INT,
            **COMMON,
        },
        required=("final_sparsity",),
    ),
    ("torch", "pruning", "net_adapt"): _OVERALL,
    ("torch", "pruning", "simulated_annealing"): _OVERALL,
    ("torch", "pruning", "auto_compress"): _OVERALL,
    ("torch", "pruning", "sensitivity"): _OVERALL,
    ("torch", "pruning", "admm"): _OVERALL,
    ("torch", "pruning", "amc"): Schema(dict(COMMON), required=()),
    ("torch", "pruning", "transformer"): Schema(
        {"head_sparsity": UNIT_SPARSITY, "mlp_sparsity": UNIT_SPARSITY, **COMMON}, required=()
    ),
    ("torch", "pruning", "lottery_ticket"): Schema(
        {"sparsity": SPARSITY, "prune_iterations": POSITIVE_INT, **COMMON},
        required=("sparsity", "prune_iterations"),
        same_value=("prune_iterations",),
    ),
    ("torch", "quantization", "naive"): Schema(
        {**_quant_keys(("weight",)), **COMMON}, required=(), allow_empty=True
    ),
    ("torch", "quantization", "qat"): Schema(
        {**_quant_keys(QUANT_TYPES), "quant_start_step": EPOCH, **COMMON},
        required=("quant_types", "quant_bits"),
    ),
    ("torch", "quantization", "dorefa"): Schema(
        {**_quant_keys(("weight",)), **COMMON}, required=("quant_types", "quant_bits")
    ),
    ("torch", "quantization", "bnn"): Schema(
        {**_quant_keys(("weight", "output")), **COMMON}, required=("quant_types", "quant_bits")
    ),
    ("tensorflow", "pruning", "level"): Schema(_SPARSITY_KEYS),
}


def get_schema(framework: str, compression_type: str, name: str) -> Schema:
    """The schema of a registered compressor (ValueError listing names for unknown ones)."""
    framework = registry.canonical_framework(framework)
    registry.resolve(framework, compression_type, name)
    return SCHEMAS[(framework, compression_type, name)]


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
        return f"unknown key {key!r}{_did_you_mean(key, keys)}; allowed: {', '.join(sorted(keys))}"
    return keys[key].check(value)


def _schema_by_name(name: str, framework: str, compression_type: str | None) -> Schema:
    framework = registry.canonical_framework(framework)
    if compression_type is None:
        types = [ty for fw, ty in registry.find(name) if fw == framework]
        if not types:
            registry.resolve(framework, "pruning", name)  # raises with the listing
        compression_type = types[0]
    return get_schema(framework, compression_type, name)


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_config_list(
    framework: str,
    compression_type: str,
    name: str,
    config_list: Any,
    *,
    extra_keys: Iterable[str] = (),
) -> None:
    """Raise ValueError at the first problem in ``config_list``; model-independent checks only.

    ``extra_keys`` are tolerated without checks (the automatic-mode translator passes
    ``expand_op_names`` here before it strips it).
    """
    schema = get_schema(framework, compression_type, name)
    if not isinstance(config_list, (list, tuple)):
        raise ValueError(f"config_list: expected a list of entries, got {type(config_list).__name__}")
    if not config_list and not schema.allow_empty:
        raise ValueError(f"config_list: expected at least one entry for {name!r}, got []")
    tolerated = set(extra_keys)
    for index, entry in enumerate(config_list):
        _validate_entry(schema, name, index, entry, tolerated)
    _validate_cross_entry(schema, name, config_list)


def _validate_entry(schema: Schema, name: str, index: int, entry: Any, tolerated: set[str]) -> None:
    where = f"config_list[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object like {{\"sparsity\": 0.5, \"op_types\": [...]}}, got {entry!r}")
    for key, value in entry.items():
        if key in tolerated:
            continue
        if key not in schema.keys:
            raise ValueError(
                f"{where}: unknown key {key!r}{_did_you_mean(str(key), schema.keys)} for {name!r}; "
                f"allowed: {', '.join(sorted(schema.keys))}"
            )
        problem = schema.keys[key].check(value)
        if problem:
            raise ValueError(f"{where}.{key}: {problem}")
    if "op_types" not in entry and "op_names" not in entry:
        raise ValueError(f"{where}: expected \"op_types\" or \"op_names\" to say which layers it applies to")
    if entry.get("exclude") is True:
        return
    for key in schema.required:
        if key not in entry:
            raise ValueError(f"{where}.{key}: required by {name!r} ({schema.keys[key].expected})")
    _validate_op_types(schema, name, where, entry.get("op_types"))
    _validate_agp_epochs(where, entry)


def _validate_op_types(schema: Schema, name: str, where: str, op_types: Sequence[str] | None) -> None:
    if schema.op_types is None or op_types is None:
        return
    allowed = {t.lower() for t in schema.op_types}
    for op_type in op_types:
        if op_type.lower() not in allowed:
            raise ValueError(
                f"{where}.op_types: {name!r} can only prune {', '.join(schema.op_types)} layers, got {op_type!r}"
            )


def _validate_agp_epochs(where: str, entry: Mapping[str, Any]) -> None:
    start, end = entry.get("start_epoch"), entry.get("end_epoch")
    if start is not None and end is not None and end < start:
        raise ValueError(f"{where}.end_epoch: expected an integer >= start_epoch ({start}), got {end!r}")
    initial, final = entry.get("initial_sparsity"), entry.get("final_sparsity")
    if initial is not None and final is not None and final < initial:
        raise ValueError(f"{where}.final_sparsity: expected a number >= initial_sparsity ({initial}), got {final!r}")


def _validate_cross_entry(schema: Schema, name: str, config_list: Sequence[Mapping[str, Any]]) -> None:
    for key in schema.same_value:
        seen: dict[Any, int] = {}
        for index, entry in enumerate(config_list):
            if key in entry and not entry.get("exclude") is True:
                seen.setdefault(entry[key], index)
        if len(seen) > 1:
            (first, i0), (second, i1) = list(seen.items())[:2]
            raise ValueError(
                f"config_list[{i1}].{key}: {name!r} uses one {key} for all layers, so every entry must have "
                f"the same value; config_list[{i0}] has {first!r}, got {second!r} "
                f"(for automatic search set \"expand_op_names\": false)"
            )


# ---------------------------------------------------------------------------------------------------
# Quantizer bit widths (section maintained by the quantizer engineer; see aup/compression/torch/
# quantization/config.py). NNI 2.0's NaiveQuantizer only produces int8 (its schema was
# Or(8, {"weight": 8})) and BNN only produces +-1, so any other width is refused before a trial runs
# rather than silently ignored.
def _fixed_bits(types: Sequence[str], bits: int, why: str) -> KeySpec:
    names = " or ".join(f'"{t}"' for t in types)
    return KeySpec("quant_bits", f"{bits} or a dict {{quant type: {bits}}} over {names} ({why})",
                   float(bits), float(bits), choices=tuple(types))


SCHEMAS[("torch", "quantization", "naive")] = Schema(
    {**_quant_keys(("weight",)), "quant_bits": _fixed_bits(("weight",), 8, "naive is symmetric int8"), **COMMON},
    required=(), allow_empty=True,
)
SCHEMAS[("torch", "quantization", "bnn")] = Schema(
    {**_quant_keys(("weight", "output")), "quant_bits": _fixed_bits(("weight", "output"), 1, "bnn binarises to +-1"),
     **COMMON},
    required=("quant_types", "quant_bits"),
)
