"""Keras 3 pruners. ``level``: fine-grained magnitude pruning (Han et al., NeurIPS 2015).

Per selected layer, the ``int(sparsity * size)`` kernel elements with the smallest absolute value
are zeroed (NNI 2.0's count); ties are broken by position, so the achieved sparsity is exactly the
target's. Biases are not pruned. Elements pruned earlier are zero and so stay among the smallest.
"""
from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from aup.compression.tensorflow.base import KerasPruner

__all__ = ["LevelPruner", "smallest_magnitude_mask"]


def smallest_magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 array zeroing the ``int(sparsity * size)`` smallest ``|weight|`` elements."""
    flat = np.abs(weight).ravel()
    k = int(flat.size * sparsity)
    mask = np.ones(flat.size, dtype=weight.dtype)
    if k > 0:
        mask[np.argsort(flat, kind="stable")[:k]] = 0
    return mask.reshape(weight.shape)


class LevelPruner(KerasPruner):
    """``LevelPruner(model, config_list, optimizer=None, dummy_input=None)`` for Keras 3 models.

    Prunes the ``kernel`` of every selected layer (``depthwise_kernel`` / ``embeddings`` for
    DepthwiseConv and Embedding layers named explicitly).
    """

    compressor_name: ClassVar[str] = "level"

    def __init__(self, model: keras.Model, config_list: list[dict[str, Any]], optimizer: Any = None,
                 dummy_input: Any = None) -> None:
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)

    def calc_mask(self, name: str, weight: np.ndarray, sparsity: float) -> np.ndarray:
        return smallest_magnitude_mask(weight, sparsity)
