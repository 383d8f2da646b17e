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
* ``"allocation": "sensitivity"`` (or ``"uniform"``) in a pruning stage: entries are not expanded and
  their ``sparsity`` range is one dimension ``global sparsity (<op_names or op_types>)``; the job
  config carries ``compression_allocation`` and the trial splits the value per layer
  (:mod:`aup.compression.allocation`).
* Every trial's config is built from deep copies: no trial ever shares an object with another
  trial or with the experiment (Auptimizer's shallow copy let parallel jobs run each other's values).
* Validation happens here, before the first trial: names, every entry against its compressor's
  schema, and every range *at its bounds* (a float sparsity range ``[0.1, 1.0]`` is refused because
  1.0 is not a legal sparsity). Problems are collected, one line each.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import aup.compression.schemas as schemas
from aup.compression.allocation import JOB_KEY as ALLOCATION_JOB_KEY
from aup.compression.allocation import Allocation
from aup.compression.space_parse import (  # noqa: F401 - re-exported: part of this module's API
    RANGE_KEYS, STAGE_KEYS, CompressionSpaceError, Range, SectionParser, Stage, assign_names, deploy_problem,
    has_ranges, is_range, set_path,
)
from aup.errors import FieldError


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
        parser = SectionParser(section, self.parameter_names)
        problems = parser.problems
        self.stages = parser.stages
        self.pipeline = parser.pipeline
        self.deploy = parser.deploy
        if problems:
            raise CompressionSpaceError(problems)
        assign_names(self.stages, set(self.parameter_names), self.pipeline)
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
            problems += _allocation_problems(stage)
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

    def _reference(self, stage: Stage, name: str) -> list[Any]:
        """The config_list of ``name`` with every range at a legal middle value."""
        concrete = copy.deepcopy(stage.lists.get(name, []))
        for rng in stage.ranges:
            if rng.slot.entry is not None and name in rng.slot.compressors:
                set_path(concrete[rng.slot.entry], rng.slot.path, _middle(rng.spec))
        return concrete

    def _check(self, stage: Stage, name: str, config_list: list[Any]) -> str | None:
        try:
            schemas.validate_config_list(stage.framework, stage.types[name], name, config_list)
        except ValueError as exc:
            return _relocate(exc, stage.origins.get(name, []), stage.where, name, stage.choice)
        return None

    def _check_bounds(self, stage: Stage, name: str, reference: list[Any], rng: Range) -> list[str]:
        problems = []
        for value in rng.extremes:
            trial = copy.deepcopy(reference)
            set_path(trial[rng.slot.entry], rng.slot.path, value)  # type: ignore[index]
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

    def _build_stage(self, stage: Stage, params: dict[str, Any]) -> dict[str, Any]:
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
                set_path(args, rng.slot.path, value)  # type: ignore[arg-type]
            else:
                set_path(config_list[rng.slot.entry], rng.slot.path, value)
        out = {"compression_framework": stage.framework, "compression_type": stage.types[name],
               "compressor": name, "config_list": config_list}
        if args:
            out["compressor_args"] = args
        if stage.allocation is not None:
            out[ALLOCATION_JOB_KEY] = stage.allocation.to_job()
        return out

    @property
    def model_ref(self) -> str | None:
        """The ``"module:callable"`` a stage names to build the model, if any."""
        return next((stage.model for stage in self.stages if stage.model), None)

    def entries(self) -> Iterable[tuple[Stage, str, int, Any, str]]:
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

    def allocation_seeds(self) -> list[tuple[Allocation, list[tuple[str, str, float, float]]]]:
        """Per stage with ``"allocation": {"mode": "seed"}``: its allocation and, for every searched
        per-layer sparsity, ``(dimension name, layer, low, high)`` (the runner seeds these dimensions)."""
        out = []
        for stage in self.stages:
            if stage.allocation is None or stage.allocation.mode != "seed":
                continue
            dims = []
            for rng in stage.ranges:
                if rng.slot.entry is None or rng.slot.path != ("sparsity",) or rng.spec["type"] != "float" \
                        or rng.slot.per_compressor is not None:
                    continue
                entry = stage.lists[rng.slot.compressors[0]][rng.slot.entry]
                names = entry.get("op_names") if isinstance(entry, dict) else None
                if isinstance(names, list) and len(names) == 1:
                    dims.append((rng.name, names[0], float(rng.spec["range"][0]), float(rng.spec["range"][1])))
            if dims:
                out.append((stage.allocation, dims))
        return out

    def describe(self) -> list[tuple[str, str]]:
        """(dimension name, where it comes from) for every compression dimension, for docs and tests."""
        out = []
        for stage in self.stages:
            if stage.choice:
                out.append((stage.dim_name or "", f"{stage.where}.compressor"))
            out += [(r.name, r.slot.where) for r in stage.ranges]
        return out


def _allocation_problems(stage: Stage) -> list[str]:
    """A global sparsity range above the allocation's per-layer cap could never be met."""
    if stage.allocation is None:
        return []
    cap = stage.allocation.max_sparsity
    return [f"{rng.slot.where}: the global sparsity range {rng.spec['range']!r} goes above the allocation's "
            f"max_sparsity {cap} (raise max_sparsity or lower the range)"
            for rng in stage.ranges
            if rng.slot.entry is not None and rng.slot.path == ("sparsity",) and rng.spec["type"] != "choice"
            and rng.spec["range"][1] > cap]


def _middle(spec: dict[str, Any]) -> Any:
    if spec["type"] == "choice":
        return spec["range"][0]
    low, high = spec["range"]
    if spec["type"] == "int":
        return int(low + (high - low) // 2)
    return (low + high) / 2


def _dimension(cls: Any, rng: Range) -> Any:
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
