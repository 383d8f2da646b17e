"""The ``compression`` section of an experiment -> search dimensions and concrete job configs.

Torch-free: the runner and the experiment validator call it before any trial runs.

What a user writes (Auptimizer's automatic mode, plus pruner choice and pipelines)::

    "compression": {
      "framework": "torch", "type": "pruning",            # type may be omitted when the name is unique
      "compressor": "l1_filter" | {"type": "choice", "range": ["l1_filter", "fpgm"]},
      "config_list": [ {"sparsity": {"type": "float", "range": [0.1, 0.9]}, "op_names": ["conv1", "conv2"]} ]
                     | {"l1_filter": [...], "fpgm": [...]},          # per compressor
      "compressor_args": {"taylor_fo_weight_filter": {"statistics_batch_num": {"type": "int", "range": [1, 4]}}},
      "model": "model_def:Net"          # optional: builds the model, so op names are checked before any trial
    }

or a list of such stages (a pipeline, applied in order in one trial).

Translation rules (reference spec 7.3, with its bugs fixed):

* A *range* is a dict with a ``type`` key (``float``/``int``/``choice``) and ``range`` (optional
  ``interval``, ``n``, ``log``), anywhere inside an entry value; dicts without ``type`` are walked
  (``quant_bits: {"weight": {range}}`` is the key path ``quant_bits.weight``); lists are values.
* An entry with ``op_names`` expands to one entry per op name unless ``"expand_op_names": false``
  (then one shared value for the group); ``expand_op_names`` never reaches the job config.
* Dimension names are what Auptimizer's dashboard shows: ``<key path> (<op_names or op_types>)``,
  e.g. ``sparsity (conv1)``. Per-compressor pieces are suffixed ``[<compressor>]`` and sampled only
  when that compressor is chosen. Duplicates get `` #2``, `` #3``...; a later pipeline stage whose
  name is taken gets `` @stage2`` first. The same JSON always gives the same names.
* Every trial's config is built from deep copies: no trial ever shares an object with another
  trial or with the experiment (Auptimizer's shallow copy let parallel jobs run each other's values).
* Validation happens here, before the first trial: names, every entry against its compressor's
  schema, and every range *at its bounds* (a float sparsity range ``[0.1, 1.0]`` is refused because
  1.0 is not a legal sparsity). Problems are collected, one line each.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from aup.compression import catalog, schemas
from aup.errors import FieldError, did_you_mean

RANGE_KEYS = ("type", "range", "interval", "n", "log")
STAGE_KEYS = ("framework", "type", "compressor", "config_list", "compressor_args", "deploy", "model")
_ALIASES = {"compression_framework": "framework", "compression_type": "type"}
_EXPAND = "expand_op_names"


class CompressionSpaceError(ValueError):
    """All problems found in a ``compression`` section, one per line (``.problems``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------- model
@dataclass
class _Slot:
    """Where a sampled value goes: a config_list leaf or a constructor argument of one stage."""

    stage: int
    compressors: tuple[str, ...]  # the compressors whose concrete config holds this slot
    entry: int | None  # index in the expanded config_list (None: a compressor argument)
    path: tuple[str, ...]
    where: str  # the user's key path, for messages
    per_compressor: str | None = None  # set when the slot lives in a per-compressor piece


@dataclass
class _Range:
    """A range as written, with its target slot; becomes one Dimension."""

    spec: dict[str, Any]
    slot: _Slot
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
class _Stage:
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
    ranges: list[_Range] = field(default_factory=list)
    expand_seen: bool = False
    model: str | None = None  # "module:callable" building the model, for checking op names before trials


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


def _expand(entries: list[Any], where: str) -> tuple[list[Any], list[str], bool]:
    """Auptimizer's expand_op_names rule; returns (entries, origin path per entry, any flag seen)."""
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
        expand = entry.get(_EXPAND, True)
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


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


class _Parser:
    """Reads the section, collecting problems instead of stopping at the first."""

    def __init__(self, section: Any, taken: Iterable[str]) -> None:
        self.problems: list[str] = []
        self.stages: list[_Stage] = []
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
    def _stage(self, index: int, raw: Any, where: str) -> _Stage | None:
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
        stage = _Stage(index, where, framework, types, names, choice)
        stage.model = self._model_ref(raw.get("model"), f"{where}.model")
        if "deploy" in raw:
            self._deploy(raw["deploy"], f"{where}.deploy")
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
    def _config_lists(self, stage: _Stage, value: Any, where: str) -> None:
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
            expanded, origins, seen = _expand(entries, path)
            stage.expand_seen = stage.expand_seen or seen
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
                    slot = _Slot(stage.index, targets, e_index, leaf_path, f"{origins[e_index]}.{key_path}", owner)
                    base = f"{key_path} ({label})" if label else key_path
                    self._add_range(stage, spec, slot, base)

    def _compressor_args(self, stage: _Stage, value: Any, where: str) -> None:
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
                slot = _Slot(stage.index, (name,), None, leaf_path, f"{where}.{name}.{key_path}"
                             if stage.choice else f"{where}.{key_path}", name)
                self._add_range(stage, spec, slot, key_path)

    def _add_range(self, stage: _Stage, spec: dict[str, Any], slot: _Slot, base: str) -> None:
        problem = _range_problem(spec)
        if problem:
            self._problem(f"{slot.where}: {problem}")
            return
        if stage.choice and slot.per_compressor is not None:
            base = f"{base} [{slot.per_compressor}]"
        stage.ranges.append(_Range(spec, slot, base))


# ---------------------------------------------------------------------------------------------- naming
def _assign_names(stages: list[_Stage], taken: set[str], pipeline: bool) -> None:
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


# ---------------------------------------------------------------------------------------------- builder
class CompressionJobConfigBuilder:
    """``space``: parameter_config dims + compression dims; ``build(params)``: the job config keys.

    ``one_time`` is true when nothing at all is searched (Auptimizer's non-automatic mode).
    """

    def __init__(self, section: Any, parameter_config: list[dict[str, Any]] | None = None) -> None:
        from aup.proposer_ext import Dimension, SearchSpace
        from aup.proposer_ext.common import ProposerError

        parameter_config = list(parameter_config or [])
        try:
            base_space = SearchSpace.from_parameter_config(parameter_config)
        except ProposerError as exc:
            raise CompressionSpaceError([str(exc)]) from None
        self.parameter_names = base_space.names
        parser = _Parser(section, self.parameter_names)
        problems = parser.problems
        self.stages = parser.stages
        self.pipeline = parser.pipeline
        self.deploy = parser.deploy
        if problems:
            raise CompressionSpaceError(problems)
        _assign_names(self.stages, set(self.parameter_names), self.pipeline)
        dims = []
        for stage in self.stages:
            if stage.choice:
                dims.append(Dimension(stage.dim_name, "choice", choices=stage.compressors))  # type: ignore[arg-type]
            for rng in stage.ranges:
                try:
                    dims.append(_dimension(Dimension, rng))
                except ProposerError as exc:
                    problems.append(f"{rng.slot.where}: {str(exc).partition(': ')[2]}")
        if problems:
            raise CompressionSpaceError(problems)
        self.space = base_space.add(dims)
        self.compression_names = [d.name for d in dims]
        self.one_time = len(self.space) == 0
        problems += self._validate()
        if problems:
            raise CompressionSpaceError(problems)

    # ---- validation ------------------------------------------------------------------------------
    def _validate(self) -> list[str]:
        problems: list[str] = []
        if self.one_time and any(stage.expand_seen for stage in self.stages):
            problems.append("compression: \"expand_op_names\" only applies to automatic search (ranges in "
                            "config_list); remove it from a one-time compression config")
        for stage in self.stages:
            for name in stage.compressors:
                reference = self._reference(stage, name)
                problem = self._check(stage, name, reference)
                if problem:
                    problems.append(problem)
                    continue
                for rng in stage.ranges:
                    if name not in rng.slot.compressors or rng.slot.entry is None:
                        continue
                    problems += self._check_bounds(stage, name, reference, rng)
        return list(dict.fromkeys(problems))

    def _reference(self, stage: _Stage, name: str) -> list[Any]:
        """The config_list of ``name`` with every range at a legal middle value."""
        concrete = copy.deepcopy(stage.lists.get(name, []))
        for rng in stage.ranges:
            if rng.slot.entry is not None and name in rng.slot.compressors:
                _set_path(concrete[rng.slot.entry], rng.slot.path, _middle(rng.spec))
        return concrete

    def _check(self, stage: _Stage, name: str, config_list: list[Any]) -> str | None:
        try:
            schemas.validate_config_list(stage.framework, stage.types[name], name, config_list)
        except ValueError as exc:
            return _relocate(exc, stage.origins.get(name, []), stage.where, name, stage.choice)
        return None

    def _check_bounds(self, stage: _Stage, name: str, reference: list[Any], rng: _Range) -> list[str]:
        problems = []
        for value in rng.extremes:
            trial = copy.deepcopy(reference)
            _set_path(trial[rng.slot.entry], rng.slot.path, value)  # type: ignore[index]
            try:
                schemas.validate_config_list(stage.framework, stage.types[name], name, trial)
            except ValueError as exc:
                reason = exc.reason if isinstance(exc, FieldError) and exc.entry is not None else str(exc)
                shown = "choice" if rng.spec["type"] == "choice" else "range"
                problems.append(f"{rng.slot.where}: {shown} {rng.spec['range']!r} reaches {value!r}: {reason}")
                break
        return problems

    # ---- per trial -------------------------------------------------------------------------------
    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        """Training params plus the concrete compression keys; every object is a fresh copy."""
        job: dict[str, Any] = {k: copy.deepcopy(v) for k, v in params.items() if k in self.parameter_names}
        stages = [self._build_stage(stage, params) for stage in self.stages]
        if self.pipeline:
            job["compression_pipeline"] = stages
        else:
            job.update(stages[0])
        if self.deploy is not None:
            job["compression_deploy"] = copy.deepcopy(self.deploy)
        return job

    def _build_stage(self, stage: _Stage, params: dict[str, Any]) -> dict[str, Any]:
        name = params[stage.dim_name] if stage.choice else stage.compressors[0]
        if name not in stage.compressors:
            raise ValueError(f"{stage.dim_name}: {name!r} is not one of {list(stage.compressors)}")
        config_list = copy.deepcopy(stage.lists[name])
        args = copy.deepcopy(stage.args.get(name)) if name in stage.args else None
        for rng in stage.ranges:
            if name not in rng.slot.compressors:
                continue
            if rng.name not in params:
                raise ValueError(f"no value for {rng.name!r} (the proposer did not sample it)")
            value = copy.deepcopy(params[rng.name])
            if rng.slot.entry is None:
                _set_path(args, rng.slot.path, value)  # type: ignore[arg-type]
            else:
                _set_path(config_list[rng.slot.entry], rng.slot.path, value)
        out = {"compression_framework": stage.framework, "compression_type": stage.types[name],
               "compressor": name, "config_list": config_list}
        if args:
            out["compressor_args"] = args
        return out

    @property
    def model_ref(self) -> str | None:
        """The ``"module:callable"`` a stage names to build the model, if any."""
        return next((stage.model for stage in self.stages if stage.model), None)

    def entries(self) -> Iterable[tuple[_Stage, str, int, Any, str]]:
        """Every concrete entry template: (stage, compressor, expanded index, entry, the user's path of it)."""
        for stage in self.stages:
            for name in stage.compressors:
                origins = stage.origins.get(name, [])
                for index, entry in enumerate(stage.lists.get(name, [])):
                    yield stage, name, index, entry, origins[index] if index < len(origins) else stage.where

    def user_entry(self, compressor: str, index: int, stage_index: int | None = None) -> str | None:
        """The user's path of expanded entry ``index`` of ``compressor``'s config_list (``compression.config_list[1]``)."""
        for stage in self.stages:
            if (stage_index is None or stage.index == stage_index) and compressor in stage.compressors:
                origins = stage.origins.get(compressor, [])
                return origins[index] if 0 <= index < len(origins) else None
        return None

    def describe(self) -> list[tuple[str, str]]:
        """(dimension name, where it comes from) for every compression dimension, for docs and tests."""
        out = []
        for stage in self.stages:
            if stage.choice:
                out.append((stage.dim_name or "", f"{stage.where}.compressor"))
            out += [(r.name, r.slot.where) for r in stage.ranges]
        return out


def _middle(spec: dict[str, Any]) -> Any:
    if spec["type"] == "choice":
        return spec["range"][0]
    low, high = spec["range"]
    if spec["type"] == "int":
        return int(low + (high - low) // 2)
    return (low + high) / 2


def _dimension(cls: Any, rng: _Range) -> Any:
    spec = rng.spec
    numeric = spec["type"] != "choice"
    return cls(
        name=rng.name, kind=spec["type"],
        low=spec["range"][0] if numeric else None, high=spec["range"][1] if numeric else None,
        choices=tuple(spec["range"]) if not numeric else None,
        log=spec.get("log", False), interval=spec.get("interval"), n=spec.get("n"), condition=rng.condition,
    )


def _relocate(error: ValueError, origins: list[str], where: str, name: str, choice: bool) -> str:
    """``config_list[3].sparsity: ...`` (expanded index) -> the user's path of that entry."""
    base = f"{where}.config_list" + (f".{name}" if choice else "")
    if not isinstance(error, FieldError) or error.field != "config_list":
        return f"{base}: {error}"
    key_part = error.tail[len(f"[{error.entry}]"):] if error.entry is not None else error.tail
    if error.entry is not None and error.entry < len(origins):
        return f"{origins[error.entry]}{key_part}: {error.reason}"
    return f"{base}{error.tail}: {error.reason}"


# ---------------------------------------------------------------------------------------------- entry points
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


def job_config_builder(experiment: Any) -> CompressionJobConfigBuilder:
    """The runner's hook (``aup.runner.jobconfig``): builder for an ``aup.config.Experiment``."""
    return CompressionJobConfigBuilder(experiment.compression, experiment.parameter_dicts)


def check_compression(section: Any, parameter_config: list[dict[str, Any]] | None = None) -> list[str]:
    """Every problem of a ``compression`` section, one line each (empty when it is fine)."""
    try:
        CompressionJobConfigBuilder(section, parameter_config)
    except CompressionSpaceError as exc:
        return exc.problems
    return []


__all__ = ["CompressionJobConfigBuilder", "CompressionSpaceError", "job_config_builder", "check_compression",
           "has_ranges", "is_range"]
