"""Tiny Keras models and configs shared by the Keras tests."""
from __future__ import annotations

import importlib.util
from typing import Any

import pytest

# a module-level import of keras would load TensorFlow while collecting the fast suite
needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras (the tf extra) not installed")


def to_numpy(value: Any) -> Any:
    from aup.compression.tensorflow.config_list import to_numpy as convert

    return convert(value)


def small_cnn(keras: Any, name: str = "cnn") -> Any:
    """conv1 (8 filters) -> conv2 (16) -> fc (10); all weights random."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="fc"),
    ], name=name)


LEVEL = {"framework": "tensorflow", "type": "pruning", "compressor": "level"}
TARGETS = {"conv1": 0.5, "conv2": 0.8, "fc": 0.9}


def level_config(config_list: list[dict[str, Any]]) -> dict[str, Any]:
    return {**LEVEL, "config_list": config_list}


def per_layer_config() -> dict[str, Any]:
    return level_config([{"sparsity": s, "op_names": [n]} for n, s in TARGETS.items()])


def zero_fraction(keras: Any, layer: Any) -> float:
    import numpy as np

    kernel = to_numpy(layer.kernel)
    return float(np.mean(kernel == 0))
