"""Pruning masks kept in Keras constraints, so that every way of training keeps them.

Keras 3's optimizers apply ``variable.constraint`` right after each update, on every backend and
inside compiled steps; a mask stored there therefore holds through ``model.fit``, custom
``GradientTape`` + ``optimizer.apply_gradients`` loops and ``tf.function``-compiled steps, which
NNI 2.0's TF pruner (eager-only layer wrappers) could not do. The mask is a ``keras.Variable``: a new
mask is an ``assign``, so compiled steps are not retraced.

The constraint is registered with Keras (``aup>MaskConstraint``) and its config carries the mask
(packed bits, base64), so a model saved with ``model.save("x.keras")`` or ``.h5`` during pruning
reloads with its masks and keeps them through further training, as long as this module is imported
(any ``aup.compression.tensorflow`` import does it). A user constraint already on the weight (e.g.
``MaxNorm``) is kept and runs before the mask.
"""
from __future__ import annotations

import base64
from typing import Any

import keras
import numpy as np

from aup.compression.tensorflow.config_list import to_numpy

__all__ = ["MaskConstraint", "attach_mask", "detach_mask", "mask_of", "set_layer_constraint"]


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(bool).ravel())).decode("ascii")


def _unpack(bits: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(bits), dtype=np.uint8)
    return np.unpackbits(raw, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)


@keras.saving.register_keras_serializable(package="aup")
class MaskConstraint(keras.constraints.Constraint):
    """``w -> inner(w) * mask``; ``mask`` is a non-trainable ``keras.Variable`` of 0/1 values."""

    def __init__(self, shape: Any, mask_bits: str | None = None, inner: Any = None, dtype: str = "float32") -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.inner = keras.constraints.get(inner) if isinstance(inner, (dict, str)) else inner
        initial = np.ones(self.shape, dtype=dtype) if mask_bits is None else _unpack(mask_bits, self.shape).astype(dtype)
        self.mask = keras.Variable(initial, trainable=False, dtype=dtype, name="aup_mask")

    def __call__(self, w: Any) -> Any:
        if self.inner is not None:
            w = self.inner(w)
        return w * keras.ops.cast(self.mask, w.dtype)

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the mask (same shape); compiled training steps pick it up without retracing."""
        mask = np.asarray(mask)
        if mask.shape != self.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the weight's {self.shape}")
        self.mask.assign(mask.astype(self.dtype))

    def numpy(self) -> np.ndarray:
        """The mask as a boolean array (True = kept)."""
        return to_numpy(self.mask).astype(bool)

    def get_config(self) -> dict[str, Any]:
        inner = keras.constraints.serialize(self.inner) if self.inner is not None else None
        return {"shape": list(self.shape), "mask_bits": _pack(self.numpy()), "inner": inner, "dtype": self.dtype}


# the layer attribute that ``get_config`` serialises for each prunable weight (Keras 3's
# DepthwiseConv layers keep their weight as ``kernel`` but its constraint as ``depthwise_constraint``)
CONSTRAINT_ATTRS = {"kernel": ("kernel_constraint", "depthwise_constraint"),
                    "depthwise_kernel": ("depthwise_constraint",), "embeddings": ("embeddings_constraint",)}


def set_layer_constraint(layer: keras.layers.Layer, attr: str, constraint: Any) -> None:
    """Point the layer's constraint attribute for weight ``attr`` at ``constraint`` (if it has one)."""
    for name in CONSTRAINT_ATTRS.get(attr, (f"{attr}_constraint",)):
        if hasattr(layer, name):
            setattr(layer, name, constraint)
            return


def mask_of(variable: keras.Variable) -> MaskConstraint | None:
    """The mask constraint on a weight, if any."""
    constraint = getattr(variable, "constraint", None)
    return constraint if isinstance(constraint, MaskConstraint) else None


def attach_mask(layer: keras.layers.Layer, attr: str, variable: keras.Variable) -> MaskConstraint:
    """Put a mask constraint on ``layer``'s weight ``attr`` (reusing one already there).

    Both the variable (which the optimizer reads) and the layer's constraint attribute (which
    ``get_config`` serialises, e.g. ``kernel_constraint``) point at it, so saving the model keeps the mask.
    """
    existing = mask_of(variable)
    if existing is not None:
        return existing
    constraint = MaskConstraint(variable.shape, inner=variable.constraint, dtype=str(variable.dtype))
    variable.constraint = constraint
    set_layer_constraint(layer, attr, constraint)
    return constraint


def detach_mask(layer: keras.layers.Layer, attr: str, variable: keras.Variable) -> None:
    """Remove the mask constraint, restoring the user's own constraint (if any)."""
    existing = mask_of(variable)
    if existing is None:
        return
    variable.constraint = existing.inner
    set_layer_constraint(layer, attr, existing.inner)
