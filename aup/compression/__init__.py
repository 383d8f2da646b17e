"""Model compression for aup trials: ``create_compressor`` and friends.

This package is imported by the experiment validator (for ``registry`` and ``schemas``) and by
``import aup; aup.compression...`` in trial scripts, so importing it must stay free of torch and
tensorflow: the torch-backed names below load on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

from aup.compression.registry import COMPRESSORS

# public name -> "module:attribute", imported on first access (the package face imports nothing else)
_LAZY = {
    "create_compressor": "aup.compression.factory:create_compressor",
    "normalize_config": "aup.compression.factory:normalize_config",
    "load_deployed": "aup.compression.torch.deploy.settings:load_deployed",
    "count_flops_params": "aup.compression.torch.base:count_flops_params",
    "SensitivityAnalysis": "aup.compression.torch.analysis:SensitivityAnalysis",
    "ChannelDependency": "aup.compression.torch.graph.dependency:ChannelDependency",
    "Compressor": "aup.compression.torch.base:Compressor",
    "quantization_sensitivity": "aup.compression.torch.quant_profile:quantization_sensitivity_once",
}

# Auptimizer's submodule paths (``aup.compression.sensitivity_analysis.SensitivityAnalysis(...)`` after a
# plain ``import aup``), imported on first attribute access like the names above
_SUBMODULES = frozenset({"sensitivity_analysis", "shape_dependency", "counter", "mask_conflict"})

__all__ = ["COMPRESSORS", "load_compressed", *_LAZY]


def load_compressed(path: Any, *args: Any, **kwargs: Any) -> Any:
    """The model in an artifact written by ``export_model``: Keras for ``*.aup.npz`` files (see
    ``aup.compression.tensorflow.artifact``), torch otherwise (``aup.compression.torch.artifact.files``)."""
    if str(path).endswith(".aup.npz"):
        from aup.compression.tensorflow.artifact import load_compressed as load
    else:
        from aup.compression.torch.artifact.files import load_compressed as load
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


def __dir__() -> list[str]:
    """The lazy names too, so ``dir()``, tab completion and the API reference see the whole API."""
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
