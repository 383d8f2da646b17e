"""A compression spec: the four things that pick and configure one compressor, and building it.

``normalize_config`` turns a job config, an experiment's ``compression`` section or a whole
experiment into a :class:`CompressionSpec`; ``build_stage`` checks it (names first, no model needed;
then the config_list against the compressor's schema; then, inside the constructor, against the
model) and instantiates the class, binding the extra arguments to the constructor's signature so
that positional extras after ``model, config_list`` work (Auptimizer passed ``model=`` by keyword
and broke on them). Torch-free at import time; torch comes with the compressor class.
Both :mod:`aup.compression.factory` and the torch pipeline build their stages here.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import aup.compression.registry as registry
import aup.compression.schemas as schemas

__all__ = ["CompressionSpec", "normalize_config", "is_pipeline", "pipeline_stages", "resolve_class",
           "bind_arguments", "build_stage", "accepted_kwargs", "merge_compressor_args"]


@dataclass(frozen=True)
class CompressionSpec:
    """The four things that pick and configure a compressor."""

    framework: str
    compression_type: str
    compressor: str
    config_list: list[dict[str, Any]]
    compressor_args: dict[str, Any] = field(default_factory=dict)  # constructor kwargs from the job config


_KEYS = (
    ("framework", ("compression_framework", "framework")),
    ("compression_type", ("compression_type", "type")),
    ("compressor", ("compressor",)),
    ("config_list", ("config_list",)),
)


def normalize_config(config: Mapping[str, Any]) -> CompressionSpec:
    """Accept a job config (``compression_framework``, ``compression_type``, ...), an experiment's
    ``compression`` section (``framework``, ``type``, ...) or a whole experiment holding one."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a dict (a job config or a \"compression\" section), got {type(config).__name__}")
    if "compressor" not in config and isinstance(config.get("compression"), Mapping):
        config = config["compression"]
    values: dict[str, Any] = {}
    for field_name, aliases in _KEYS:
        for alias in aliases:
            if alias in config:
                values[field_name] = config[alias]
                break
        else:
            names = " or ".join(repr(a) for a in aliases)
            raise ValueError(f"config: missing {names}; a compression config needs "
                             "compression_framework, compression_type, compressor and config_list")
    for field_name in ("framework", "compression_type", "compressor"):
        if not isinstance(values[field_name], str):
            raise ValueError(f"config: {field_name} must be a string, got {values[field_name]!r}")
    values["framework"] = registry.canonical_framework(values["framework"])
    values["config_list"] = copy.deepcopy(values["config_list"])
    args = config.get("compressor_args") or {}
    if not isinstance(args, Mapping):
        raise ValueError(f"config: compressor_args must be a dict of constructor arguments, got {args!r}")
    values["compressor_args"] = copy.deepcopy(dict(args))
    return CompressionSpec(**values)


def is_pipeline(config: Any) -> bool:
    """A job config (or ``compression`` section / experiment) that chains several compression stages."""
    if not isinstance(config, Mapping):
        return False
    if "compression_pipeline" in config:
        return True
    return "compressor" not in config and isinstance(config.get("compression"), list)


def pipeline_stages(config: Mapping[str, Any]) -> list[CompressionSpec]:
    """The stages of a pipeline config, each normalised like a single-stage config."""
    stages = config["compression_pipeline"] if "compression_pipeline" in config else config["compression"]
    if not isinstance(stages, list) or not stages:
        raise ValueError("config: compression_pipeline must be a non-empty list of compression configs")
    out = []
    for index, stage in enumerate(stages):
        try:
            out.append(normalize_config(stage))
        except ValueError as exc:
            raise ValueError(f"compression_pipeline[{index}]: {exc}") from None
    return out


def resolve_class(spec: CompressionSpec) -> type:
    """Check the names and the config_list (no model needed), then import the class."""
    registry.resolve(spec.framework, spec.compression_type, spec.compressor)
    schemas.validate_config_list(spec.framework, spec.compression_type, spec.compressor, spec.config_list)
    return registry.load_class(spec.framework, spec.compression_type, spec.compressor)


def bind_arguments(cls: type, name: str, model: Any, config_list: Any, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """Bind extras to ``cls(model, config_list, ...)``; a mismatch is a one-line ValueError."""
    signature = inspect.signature(cls)
    try:
        return signature.bind(model, config_list, *args, **kwargs)
    except TypeError as exc:
        params = ", ".join(str(p) for p in list(signature.parameters.values())[2:])
        raise ValueError(f"compressor {name!r}: {exc}; its extra arguments are ({params})") from None


def build_stage(model: Any, spec: CompressionSpec, args: tuple = (), kwargs: dict | None = None,
                only_accepted: bool = False) -> Any:
    """Instantiate one compressor; ``only_accepted`` drops keyword extras its constructor does not take."""
    cls = resolve_class(spec)
    kwargs = dict(kwargs or {})
    if only_accepted:
        kwargs = accepted_kwargs(cls, kwargs)
    bound = bind_arguments(cls, spec.compressor, model, spec.config_list, args, kwargs)
    merge_compressor_args(cls, spec.compressor, bound, spec.compressor_args)
    return cls(*bound.args, **bound.kwargs)


def accepted_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``cls``'s constructor accepts (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def merge_compressor_args(cls: type, name: str, bound: inspect.BoundArguments, extra: Mapping[str, Any]) -> None:
    """Put the config's ``compressor_args`` into ``bound``; the config wins, with a warning on conflict."""
    params = bound.signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in extra.items():
        if key not in params and not takes_any:
            allowed = ", ".join(p for p in list(params)[2:] if params[p].kind is not inspect.Parameter.VAR_POSITIONAL)
            raise ValueError(f"compressor_args.{key}: {name!r} takes no argument {key!r}; its arguments are ({allowed})")
        if key in bound.arguments and not _same(bound.arguments[key], value):
            warnings.warn(f"{name}: {key}={value!r} from the job config's compressor_args replaces "
                          f"{bound.arguments[key]!r} given by the script", stacklevel=3)
        if key in params:
            bound.arguments[key] = value
        else:
            var_kw = next(p for p in params if params[p].kind is inspect.Parameter.VAR_KEYWORD)
            bound.arguments.setdefault(var_kw, {})[key] = value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - tensors and other objects without a plain truth value
        return a is b
