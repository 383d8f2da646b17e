"""``create_compressor``: from a job config (or a ``compression`` section) to a ready compressor.

Order matters for good errors: names are checked first (no model needed), then the config_list
against the compressor's schema, then (inside the compressor's constructor) against the model, and
the extra arguments are bound to the constructor's signature so that positional extras after
``model, config_list`` work (Auptimizer passed ``model=`` by keyword and broke on them).
This module stays torch-free at import time; torch is imported with the compressor class.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from aup.compression import registry, schemas


@dataclass(frozen=True)
class CompressionSpec:
    """The four things that pick and configure a compressor."""

    framework: str
    compression_type: str
    compressor: str
    config_list: list[dict[str, Any]]


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
    return CompressionSpec(**values)


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


def create_compressor(model: Any, config: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Build the compressor that ``config`` names for ``model``.

    ``config`` is the trial's job config (``compression_framework``, ``compression_type``,
    ``compressor``, ``config_list``) or an experiment's ``compression`` section (``framework``,
    ``type``, ...). Extra arguments go to the compressor's constructor by keyword or by position,
    e.g. ``create_compressor(model, config, optimizer, dependency_aware=True, dummy_input=x)``.
    Unknown names, bad config_list entries or arguments raise ValueError naming what is wrong.
    """
    spec = normalize_config(config)
    cls = resolve_class(spec)
    bound = bind_arguments(cls, spec.compressor, model, spec.config_list, args, kwargs)
    return cls(*bound.args, **bound.kwargs)
