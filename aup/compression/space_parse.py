"""Parsing the ``compression`` section: stages, config_list entries, ranges and their names (torch-free).

The first half of :mod:`aup.compression.search_space`: it turns the section into :class:`Stage`
objects (which compressors, their config_lists with ``op_names`` expanded, the ranges found in
entries and ``compressor_args``) and collects one line per problem. Naming and validation against
the schemas at the ranges' bounds, and building each trial's job config, are in ``search_space``.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import aup.compression.catalog as catalog
from aup.compression.allocation import PRUNERS, Allocation, parse_allocation
from aup.errors import did_you_mean

RANGE_KEYS = ("type", "range", "interval", "n", "log")
STAGE_KEYS = ("framework", "type", "compressor", "config_list", "compressor_args", "deploy", "model", "allocation")
_ALIASES = {"compression_framework": "framework", "compression_type": "type"}
_EXPAND = "expand_op_names"


class CompressionSpaceError(ValueError):
    """All problems found in a ``compression`` section, one per line (``.problems``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------- model
@dataclass
class Slot:
    """Where a sampled value goes: a config_list leaf or a constructor argument of one stage."""

    stage: int
    compressors: tuple[str, ...]  # the compressors whose concrete config holds this slot
    entry: int | None  # index in the expanded config_list (None: a compressor argument)
    path: tuple[str, ...]
    where: str  # the user's key path, for messages
    per_compressor: str | None = None  # set when the slot lives in a per-compressor piece


@dataclass
class Range:
    """A range as written, with its target slot; becomes one Dimension."""

    spec: dict[str, Any]
    slot: Slot
    base_name: str
    condition: tuple[str, Any] | None = None
    name: str = ""

    @property
    def extremes(self) -> list[Any]:
        if self.spec["type"] == "choice":
            return list(self.spec["range"])
        low, high = self.spec["range"]
        return [low, high] if self.spec["type"] == "float" else [int(low), int(high)]


@dataclass
class Stage:
    index: int
    where: str  # "compression" or "compression[1]"
    framework: str
    types: dict[str, str]  # compressor name -> compression type
    compressors: tuple[str, ...]  # the fixed name, or the choices
    choice: bool
    dim_name: str | None = None  # name of the compressor dimension
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # expanded templates
    origins: dict[str, list[str]] = field(default_factory=dict)  # expanded index -> user's entry path
    args: dict[str, dict[str, Any]] = field(default_factory=dict)  # templates of compressor_args
    ranges: list[Range] = field(default_factory=list)
    expand_seen: bool = False
    model: str | None = None  # "module:callable" building the model, for checking op names before trials
    allocation: Allocation | None = None  # one global sparsity per entry, split per layer in the trial


# ---------------------------------------------------------------------------------------------- parsing
def is_range(value: Any) -> bool:
    """A search range is a dict with a ``type`` key."""
    return isinstance(value, dict) and "type" in value


def _range_problem(spec: dict[str, Any]) -> str | None:
    """Why a range dict is malformed (None when it is fine); checked again by Dimension."""
    unknown = [k for k in spec if k not in RANGE_KEYS]
    if unknown:
        extra = did_you_mean(str(unknown[0]), RANGE_KEYS, fallback=f" (a range takes {', '.join(RANGE_KEYS)})")
        return f"unknown key {unknown[0]!r} in a search range{extra}"
    kind = spec["type"]
    if kind not in ("float", "int", "choice"):
        return f"a search range needs \"type\": \"float\", \"int\" or \"choice\", got {kind!r}"
    rng = spec.get("range")
    if not isinstance(rng, list) or not rng:
        return f"a {kind} search range needs \"range\": {'[values...]' if kind == 'choice' else '[min, max]'}"
    if kind != "choice":
        if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng):
            return f"a {kind} search range needs \"range\": [min, max] with two numbers, got {rng!r}"
        if rng[0] > rng[1] or (kind == "float" and rng[0] == rng[1]):
            return f"the range {rng!r} is empty (expected min < max)"
        if kind == "int" and not all(float(v).is_integer() for v in rng):
            return f"an int search range needs two integers, got {rng!r}"
    return None


def _contains_range(value: Any) -> bool:
    if is_range(value):
        return True
    if isinstance(value, dict):
        return any(_contains_range(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_range(v) for v in value)
    return False


def has_ranges(section: Any) -> bool:
    """Whether a ``compression`` section (or list of stages) searches anything.

    Only the searchable keys are looked at: the stage's own ``type`` key is not a range.
    """
    stages = section if isinstance(section, list) else [section]
    return any(isinstance(stage, dict) and any(_contains_range(stage.get(key))
                                                for key in ("compressor", "config_list", "compressor_args"))
               for stage in stages)


def _label(entry: dict[str, Any]) -> str:
    """Auptimizer's dashboard suffix: the op names, else the op types."""
    for key in ("op_names", "op_types"):
        value = entry.get(key)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return ", ".join(value)
    return ""


def _expand(entries: list[Any], where: str, default: bool = True) -> tuple[list[Any], list[str], bool]:
    """Auptimizer's expand_op_names rule; returns (entries, origin path per entry, any flag seen).

    ``default``: whether an entry without the flag expands (not under ``allocation``)."""
    out: list[Any] = []
    origins: list[str] = []
    seen = False
    for index, entry in enumerate(entries):
        path = f"{where}[{index}]"
        if not isinstance(entry, dict):
            out.append(entry)
            origins.append(path)
            continue
        seen = seen or _EXPAND in entry
        expand = entry.get(_EXPAND, default)
        rest = {k: v for k, v in entry.items() if k != _EXPAND}
        names = rest.get("op_names")
        if expand is True and isinstance(names, list) and len(names) > 1:
            for name in names:
                out.append({**copy.deepcopy(rest), "op_names": [name]})
                origins.append(path)
        else:
            out.append(rest)
            origins.append(path)
    return out, origins, seen


def _walk_ranges(value: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], dict[str, Any]]]:
    if is_range(value):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk_ranges(sub, (*path, str(key)))


def set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


class SectionParser:
    """Reads the section, collecting problems instead of stopping at the first."""

    def __init__(self, section: Any, taken: Iterable[str]) -> None:
        self.problems: list[str] = []
        self.stages: list[Stage] = []
        self.deploy: Any = None
        self.taken = set(taken)
        stages = section if isinstance(section, list) else [section]
        self.pipeline = isinstance(section, list)
        if self.pipeline and not section:
            self.problems.append("compression: expected a compression section or a non-empty list of stages")
        for index, raw in enumerate(stages):
            where = f"compression[{index}]" if self.pipeline else "compression"
            stage = self._stage(index, raw, where)
            if stage is not None:
                self.stages.append(stage)

    def _problem(self, text: str) -> None:
        self.problems.append(text)

    # ---- one stage ------------------------------------------------------------------------------
    def _stage(self, index: int, raw: Any, where: str) -> Stage | None:
        if not isinstance(raw, dict):
            self._problem(f"{where}: expected an object with framework, type, compressor and config_list, "
                          f"got {type(raw).__name__}")
            return None
        raw = {_ALIASES.get(k, k): v for k, v in raw.items()}
        for key in raw:
            if key not in STAGE_KEYS:
                extra = did_you_mean(str(key), STAGE_KEYS, fallback=f" (known: {', '.join(STAGE_KEYS)})")
                self._problem(f"{where}.{key}: unknown key{extra}")
        for key in ("compressor", "config_list"):
            if key not in raw:
                self._problem(f"{where}.{key}: required key is missing")
        if "compressor" not in raw or "config_list" not in raw:
            return None
        framework = raw.get("framework", "torch")
        if not isinstance(framework, str) or catalog.canonical_framework(framework) not in catalog.frameworks():
            self._problem(f"{where}.framework: expected one of {', '.join(sorted(catalog.frameworks()))}, "
                          f"got {framework!r}")
            return None
        framework = catalog.canonical_framework(framework)
        names, choice = self._compressor_names(raw["compressor"], f"{where}.compressor")
        if names is None:
            return None
        types = self._types(framework, raw.get("type"), names, where)
        if types is None:
            return None
        stage = Stage(index, where, framework, types, names, choice)
        stage.model = self._model_ref(raw.get("model"), f"{where}.model")
        if "deploy" in raw:
            self._deploy(raw["deploy"], f"{where}.deploy")
        if "allocation" in raw:
            stage.allocation = self._allocation(raw["allocation"], stage, f"{where}.allocation")
        self._config_lists(stage, raw["config_list"], f"{where}.config_list")
        self._compressor_args(stage, raw.get("compressor_args"), f"{where}.compressor_args")
        return stage

    def _model_ref(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value.strip()):
            self._problem(f"{where}: expected \"module:callable\" (a function or class in the working directory "
                          f"that builds the model, e.g. \"model:Net\"), got {value!r}")
            return None
        return value.strip()

    def _allocation(self, value: Any, stage: Stage, where: str) -> Allocation | None:
        """``allocation``: only for one-shot torch pruners whose entries hold a plain ``sparsity``."""
        try:
            allocation = parse_allocation(value, where)
        except ValueError as exc:
            self._problem(str(exc))
            return None
        other = [name for name in stage.compressors if stage.framework != "torch" or name not in PRUNERS]
        if other:
            self._problem(f"{where}: applies to the torch pruners {', '.join(PRUNERS)}, not {other[0]!r}")
            return None
        return allocation

    def _deploy(self, value: Any, where: str) -> None:
        """``deploy``: the deployable artifact every trial measures (checked here, used in the trial)."""
        if self.deploy is not None:
            self._problem(f"{where}: give \"deploy\" once (it applies to the whole trial)")
            return
        problem = deploy_problem(value, where)
        if problem:
            self._problem(problem)
        else:
            self.deploy = value

    def _compressor_names(self, value: Any, where: str) -> tuple[tuple[str, ...] | None, bool]:
        if isinstance(value, str):
            return (value,), False
        if is_range(value):
            problem = _range_problem(value)
            if problem is None and value["type"] != "choice":
                problem = f"a compressor is searched with {{\"type\": \"choice\", \"range\": [names...]}}, " \
                          f"got type {value['type']!r}"
            if problem is None and set(value) - {"type", "range"}:
                problem = "a compressor choice takes only \"type\" and \"range\""
            if problem is None and not all(isinstance(v, str) for v in value["range"]):
                problem = f"expected compressor names, got {value['range']!r}"
            if problem is None and len(set(value["range"])) != len(value["range"]):
                problem = f"the choices {value['range']!r} contain duplicates"
            if problem:
                self._problem(f"{where}: {problem}")
                return None, True
            return tuple(value["range"]), True
        self._problem(f"{where}: expected a compressor name or {{\"type\": \"choice\", \"range\": [names...]}}, "
                      f"got {value!r}")
        return None, False

    def _types(self, framework: str, given: Any, names: tuple[str, ...], where: str) -> dict[str, str] | None:
        """The compression type of each compressor: as given, else looked up by the unique name."""
        known = {ty: catalog.names_of(framework, ty) for ty in catalog.types_of(framework)}
        if given is not None and given not in known:
            self._problem(f"{where}.type: unknown compression type {given!r} for framework {framework!r}; "
                          f"supported: {', '.join(sorted(known))}")
            return None
        types: dict[str, str] = {}
        for name in names:
            if given is not None:
                if name not in known[given]:
                    self._problem(f"{where}.compressor: unknown compressor {name!r} for {framework} {given}"
                                  f"{did_you_mean(name, known[given])}; supported: {', '.join(sorted(known[given]))}")
                    continue
                types[name] = given
                continue
            found = [ty for fw, ty in catalog.find_types(name) if fw == framework]
            if len(found) == 1:
                types[name] = found[0]
            elif not found:
                every = sorted({n for names_ in known.values() for n in names_})
                self._problem(f"{where}.compressor: unknown compressor {name!r} for {framework}{did_you_mean(name, every)}; "
                              f"supported: {', '.join(every)}")
            else:
                self._problem(f"{where}.type: {name!r} exists as {' and '.join(found)}; say which with \"type\"")
        return types if len(types) == len(names) else None

    # ---- config_list ------------------------------------------------------------------------------
    def _config_lists(self, stage: Stage, value: Any, where: str) -> None:
        per = isinstance(value, dict)
        if per:
            missing = [n for n in stage.compressors if n not in value]
            extra = [k for k in value if k not in stage.compressors]
            for name in extra:
                self._problem(f"{where}.{name}: not one of the compressors ({', '.join(stage.compressors)})")
            for name in missing:
                self._problem(f"{where}: no config_list for the compressor {name!r} (give one per compressor, "
                              "or one shared list)")
            pieces = {n: (value[n], f"{where}.{n}", n) for n in stage.compressors if n in value}
        else:
            pieces = {None: (value, where, None)}
        for key, (entries, path, owner) in pieces.items():
            if not isinstance(entries, list):
                self._problem(f"{path}: expected a list of entries, got {type(entries).__name__}")
                continue
            global_mode = stage.allocation is not None and stage.allocation.mode == "global"
            expanded, origins, seen = _expand(entries, path, not global_mode)
            stage.expand_seen = stage.expand_seen or seen
            if stage.allocation is not None:
                self._allocated_entries(expanded, entries, path, global_mode)
            targets = (owner,) if owner is not None else stage.compressors
            for name in targets:
                stage.lists[name] = expanded
                stage.origins[name] = origins
            for e_index, entry in enumerate(expanded):
                if not isinstance(entry, dict):
                    continue
                for leaf_path, spec in _walk_ranges(entry, ()):
                    key_path = ".".join(leaf_path)
                    label = _label(entry)
                    slot = Slot(stage.index, targets, e_index, leaf_path, f"{origins[e_index]}.{key_path}", owner)
                    if global_mode and leaf_path == ("sparsity",):
                        key_path = "global sparsity"
                    base = f"{key_path} ({label})" if label else key_path
                    self._add_range(stage, spec, slot, base)

    def _allocated_entries(self, expanded: list[Any], entries: list[Any], where: str, global_mode: bool) -> None:
        """Global mode: an entry's layers share one searched value (no ``expand_op_names``). Seed mode:
        every searched sparsity belongs to one named layer (the seeds give each layer its value)."""
        for index, entry in enumerate(entries):
            if not global_mode and isinstance(entry, dict) and is_range(entry.get("sparsity")) and (
                    entry.get(_EXPAND) is False or not isinstance(entry.get("op_names"), list)):
                self._problem(f"{where}[{index}]: \"allocation\" mode \"seed\" needs one searched sparsity per layer: "
                              "name the layers in op_names (and do not set expand_op_names to false)")
            if global_mode and isinstance(entry, dict) and entry.get(_EXPAND) is True:
                self._problem(f"{where}[{index}].{_EXPAND}: \"allocation\" splits one global sparsity over the "
                              "entry's layers; remove expand_op_names (or the allocation)")
        if not any(isinstance(e, dict) and "sparsity" in e and not e.get("exclude") for e in expanded):
            self._problem(f"{where}: \"allocation\" needs an entry with \"sparsity\" (a number or a range)")

    def _compressor_args(self, stage: Stage, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            self._problem(f"{where}: expected {{compressor name: {{argument: value or range}}}}, got {value!r}")
            return
        per = all(k in stage.compressors for k in value) and all(isinstance(v, dict) for v in value.values())
        if not per:
            if stage.choice:
                bad = next(k for k in value if k not in stage.compressors or not isinstance(value[k], dict))
                self._problem(f"{where}.{bad}: expected {{compressor name: {{argument: value or range}}}} with "
                              f"names among {', '.join(stage.compressors)}")
                return
            value = {stage.compressors[0]: value}
        for name, kwargs in value.items():
            stage.args[name] = kwargs
            for leaf_path, spec in _walk_ranges(kwargs, ()):
                key_path = ".".join(leaf_path)
                slot = Slot(stage.index, (name,), None, leaf_path, f"{where}.{name}.{key_path}"
                             if stage.choice else f"{where}.{key_path}", name)
                self._add_range(stage, spec, slot, key_path)

    def _add_range(self, stage: Stage, spec: dict[str, Any], slot: Slot, base: str) -> None:
        problem = _range_problem(spec)
        if problem:
            self._problem(f"{slot.where}: {problem}")
            return
        if stage.choice and slot.per_compressor is not None:
            base = f"{base} [{slot.per_compressor}]"
        stage.ranges.append(Range(spec, slot, base))


# ---------------------------------------------------------------------------------------------- naming
def assign_names(stages: list[Stage], taken: set[str], pipeline: bool) -> None:
    """Stable, unique names: stage order, then entry order; `` @stageN`` then `` #k`` on collision."""
    used = set(taken)

    def claim(base: str, stage_number: int) -> str:
        name = base
        if name in used and stage_number > 1:
            name = f"{base} @stage{stage_number}"
        k = 2
        candidate = name
        while candidate in used:
            candidate = f"{name} #{k}"
            k += 1
        used.add(candidate)
        return candidate

    for stage in stages:
        number = stage.index + 1
        if stage.choice:
            base = "compressor" if not pipeline or number == 1 else f"compressor (stage {number})"
            stage.dim_name = claim(base, number)
        for rng in stage.ranges:
            rng.name = claim(rng.base_name, number)
            if stage.choice and rng.slot.per_compressor is not None:
                rng.condition = (stage.dim_name, rng.slot.per_compressor)  # type: ignore[assignment]


def deploy_problem(value: Any, where: str) -> str | None:
    """Why ``value`` is not a valid ``deploy`` setting (torch-free copy of DeploySettings.parse's rules)."""
    if isinstance(value, bool) or value is None:
        return None
    if not isinstance(value, dict):
        return f"{where}: expected an object such as {{\"format\": \"onnx\", \"int8\": \"static\"}}, got {value!r}"
    for key in value:
        if key not in ("format", "int8", "per_channel"):
            return f"{where}.{key}: unknown key (known: format, int8, per_channel)"
    if value.get("format", "onnx") != "onnx":
        return f"{where}.format: expected \"onnx\", got {value.get('format')!r}"
    if value.get("int8", "static") not in ("static", "none", None, False):
        return f"{where}.int8: expected \"static\" or \"none\" (dynamic int8 is slower than fp32 on convolutions)"
    if not isinstance(value.get("per_channel", True), bool):
        return f"{where}.per_channel: expected true or false"
    return None
