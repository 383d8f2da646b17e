"""Measured size metrics of a Keras model, under the same names as the torch side (docs/design.md).

- ``param_count``: ``model.count_params()`` (Keras's "Total params", non-trainable weights included).
- ``nonzero_params``: non-zero elements over all weights, as they are now (masks are in the weights).
- ``macs``: multiply-accumulates for one sample, counted on layers with a kernel as *non-zero kernel
  elements x output positions* (transposed convolutions: x input positions), so pruned weights cost
  nothing; element-wise ops, normalisation, pooling and bias adds are not counted (the torch
  counter's convention). Positions come from one forward pass on the example input.
- ``model_bytes`` / ``model_bytes_gzip``: size of the compact artifact (``artifact.save_artifact``),
  the given one or a temporary one; gzip at level 6.
- ``sparsity``: fraction of zeros over the compressed layers' pruned weights.
- ``weight_bits``: stored bits per weight (the dtypes' widths, averaged over all weights).
- ``latency_ms``: median of ``runs`` batch-1 ``predict_on_batch`` calls after warm-up (Keras's
  compiled inference function, not eager Python dispatch). TensorFlow fixes its thread pools when it
  starts, so unlike the torch side this cannot pin threads afterwards: trials running side by side
  should set ``TF_NUM_INTRAOP_THREADS=1`` and ``TF_NUM_INTEROP_THREADS=1`` (``runtime_args.env``, as
  the examples do), or contended thread pools turn a 1 ms forward into 10-20 ms medians.
"""
from __future__ import annotations

import gzip
import os
import statistics
import tempfile
import time
from typing import Any

import keras
import numpy as np

from aup import metrics as M
from aup.compression.tensorflow.config_list import iter_layers, layer_weight, to_numpy

__all__ = ["measure_model", "count_flops_params", "layer_sparsity", "example_input_for", "latency_ms"]

_TRANSPOSED = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


def example_input_for(model: keras.Model, given: Any = None) -> Any:
    """A one-sample input: ``given`` (sliced to batch 1), else zeros of the model's input shape."""
    if given is not None:
        return _first_sample(given)
    shapes = []
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        shapes = [(tuple(t.shape), t.dtype) for t in inputs]
    else:
        built = getattr(model, "_build_shapes_dict", None) or {}
        shape = built.get("input_shape") if isinstance(built, dict) else None
        if shape is not None and all(isinstance(d, int) or d is None for d in shape):
            shapes = [(tuple(shape), "float32")]
    if not shapes:
        return None
    arrays = [np.zeros((1, *(d or 1 for d in shape[1:])), dtype=str(dtype)) for shape, dtype in shapes]
    return arrays[0] if len(arrays) == 1 else arrays


def _first_sample(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_first_sample(v) for v in x)
    if isinstance(x, dict):
        return {k: _first_sample(v) for k, v in x.items()}
    array = to_numpy(x)
    return array[:1] if array.ndim > 0 else array


def _shapes_of(model: keras.Model, example: Any, names: dict[int, str]) -> dict[str, tuple[tuple, tuple]]:
    """``{layer name: (input shape, output shape)}`` for the given layers, from one forward pass."""
    shapes: dict[str, tuple[tuple, tuple]] = {}
    patched = []
    for name, layer in iter_layers(model):
        if id(layer) not in names:
            continue
        original = layer.call

        def recorder(*args: Any, _name: str = name, _call: Any = original, **kwargs: Any) -> Any:
            out = _call(*args, **kwargs)
            first = args[0] if args else next(iter(kwargs.values()))
            shapes[_name] = (tuple(first.shape), tuple(out.shape))
            return out

        layer.call = recorder
        patched.append(layer)
    try:
        model(example, training=False)
    finally:
        for layer in patched:
            del layer.call
    return shapes


def count_flops_params(model: keras.Model, x: Any = None, verbose: bool = False) -> tuple[float, float, list[dict[str, Any]]]:
    """NNI-style ``(flops, params, rows)``: mask-aware MACs per sample, non-zero weights, per layer.

    ``x`` is an input array or an input shape such as ``(1, 28, 28, 1)``; None uses the model's.
    """
    if isinstance(x, (tuple, list)) and x and all(isinstance(v, int) for v in x):
        x = np.zeros(tuple(x), dtype="float32")
    example = example_input_for(model, x)
    if example is None:
        raise ValueError("count_flops_params: the model has no known input shape; pass an example input")
    kernels = {id(layer): name for name, layer in iter_layers(model) if layer_weight(layer) is not None}
    shapes = _shapes_of(model, example, kernels)
    rows = []
    for name, layer in iter_layers(model):
        found = layer_weight(layer)
        if found is None or name not in shapes:
            continue
        attr, variable = found
        nonzero = int(np.count_nonzero(to_numpy(variable)))
        in_shape, out_shape = shapes[name]
        rows.append({"name": name, "type": type(layer).__name__, "weight": attr, "nonzero_weights": nonzero,
                     "macs": _layer_macs(layer, attr, nonzero, in_shape, out_shape), "output_shape": out_shape})
    macs = float(sum(r["macs"] for r in rows))
    params = float(_nonzero(model))
    if verbose:
        for row in rows:
            print(f"{row['name']:<30} {row['type']:<20} {row['nonzero_weights']:>12} {row['macs']:>14}")
        print(f"total: {macs:.0f} MACs, {params:.0f} non-zero parameters")
    return macs, params, rows


def _layer_macs(layer: keras.layers.Layer, attr: str, nonzero: int, in_shape: tuple, out_shape: tuple) -> int:
    if attr == "embeddings":
        return 0  # a lookup, no multiply-accumulate
    if type(layer).__name__ in _TRANSPOSED:
        positions = _spatial(layer, in_shape)
    else:
        positions = _spatial(layer, out_shape)
    return nonzero * positions


def _spatial(layer: keras.layers.Layer, shape: tuple) -> int:
    """Positions one kernel element is used at: every axis but batch and channels."""
    dims = [d for d in shape[1:] if d is not None]
    if not dims:
        return 1
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial = dims[1:] if channels_first else dims[:-1]
    return int(np.prod(spatial, dtype=np.int64)) if spatial else 1


def _nonzero(model: keras.Model) -> int:
    return sum(int(np.count_nonzero(to_numpy(v))) for v in model.weights)


def layer_sparsity(layers: dict[str, keras.Variable]) -> dict[str, float]:
    """Fraction of zero elements of each named weight."""
    out = {}
    for name, variable in layers.items():
        array = to_numpy(variable)
        out[name] = round(1.0 - float(np.count_nonzero(array)) / array.size, 6) if array.size else 0.0
    return out


def _sparsity(layers: dict[str, keras.Variable]) -> float:
    total = sum(int(np.prod(v.shape)) for v in layers.values())
    zeros = sum(int(np.prod(v.shape)) - int(np.count_nonzero(to_numpy(v))) for v in layers.values())
    return zeros / total if total else 0.0


def _weight_bits(model: keras.Model) -> float:
    sizes = [(int(np.prod(v.shape)), np.dtype(str(v.dtype)).itemsize * 8) for v in model.weights]
    total = sum(n for n, _ in sizes)
    return sum(n * bits for n, bits in sizes) / total if total else 0.0


def _file_sizes(path: str | os.PathLike) -> dict[str, float]:
    with open(path, "rb") as handle:
        data = handle.read()
    return {M.MODEL_BYTES: float(len(data)), M.MODEL_BYTES_GZIP: float(len(gzip.compress(data, 6, mtime=0)))}


def latency_ms(model: keras.Model, example: Any, runs: int = 20, warmup: int = 10) -> float:
    """Median batch-1 latency of ``model.predict_on_batch`` in milliseconds."""
    for _ in range(warmup):
        model.predict_on_batch(example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict_on_batch(example)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def measure_model(model: keras.Model, example_input: Any = None, *, compressed: dict[str, keras.Variable] | None = None,
                  artifact_path: str | os.PathLike | None = None, latency: bool = True,
                  meta: dict[str, Any] | None = None) -> dict[str, float]:
    """All size metrics of ``model`` (see the module docstring).

    ``compressed`` maps layer names to their pruned weights (for ``sparsity``; default: every
    prunable weight). Without an example input (and no known input shape) ``macs`` and
    ``latency_ms`` are left out rather than guessed.
    """
    from aup.compression.tensorflow.artifact import save_artifact

    if compressed is None:
        compressed = {}
        for name, layer in iter_layers(model):
            found = layer_weight(layer)
            if found is not None:
                compressed[name] = found[1]
    example = example_input_for(model, example_input)
    metrics: dict[str, float] = {
        M.PARAM_COUNT: float(model.count_params()),
        M.NONZERO_PARAMS: float(_nonzero(model)),
        M.SPARSITY: _sparsity(compressed),
        M.WEIGHT_BITS: _weight_bits(model),
    }
    if example is not None:
        metrics[M.MACS] = count_flops_params(model, example)[0]
    if artifact_path is not None:
        metrics.update(_file_sizes(artifact_path))
    else:
        with tempfile.TemporaryDirectory(prefix="aup-measure-") as tmp:
            path = os.path.join(tmp, "model.aup.npz")
            save_artifact(path, model, meta=meta)
            metrics.update(_file_sizes(path))
    if latency and example is not None:
        metrics[M.LATENCY_MS] = latency_ms(model, example)
    return metrics

