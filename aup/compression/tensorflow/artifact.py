"""A compact, pickle-free file for a pruned Keras model, and ``load_compressed`` to get it back.

Why: a ``.keras`` file stores every weight densely, so a model pruned to 80 % is as large as the
dense one (339 kB before and after on the digits CNN). The artifact stores each weight either
densely or, where smaller, as its non-zero values plus a one-bit-per-element bitmask; its size on
disk is the ``model_bytes`` metric.

Layout: one ``.npz`` file (``numpy.savez``, a zip of ``.npy`` arrays, readable with
``numpy.load(allow_pickle=False)``):

- ``__meta__``: UTF-8 JSON as a uint8 array: ``format`` ("aup-compressed-keras"), ``version``,
  ``keras_version``, ``model_config`` (``model.to_json()`` with aup's mask constraints removed, or
  null when the model cannot be serialised), ``weights`` (per weight: ``path``, ``shape``, ``dtype``,
  ``encoding`` "dense" | "sparse"), and caller metadata (compressor, config_list...).
- ``w<i>`` for a dense weight; ``w<i>.values`` + ``w<i>.bitmap`` (``numpy.packbits``, C order) for
  a sparse one. ``i`` is the index in ``model.weights``.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any, Mapping

import keras
import numpy as np

from aup.compression.tensorflow.config_list import iter_layers, layer_weight, to_numpy
from aup.compression.tensorflow.masking import attach_mask, detach_mask, mask_of, set_layer_constraint

__all__ = ["FORMAT", "VERSION", "save_artifact", "read_artifact", "load_compressed", "save_masks", "restore_masks", "unmasked"]

FORMAT = "aup-compressed-keras"
VERSION = 1
_MIN_SPARSE = 64  # tiny weights (biases) are always dense


class unmasked:
    """Context manager: the model without aup's mask constraints (user constraints restored).

    Exported files must load with plain Keras, where ``aup>MaskConstraint`` is unknown.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.removed: list[tuple[Any, str, Any, Any]] = []

    def __enter__(self) -> keras.Model:
        for _, layer in iter_layers(self.model):
            found = layer_weight(layer)
            if found is None or mask_of(found[1]) is None:
                continue
            attr, variable = found
            self.removed.append((layer, attr, variable, mask_of(variable)))
            detach_mask(layer, attr, variable)
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for layer, attr, variable, constraint in self.removed:
            variable.constraint = constraint
            set_layer_constraint(layer, attr, constraint)
        self.removed.clear()


def _encode(index: int, array: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    key = f"w{index}"
    if array.size < _MIN_SPARSE or not np.issubdtype(array.dtype, np.floating):
        return {key: array}, "dense"
    nonzero = array != 0
    sparse_bytes = (array.size + 7) // 8 + int(nonzero.sum()) * array.itemsize
    if sparse_bytes >= array.nbytes:
        return {key: array}, "dense"
    return {f"{key}.values": array[nonzero], f"{key}.bitmap": np.packbits(nonzero.ravel())}, "sparse"


def _model_json(model: keras.Model) -> str | None:
    try:
        with unmasked(model):
            return model.to_json()
    except Exception:  # noqa: BLE001 - subclassed models without get_config: weights only
        return None


def save_artifact(path: str | os.PathLike, model: keras.Model, meta: Mapping[str, Any] | None = None) -> int:
    """Write ``model`` (its weights as they are now) to ``path``; returns the file size in bytes."""
    arrays: dict[str, np.ndarray] = {}
    described = []
    for index, variable in enumerate(model.weights):
        value = to_numpy(variable)
        encoded, encoding = _encode(index, value)
        arrays.update(encoded)
        described.append({"path": variable.path, "shape": list(value.shape), "dtype": str(value.dtype),
                          "encoding": encoding})
    info = {
        **dict(meta or {}),
        "format": FORMAT,
        "version": VERSION,
        "keras_version": keras.__version__,
        "model_config": _model_json(model),
        "weights": described,
    }
    arrays["__meta__"] = np.frombuffer(json.dumps(info, default=str).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    with open(path, "wb") as handle:  # a file object: numpy would otherwise append ".npz"
        np.savez(handle, **arrays)
    return os.path.getsize(path)


def read_artifact(path: str | os.PathLike) -> tuple[dict[str, Any], list[np.ndarray]]:
    """``(meta, weights)`` of an artifact, the weights decoded to dense arrays in model order.

    Declared shapes are checked against the stored arrays before anything is allocated, and a
    damaged or truncated file is a one-line ``ValueError`` naming it.
    """
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            if "__meta__" not in data.files:
                raise ValueError(f"{path}: not an aup Keras artifact (no __meta__)")
            meta = json.loads(bytes(data["__meta__"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not an aup Keras artifact (format "
                                 f"{meta.get('format') if isinstance(meta, dict) else None!r})")
            weights = [_decode(data, index, info) for index, info in enumerate(meta["weights"])]
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(message if message.startswith(f"{path}:") else f"{path}: damaged aup Keras artifact "
                                                                          f"({message})") from None
    except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise ValueError(f"{path}: damaged or truncated aup Keras artifact ({detail})") from None
    return meta, weights


def _decode(data: Any, index: int, info: Mapping[str, Any]) -> np.ndarray:
    shape = info["shape"]
    if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                            for n in shape)):
        raise ValueError(f"weight {index}: malformed shape {str(shape)[:80]}")
    size = math.prod(shape)
    if info["encoding"] == "dense":
        dense = data[f"w{index}"]
        if dense.size != size:
            raise ValueError(f"weight {index}: shape {shape} declared, {dense.size} values stored")
        return dense.reshape(shape)
    bitmap, values = data[f"w{index}.bitmap"], data[f"w{index}.values"]
    if bitmap.dtype != np.uint8 or bitmap.size != (size + 7) // 8:
        raise ValueError(f"weight {index}: a bitmap of {(size + 7) // 8} bytes is declared, {bitmap.size} stored")
    nonzero = np.unpackbits(bitmap, count=size).astype(bool)
    if values.size != int(nonzero.sum()):
        raise ValueError(f"weight {index}: {values.size} values stored for {int(nonzero.sum())} non-zeros")
    dense = np.zeros(size, dtype=np.dtype(info["dtype"]))
    dense[nonzero] = values.reshape(-1)
    return dense.reshape(shape)


def load_compressed(path: str | os.PathLike, model: keras.Model | None = None,
                    custom_objects: Mapping[str, Any] | None = None) -> keras.Model:
    """The Keras model stored in an artifact.

    The architecture is rebuilt from the stored config (``custom_objects`` for the user's own
    layer classes); pass ``model`` (same architecture) to fill an existing model instead, which is
    needed for subclassed models whose config could not be stored.
    """
    meta, weights = read_artifact(path)
    if model is None:
        config = meta.get("model_config")
        if config is None:
            raise ValueError(f"{path}: the model's architecture was not stored (a subclassed model without "
                             "get_config); pass model=<the same architecture> to load the weights into it")
        model = keras.models.model_from_json(config, custom_objects=dict(custom_objects or {}))
    variables = model.weights
    if len(variables) != len(weights):
        raise ValueError(f"{path}: the artifact holds {len(weights)} weights, the model has {len(variables)}")
    for variable, value in zip(variables, weights):
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{path}: weight {variable.path} has shape {tuple(variable.shape)}, "
                             f"the artifact {value.shape}")
        variable.assign(value)
    return model


def save_masks(path: str | os.PathLike, masks: Mapping[str, np.ndarray]) -> None:
    """The masks as ``.npz``: one boolean array per ``<layer name>/<weight>`` (True = kept)."""
    with open(os.fspath(path), "wb") as handle:
        np.savez(handle, **{name: np.asarray(mask, dtype=bool) for name, mask in masks.items()})


def restore_masks(model: keras.Model, path: str | os.PathLike) -> None:
    """Put masks written by :func:`save_masks` back on ``model`` (e.g. to continue fine-tuning)."""
    layers = dict(iter_layers(model))
    with np.load(os.fspath(path), allow_pickle=False) as data:
        for key in data.files:
            name, _, attr = key.rpartition("/")
            layer = layers.get(name)
            found = layer_weight(layer, (attr,)) if layer is not None else None
            if found is None:
                raise ValueError(f"{path}: {key!r} is not a weight of the model")
            constraint = attach_mask(layer, attr, found[1])
            constraint.set_mask(data[key])
            found[1].assign(to_numpy(found[1]) * data[key])
