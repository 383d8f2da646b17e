"""aup: hyperparameter search where model compression is a first-class dimension.

``import aup`` is what every trial script does first, so this module imports only the light,
torch-free client API. ``aup.compression`` (which needs torch) loads on first attribute access,
so ``import aup`` then ``aup.compression.create_compressor(...)`` works as in Auptimizer.
"""
from __future__ import annotations

import importlib
from typing import Any

from aup.client import (
    BasicConfig,
    aup_args,
    aup_flags,
    aup_save_model,
    log_metrics,
    model_folder,
    output_folder,
    print_result,
)

__version__ = "0.1.0"

__all__ = [
    "BasicConfig",
    "aup_args",
    "aup_flags",
    "aup_save_model",
    "compression",
    "create_compressor",
    "log_metrics",
    "model_folder",
    "output_folder",
    "print_result",
]


def create_compressor(model: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the compressor named by ``config`` for ``model`` (see ``aup.compression.create_compressor``)."""
    from aup.compression import create_compressor as _create

    return _create(model, config, *args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "compression":
        return importlib.import_module("aup.compression")
    raise AttributeError(f"module 'aup' has no attribute {name!r}")
