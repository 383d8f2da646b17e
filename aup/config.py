"""The experiment JSON: pydantic models and up-front validation.

Auptimizer accepted any key silently, so a typo such as ``n_sample`` ran a different experiment than
the user meant. Here every section is a pydantic model with ``extra="forbid"`` and strict types, and
``load_experiment`` collects *all* problems before anything runs: each problem is one line
``<file>: <key>: <what was expected>`` (with a "did you mean" for unknown keys) and the whole set is
raised as one :class:`~aup.errors.ConfigError` (exit status 2, nothing written to the database).

This module is imported by the CLI, so it stays free of optuna/torch imports; the proposer-specific
keys come from ``aup.proposer_ext.PROPOSER_OPTIONS`` (imported lazily, see ``proposer_options``).
"""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aup.errors import ConfigError
from aup.errors import did_you_mean as _did_you_mean

# Keys the runner writes into every job config; a hyperparameter may not shadow them.
RESERVED_PARAMETER_NAMES = frozenset({"tid", "n_iterations", "save_model", "folder_name", "job_id"})

# Trial attributes the runner records itself; a multi_res_labels label may not take these names.
RESERVED_LABELS = frozenset({"score", "job_config", "job_config_path", "log_path", "attempts", "status_reason",
                             "budget", "interrupted", "requeued_from"})

# Auptimizer keys that only make sense for its SSH/AWS managers: a clear pointer instead of "unknown".
_REMOTE_RESOURCES = {
    "node": "SSH nodes",
    "aws": "AWS instances",
    "passive": "passive (manual) trials",
}


class _Section(BaseModel):
    """Strict and closed: JSON types must match, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)


class Parameter(_Section):
    """One entry of ``parameter_config`` (Auptimizer's keys plus ``log``)."""

    name: str
    type: Literal["float", "int", "choice"] = "int"  # Auptimizer's default
    range: list[Any]
    interval: Union[float, None] = None
    n: Union[int, None] = Field(default=None, ge=2)
    log: bool = False
    condition: Union[list[Any], None] = None  # [parent name, value]: sampled only when the parent has it

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        if value in RESERVED_PARAMETER_NAMES:
            raise ValueError(f"{value!r} is reserved for the runner's own job config keys")
        return value

    @model_validator(mode="after")
    def _range_ok(self) -> "Parameter":
        if self.type == "choice":
            if not self.range:
                raise ValueError("range: a choice needs a non-empty list of values")
            if self.log:
                raise ValueError("log: only float and int parameters can be log-scaled")
            return self
        if len(self.range) != 2:
            raise ValueError(f"range: expected [min, max] for a {self.type} parameter, got {self.range!r}")
        low, high = self.range
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise ValueError(f"range: expected two finite numbers, got {self.range!r}")
            if self.type == "int" and not float(bound).is_integer():
                raise ValueError(f"range: expected two integers for an int parameter, got {self.range!r}")
        if low > high or (self.type == "float" and low == high):
            raise ValueError(f"range: the range {self.range!r} is empty (expected min < max)")
        if self.log and low <= 0:
            raise ValueError(f"range: a log-scaled range must be positive, got {self.range!r}")
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"interval: expected a positive step, got {self.interval!r}")
        return self


class RuntimeArgs(_Section):
    """How each trial process runs: extra environment variables and a wall-clock limit."""

    env: dict[str, str] = Field(default_factory=dict)
    timeout: Union[float, None] = Field(default=None, gt=0)


class ResourceArgs(_Section):
    """Auptimizer's ``resource_args`` for local trials, plus ``gpus`` (the device list for ``gpu``)."""

    save_model: bool = False
    multi_res_labels: Union[list[str], None] = None
    track_intermediate_results: bool = False
    early_stop: Union[dict[str, Any], None] = None
    gpus: Union[list[Union[str, int]], None] = None

    @field_validator("early_stop")
    @classmethod
    def _policy_named(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and "aup_policy" not in value:
            raise ValueError("early_stop needs 'aup_policy' (bandit, median, truncation, curve_fitting)")
        return value

    @field_validator("multi_res_labels")
    @classmethod
    def _labels_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        taken = sorted(set(value or ()) & RESERVED_LABELS)
        if taken:
            raise ValueError(f"{taken[0]!r} is a name the runner records itself; choose another label")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus_nonempty(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None and not value:
            raise ValueError("expected at least one device id")
        return value


class JobFailure(_Section):
    """Auptimizer's ``job_failure``: when the section exists, ``job_retries`` defaults to 3."""

    ignore_fail: bool = False
    job_retries: int = Field(default=3, ge=0)


Direction = Literal["max", "min"]


class Experiment(_Section):
    """A validated experiment. Proposer-specific top-level keys are kept in ``proposer_options``."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    script: str
    resource: Literal["cpu", "gpu"]
    # Optional only for a one-time compression run (a ``compression`` section without ranges, see
    # ``_one_time_defaults``) and for several objectives (nsga2); otherwise required as in Auptimizer.
    proposer: Union[str, None] = None
    target: Union[Direction, dict[str, Direction], None] = None
    n_samples: Union[int, None] = Field(default=None, ge=1)
    n_parallel: int = Field(default=1, ge=1)
    random_seed: int = 0
    workingdir: Union[str, None] = None
    cwd: Union[str, None] = None
    parameter_config: list[Parameter] = Field(default_factory=list)
    runtime_args: RuntimeArgs = Field(default_factory=RuntimeArgs)
    resource_args: ResourceArgs = Field(default_factory=ResourceArgs)
    job_failure: JobFailure = Field(default_factory=lambda: JobFailure(job_retries=0))
    # one stage or a pipeline (list of stages); checked by aup.compression.search_space
    compression: Union[dict[str, Any], list[Any], None] = None
    # feasibility conditions over recorded metrics, e.g. {"model_bytes": "<= 0.25 * baseline_model_bytes"}
    constraints: Union[dict[str, Union[str, float, int, dict[str, Union[float, int]]]], None] = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @field_validator("target")
    @classmethod
    def _target_ok(cls, value: Any) -> Any:
        if isinstance(value, dict) and not value:
            raise ValueError("expected 'max', 'min' or a non-empty {objective: 'max'|'min'} object")
        return value

    @model_validator(mode="after")
    def _one_time_defaults(self) -> "Experiment":
        """Fill ``proposer``/``target`` where Auptimizer had a mode without them.

        A ``compression`` section that searches nothing, with no ``parameter_config`` and no
        ``proposer``, is Auptimizer's one-time compression: exactly one trial with that config
        (``random`` over an empty space, ``n_samples`` 1), ``target`` max unless given. Several
        objectives without a proposer default to ``nsga2``.
        """
        if self.proposer is None:
            if self.compression is not None and not self.parameter_config and not _compression_searches(self.compression):
                self.proposer = "random"
                if self.n_samples not in (None, 1):
                    raise ValueError("n_samples: a one-time compression (no ranges, no proposer) runs exactly one "
                                     f"trial, got {self.n_samples}")
                self.n_samples = 1
                if self.target is None:
                    self.target = "max"
            elif isinstance(self.target, dict) and len(self.target) > 1:
                self.proposer = "nsga2"
            else:
                raise ValueError("proposer: required key is missing")
        if self.target is None:
            raise ValueError("target: required key is missing")
        return self

    @model_validator(mode="after")
    def _parameters_unique(self) -> "Experiment":
        seen: set[str] = set()
        for parameter in self.parameter_config:
            if parameter.name in seen:
                raise ValueError(f"parameter_config: the name {parameter.name!r} is used twice")
            seen.add(parameter.name)
        return self

    # ---- derived values the runner uses -------------------------------------------------------
    @property
    def objectives(self) -> list[str]:
        """Objective names in order: ``["score"]`` for the string form of ``target``."""
        return ["score"] if isinstance(self.target, str) else list(self.target)

    @property
    def directions(self) -> list[str]:
        """Optuna directions matching ``objectives``."""
        targets = [self.target] if isinstance(self.target, str) else list(self.target.values())
        return ["maximize" if t == "max" else "minimize" for t in targets]

    @property
    def proposer_options(self) -> dict[str, Any]:
        """The proposer-specific top-level keys (``engine``, ``max_iter``...), as given."""
        return dict(self.model_extra or {})

    @property
    def parameter_dicts(self) -> list[dict[str, Any]]:
        return [p.model_dump(exclude_none=True) for p in self.parameter_config]


class LoadedExperiment:
    """An Experiment plus where it came from and the resolved paths the runner needs."""

    def __init__(self, experiment: Experiment, raw: dict[str, Any], path: str, workingdir: Path,
                 command: list[str]) -> None:
        self.experiment = experiment
        self.raw = raw  # the JSON exactly as given; stored in the study
        self.path = path
        self.workingdir = workingdir
        self.command = command  # script tokens; the job config path is appended per trial


def proposer_options() -> dict[str, frozenset[str]]:
    """The proposer names and their specific keys, from the proposer module (lazy: it imports optuna)."""
    from aup.proposer_ext import PROPOSER_OPTIONS

    return {name.lower(): frozenset(keys) for name, keys in PROPOSER_OPTIONS.items()}


def load_experiment(path: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None) -> LoadedExperiment:
    """Read and validate an experiment JSON file; raises ConfigError listing every problem."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    return validate_experiment(raw, path, base_dir=base_dir)


def _check_required_mode_keys(raw: dict[str, Any]) -> list[str]:
    """``proposer``/``target`` are required except in one-time compression (see ``_one_time_defaults``)."""
    one_time = (raw.get("compression") is not None and not raw.get("parameter_config")
                and "proposer" not in raw and not _compression_searches(raw["compression"]))
    problems = []
    target = raw.get("target")
    if "target" not in raw and not one_time:
        problems.append("target: required key is missing")
    if "proposer" not in raw and not one_time and not (isinstance(target, dict) and len(target) > 1):
        problems.append("proposer: required key is missing")
    return problems


def _compression_searches(section: Any) -> bool:
    from aup.compression.search_space import has_ranges

    return has_ranges(section)


def _check_compression(raw: dict[str, Any]) -> list[str]:
    """Every problem of the compression section and the constraints, one line each (lazy imports).

    Works on the raw JSON so that these problems are listed even when other keys are wrong.
    """
    problems: list[str] = []
    if raw.get("compression") is not None:
        from aup.compression.search_space import check_compression

        params = raw.get("parameter_config")
        try:  # a broken parameter_config is reported by its own validation
            problems += check_compression(raw["compression"], params if isinstance(params, list) else [])
        except Exception:  # noqa: BLE001
            problems += check_compression(raw["compression"], [])
    if raw.get("constraints") is not None:
        from aup.runner.constraints import check_constraints

        problems += check_constraints(raw["constraints"])
    return problems


def validate_experiment(raw: Any, source: str, *, base_dir: str | os.PathLike[str] | None = None,
                        check_script: bool = True) -> LoadedExperiment:
    """Validate an experiment dict; relative ``workingdir`` resolves against ``base_dir`` (default: CWD).

    Auptimizer resolves ``workingdir`` against the current directory, and so do we; the default
    ``workingdir`` is the current directory.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the experiment must be a JSON object, not {type(raw).__name__}")
    problems: list[str] = []
    options = proposer_options()
    problems += _check_proposer_and_top_keys(raw, options)
    experiment = None
    try:
        experiment = Experiment.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
    problems += _check_required_mode_keys(raw)
    problems += _check_compression(raw)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    workingdir, command = base, []
    if experiment is not None:
        workingdir = (base / (experiment.workingdir or ".")).resolve()
        if not workingdir.is_dir():
            problems.append(f"workingdir: {workingdir} is not a directory")
        elif check_script:
            command, script_problem = resolve_script(experiment.script, workingdir)
            if script_problem:
                problems.append(f"script: {script_problem}{_next_to_file_hint(experiment, source, workingdir)}")
    elif isinstance(raw.get("script"), str):
        wd = raw.get("workingdir")
        workingdir = (base / (wd if isinstance(wd, str) else ".")).resolve()
        if workingdir.is_dir() and check_script:
            _, script_problem = resolve_script(raw["script"], workingdir)
            if script_problem:
                problems.append(f"script: {script_problem}")
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in _one_per_key(problems)))
    assert experiment is not None
    return LoadedExperiment(experiment, raw, source, workingdir, command)


def _next_to_file_hint(experiment: Experiment, source: str, workingdir: Path) -> str:
    """A hint when the script sits next to the experiment file but trials run elsewhere."""
    folder = Path(source).resolve().parent
    first = shlex.split(experiment.script)[0] if experiment.script.strip() else ""
    if first and folder != workingdir and (folder / first).is_file():
        return (f" (it is next to the experiment file: run from {folder} or set \"workingdir\"; a relative "
                "workingdir is relative to the current directory, as in Auptimizer)")
    return ""


def _one_per_key(problems: list[str]) -> list[str]:
    """Keep the first problem of each key: a union type fails once per member, one line is enough."""
    seen: dict[str, str] = {}
    for problem in problems:
        seen.setdefault(problem.partition(": ")[0], problem)
    return list(seen.values())


def _check_proposer_and_top_keys(raw: dict[str, Any], options: dict[str, frozenset[str]]) -> list[str]:
    """Unknown top-level keys (with suggestions), unknown proposer, and unsupported resources."""
    problems = []
    proposer = raw.get("proposer")
    proposer_keys: frozenset[str] = frozenset()
    if isinstance(proposer, str):
        if proposer.lower() in options:
            proposer_keys = options[proposer.lower()]
        else:
            problems.append(f"proposer: unknown proposer {proposer!r}{_did_you_mean(proposer.lower(), options)}"
                            f" (known: {', '.join(sorted(options))})")
    known = set(Experiment.model_fields) | proposer_keys
    every_option = set().union(*options.values()) if options else set()
    for key in raw:
        if key in known:
            continue
        if key in every_option:
            problems.append(f"{key}: not an option of the {proposer!r} proposer")
        else:
            problems.append(f"{key}: unknown key{_did_you_mean(key, known)}")
    resource = raw.get("resource")
    if isinstance(resource, str) and resource in _REMOTE_RESOURCES:
        problems.append(
            f"resource: {resource!r} ({_REMOTE_RESOURCES[resource]}) is not supported by aup; remote and cloud "
            "trials will run through the Ray resource (\"resource\": \"ray\", extra aup[ray]) in a later release; "
            "use \"cpu\" or \"gpu\""
        )
    elif resource == "ray":
        problems.append("resource: 'ray' is planned but not available yet; use \"cpu\" or \"gpu\"")
    return problems


_SECTION_FIELDS = {
    "parameter_config": Parameter,
    "runtime_args": RuntimeArgs,
    "resource_args": ResourceArgs,
    "job_failure": JobFailure,
}

_FRIENDLY = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "missing": "required key is missing",
}


def _describe(error: dict[str, Any]) -> str:
    """One line for one pydantic error: ``<key path>: <what was expected>[, got <value>]``."""
    loc = [part for part in error["loc"] if not _is_union_tag(part)]
    key = _key_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _SECTION_FIELDS.get(str(loc[0])) if loc else None
        fields = set(model.model_fields) if model else set()
        return f"{key}: unknown key{_did_you_mean(str(loc[-1]), fields)}"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        # a model-level validator names its own sub-key first ("range: ..."): attach it to the path
        head, sep, rest = message.partition(": ")
        if sep and head.isidentifier() and head in _all_field_names():
            return f"{key}.{head}: {rest}" if key else f"{head}: {rest}"
        return f"{key}: {message}"
    message = _FRIENDLY.get(kind, error["msg"][0].lower() + error["msg"][1:])
    if kind == "literal_error":
        message = "expected " + error["ctx"]["expected"].replace("'", '"')
        if key == "target":
            message = 'expected "max", "min" or an object {objective: "max"|"min"}'
    if kind == "missing":
        return f"{key}: {message}"
    return f"{key}: {message}, got {_short(error.get('input'))}"


def _all_field_names() -> set[str]:
    names = set(Experiment.model_fields)
    for model in _SECTION_FIELDS.values():
        names |= set(model.model_fields)
    return names


def _is_union_tag(part: Any) -> bool:
    """pydantic adds the union member's type name to the location (``int``, ``literal['max','min']``)."""
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "none") or "[" in part
                                      or part.startswith(("function-", "literal")))


def _key_path(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_script(script: str, workingdir: Path) -> tuple[list[str], str | None]:
    """Turn ``script`` into the command tokens; returns (tokens, problem or None).

    As in Auptimizer the first token is a path relative to ``workingdir`` and extra tokens are
    passed before the job config path. A non-executable ``.py`` file runs with the current Python
    (Auptimizer required ``chmod +x``). A first token that is not a file but a program on PATH
    (``python train.py``) is accepted as a command.
    """
    try:
        tokens = shlex.split(script)
    except ValueError as exc:
        return [], f"cannot split {script!r} into arguments ({exc})"
    if not tokens:
        return [], "expected the trial script to run, got an empty string"
    first = tokens[0]
    path = (workingdir / first).resolve() if not os.path.isabs(first) else Path(first)
    if path.is_file():
        if os.access(path, os.X_OK):
            return [str(path), *tokens[1:]], None
        if path.suffix == ".py":
            return [sys.executable, str(path), *tokens[1:]], None
        return [], f"{path} is not executable (run chmod +x on it, or use a .py script)"
    if path.exists():
        return [], f"{path} is not a file"
    if os.sep not in first and shutil.which(first):
        program = shutil.which(first)
        assert program is not None
        return [program, *tokens[1:]], None
    return [], f"{path} does not exist"
