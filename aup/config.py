"""The experiment JSON: loading and up-front validation (the models are in ``aup.config_schema``).

Auptimizer accepted any key silently, so a typo such as ``n_sample`` ran a different experiment than
the user meant. Here every section is a pydantic model with ``extra="forbid"`` and strict types, and
``load_experiment`` collects *all* problems before anything runs: each problem is one line
``<file>: <key>: <what was expected>`` (with a "did you mean" for unknown keys) and the whole set is
raised as one :class:`~aup.errors.ConfigError` (exit status 2, nothing written to the database).

This module is imported by the CLI, so it stays free of optuna/torch imports; the proposer-specific
keys come from the proposer registry rows (``aup.proposer_ext.registry``, imported lazily, see ``proposer_options``).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aup.config_schema import (RESERVED_LABELS, RESERVED_PARAMETER_NAMES, Experiment, JobFailure, Parameter,
                               ResourceArgs, RuntimeArgs, compression_searches)
from aup.errors import ConfigError, Problem, ProblemError, did_you_mean
from aup.resources import RESOURCES, resource_only_args

__all__ = ["Experiment", "JobFailure", "LoadedExperiment", "Parameter", "RESERVED_LABELS",
           "RESERVED_PARAMETER_NAMES", "ResourceArgs", "RuntimeArgs", "load_experiment", "resolve_script",
           "validate_experiment"]

# Auptimizer keys that only make sense for its SSH/AWS managers: a clear pointer instead of "unknown".
_REMOTE_RESOURCES = {
    "node": "SSH nodes",
    "aws": "AWS instances",
    "passive": "passive (manual) trials",
}

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
    from aup.proposer_ext.registry import proposer_options as registered

    return {name.lower(): frozenset(keys) for name, keys in registered().items()}


def load_experiment(path: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None) -> LoadedExperiment:
    """Read and validate an experiment JSON file; raises ConfigError listing every problem."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle, object_pairs_hook=_refuse_duplicates)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: the JSON is nested too deeply") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    return validate_experiment(raw, path, base_dir=base_dir)


class DuplicateKeyError(ValueError):
    """A JSON object with the same key twice (json keeps the last one silently)."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"{key}: the key appears twice in one object (JSON would keep only the last)")
        result[key] = value
    return result


def _check_required_mode_keys(raw: dict[str, Any]) -> list[Problem]:
    """``proposer``/``target`` are required except in one-time compression (see ``_one_time_defaults``)."""
    one_time = (raw.get("compression") is not None and not raw.get("parameter_config")
                and "proposer" not in raw and not compression_searches(raw["compression"]))
    problems = []
    target = raw.get("target")
    if "target" not in raw and not one_time:
        problems.append(Problem("target", "required key is missing"))
    if "proposer" not in raw and not one_time and not (isinstance(target, dict) and len(target) > 1):
        problems.append(Problem("proposer", "required key is missing"))
    return problems


def _check_compression(raw: dict[str, Any]) -> list[Problem]:
    """Every problem of the compression section and the constraints, one line each (lazy imports).

    Works on the raw JSON so that these problems are listed even when other keys are wrong.
    """
    lines: list[str] = []
    if raw.get("compression") is not None:
        from aup.compression.search_space import check_compression

        params = raw.get("parameter_config")
        try:  # a broken parameter_config is reported by its own validation
            lines += check_compression(raw["compression"], params if isinstance(params, list) else [])
        except Exception:  # noqa: BLE001
            lines += check_compression(raw["compression"], [])
    if raw.get("constraints") is not None:
        from aup.constraints import check_constraints

        lines += check_constraints(raw["constraints"])
    return [Problem.from_line(line) for line in lines]


def validate_experiment(raw: Any, source: str, *, base_dir: str | os.PathLike[str] | None = None,
                        check_script: bool = True) -> LoadedExperiment:
    """Validate an experiment dict; relative ``workingdir`` resolves against ``base_dir`` (default: CWD).

    Auptimizer resolves ``workingdir`` against the current directory, and so do we; the default
    ``workingdir`` is the current directory.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the experiment must be a JSON object, not {type(raw).__name__}")
    problems: list[Problem] = []
    options = proposer_options()
    problems += _check_proposer_and_top_keys(raw, options)
    experiment = None
    try:
        experiment = Experiment.model_validate(raw)
    except ValidationError as exc:
        problems += _described(exc.errors())
    problems += _check_required_mode_keys(raw)
    problems += _check_compression(raw)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    workingdir, command = base, []
    if experiment is not None:
        workingdir = (base / (experiment.workingdir or ".")).resolve()
        if not workingdir.is_dir():
            problems.append(Problem("workingdir", f"{workingdir} is not a directory"))
        elif check_script:
            command, script_problem = resolve_script(experiment.script, workingdir)
            if script_problem:
                problems.append(Problem("script", script_problem + _next_to_file_hint(experiment, source, workingdir)))
    elif isinstance(raw.get("script"), str):
        wd = raw.get("workingdir")
        workingdir = (base / (wd if isinstance(wd, str) else ".")).resolve()
        if workingdir.is_dir() and check_script:
            _, script_problem = resolve_script(raw["script"], workingdir)
            if script_problem:
                problems.append(Problem("script", script_problem))
    if problems:
        raise ConfigError(problems=_one_per_key(problems), source=source)
    assert experiment is not None
    return LoadedExperiment(experiment, raw, source, workingdir, command)


def _next_to_file_hint(experiment: Experiment, source: str, workingdir: Path) -> str:
    """A hint when the script sits next to the experiment file but trials run elsewhere."""
    folder = Path(source).resolve().parent
    try:
        first = shlex.split(experiment.script)[0] if experiment.script.strip() else ""
    except ValueError:  # unbalanced quotes: resolve_script has said so
        return ""
    if first and folder != workingdir and (folder / first).is_file():
        return (f" (it is next to the experiment file: run from {folder} or set \"workingdir\"; a relative "
                "workingdir is relative to the current directory, as in Auptimizer)")
    return ""


def _one_per_key(problems: list[Problem]) -> list[Problem]:
    """Keep the first problem of each key: a union type fails once per member, one line is enough."""
    seen: dict[str, Problem] = {}
    for problem in problems:
        seen.setdefault(problem.key, problem)
    return list(seen.values())


def _check_proposer_and_top_keys(raw: dict[str, Any], options: dict[str, frozenset[str]]) -> list[Problem]:
    """Unknown top-level keys (with suggestions), unknown proposer, and unsupported resources."""
    problems = []
    proposer = raw.get("proposer")
    proposer_keys: frozenset[str] = frozenset()
    if isinstance(proposer, str):
        if proposer.lower() in options:
            proposer_keys = options[proposer.lower()]
        else:
            problems.append(Problem("proposer", f"unknown proposer {proposer!r}{did_you_mean(proposer.lower(), options)}"
                                                f" (known: {', '.join(sorted(options))})"))
    known = set(Experiment.model_fields) | proposer_keys
    every_option = set().union(*options.values()) if options else set()
    for key in raw:
        if key in known:
            continue
        if key in every_option:
            problems.append(Problem(key, f"not an option of the {proposer!r} proposer"))
        else:
            problems.append(Problem(key, f"unknown key{did_you_mean(key, known)}"))
    resource = raw.get("resource")
    if isinstance(resource, str) and resource in _REMOTE_RESOURCES:
        problems.append(Problem(
            "resource", f"{resource!r} ({_REMOTE_RESOURCES[resource]}) is not supported by aup; remote and cloud "
            "trials run through Ray: \"resource\": \"ray\" with resource_args.address of a Ray cluster "
            "(extra aup[ray]; see docs/scale-out.md)"
        ))
    elif isinstance(resource, str) and resource in RESOURCES:
        row = RESOURCES[resource]
        if row.package is not None and find_spec(row.package) is None:
            problems.append(Problem("resource", f"{resource!r} needs the {row.package!r} package ({row.install})"))
    args = raw.get("resource_args")
    if isinstance(args, dict):
        for key, owner in resource_only_args().items():
            if key in args and owner != resource:
                problems.append(Problem(f"resource_args.{key}", f"only used with \"resource\": \"{owner}\""))
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
    "model_type": "expected an object",
    "missing": "required key is missing",
}


def _described(errors: list[dict[str, Any]]) -> list[Problem]:
    """One problem per pydantic error; of the errors one union value got from its members, the
    deepest (``target.score`` rather than ``target``) is the one that says what is wrong."""
    chosen: dict[tuple[Any, ...], tuple[int, Problem]] = {}
    out: list[Problem | tuple[Any, ...]] = []
    for error in errors:
        loc = tuple(error["loc"])
        tag = next((i for i, part in enumerate(loc) if _is_union_tag(part)), None)
        problem = _describe(error)
        if tag is None:
            out.append(problem)
            continue
        root, depth = loc[:tag], len(loc)
        if root not in chosen:
            out.append(root)
            chosen[root] = (depth, problem)
        elif depth > chosen[root][0]:
            chosen[root] = (depth, problem)
    return [chosen[item][1] if isinstance(item, tuple) else item for item in out]


def _describe(error: dict[str, Any]) -> Problem:
    """One line for one pydantic error: ``<key path>: <what was expected>[, got <value>]``."""
    loc = [part for part in error["loc"] if not _is_union_tag(part)]
    key = _key_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _SECTION_FIELDS.get(str(loc[0])) if loc else None
        fields = set(model.model_fields) if model else set()
        return Problem(key, f"unknown key{did_you_mean(str(loc[-1]), fields)}")
    if kind == "value_error":
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ProblemError):  # a model-level validator names its own sub-key
            return cause.problem.under(key)
        return Problem(key, str(cause if cause is not None else error["msg"]))
    message = _FRIENDLY.get(kind, error["msg"][0].lower() + error["msg"][1:])
    if kind == "literal_error":
        message = "expected " + error["ctx"]["expected"].replace("'", '"')
        if key == "target":
            message = 'expected "max", "min" or an object {objective: "max"|"min"}'
    if kind == "missing":
        return Problem(key, message)
    return Problem(key, f"{message}, got {_short(error.get('input'))}")


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
