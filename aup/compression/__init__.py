"""Model compression for aup trials: ``create_compressor`` and friends.

This package is imported by the experiment validator (for ``registry`` and ``schemas``) and by
``import aup; aup.compression...`` in trial scripts, so importing it must stay free of torch and
tensorflow: the torch-backed names below load on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

from aup.compression.factory import create_compressor, normalize_config
from aup.compression.registry import COMPRESSORS

# public name -> "module:attribute", imported on first access
_LAZY = {
    "load_deployed": "aup.compression.torch.deploy:load_deployed",
    "count_flops_params": "aup.compression.torch.base:count_flops_params",
    "SensitivityAnalysis": "aup.compression.torch.analysis:SensitivityAnalysis",
    "ChannelDependency": "aup.compression.torch.pruners.dependency:ChannelDependency",
    "Compressor": "aup.compression.torch.base:Compressor",
    "quantization_sensitivity": "aup.compression.torch.quant_profile:quantization_sensitivity_once",
}

# Auptimizer's submodule paths (``aup.compression.sensitivity_analysis.SensitivityAnalysis(...)`` after a
# plain ``import aup``), imported on first attribute access like the names above
_SUBMODULES = frozenset({"sensitivity_analysis", "shape_dependency", "counter", "mask_conflict"})

__all__ = ["COMPRESSORS", "create_compressor", "load_compressed", "normalize_config", *_LAZY]


def load_compressed(path: Any, *args: Any, **kwargs: Any) -> Any:
    """The model in an artifact written by ``export_model``: Keras for ``*.aup.npz`` files (see
    ``aup.compression.tensorflow.artifact``), torch otherwise (``aup.compression.torch.artifact``)."""
    if str(path).endswith(".aup.npz"):
        from aup.compression.tensorflow.artifact import load_compressed as load
    else:
        from aup.compression.torch.artifact import load_compressed as load
    return load(path, *args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"aup.compression.{name}")
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'aup.compression' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
