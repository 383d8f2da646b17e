"""Running a deployed ONNX file with ONNX Runtime, and measuring it.

* :func:`import_ort`: onnxruntime writes ``$XDG_CACHE_HOME/Microsoft/...`` when it is imported; this
  points that at aup's own folder (``.aup/cache`` under the working directory when it exists, else a
  temp dir) for the import only.
* :func:`load_deployed` returns an ORT session wrapped as a callable (torch tensors in and out).
* :func:`ort_latency_ms` and :func:`agreement` measure the artifact for the trial's metrics.
* The feed helpers turn a batch (tensor, tuple or dict of keyword inputs) into ONNX inputs; the
  exporter and the quantizer's calibration reader use them too.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import statistics
import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from aup.caches import aup_cache_dir

__all__ = ["DeployedModel", "ort_available", "import_ort", "load_deployed", "ort_latency_ms", "agreement",
           "onnx_input_names"]


def ort_available() -> bool:
    """Whether the ``deploy`` extra (onnx + onnxruntime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def _cache_home() -> str:
    base = aup_cache_dir()
    os.makedirs(base, exist_ok=True)
    return base


def import_ort() -> Any:
    """``import onnxruntime`` with its on-import cache written under aup's folder, not the user's home."""
    import sys

    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = _cache_home()
    try:
        return importlib.import_module("onnxruntime")
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous


# ----------------------------------------------------------------------------- feeds


def as_args(example: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, (tuple, list)) and example and all(isinstance(x, torch.Tensor) for x in example):
        return tuple(example)
    raise ValueError("ONNX export needs the example input as a tensor or a tuple of tensors, "
                     f"got {type(example).__name__}")


def onnx_feed(batch: Any, names: list[str]) -> dict[str, Any]:
    """ONNX feeds of one batch: by name for dicts, else positionally; integer inputs keep their dtype."""
    values = [batch[n] for n in names] if isinstance(batch, Mapping) else list(as_args(batch))
    return {n: _array(v) for n, v in zip(names, values)}


def model_inputs(batch: Any, names: list[str], shapes: Sequence[Sequence[Any]] | None = None) -> Any:
    """``batch`` as the deployed model's inputs ``names``, or None when it does not fit them.

    Recorded batches of a model called with keywords may hold more (``labels``) or other names than
    the exported inputs: only the exported names are kept. A keyword batch for positional inputs, a
    positional one of another arity, or (with ``shapes``, the inputs' dimensions after the batch
    one; ``None`` or a name for a free dimension) a tensor of another shape does not fit.
    """
    if isinstance(batch, Mapping):
        if not all(n in batch for n in names):
            return None
        batch = {n: batch[n] for n in names}
        values = list(batch.values())
    else:
        try:
            values = list(as_args(batch))
        except ValueError:
            return None
        if len(values) != len(names) or set(names) - set(onnx_input_names(len(names))):
            return None
    for value, shape in zip(values, shapes or []):
        dims = tuple(value.shape[1:])
        if len(dims) != len(shape) or any(isinstance(d, int) and d != v for d, v in zip(shape, dims)):
            return None
    return batch


def fitting_batches(batches: Sequence[Any], names: list[str], shapes: Sequence[Sequence[Any]],
                    fallback: Any) -> list[Any]:
    """The ``batches`` that fit the inputs ``names`` / ``shapes`` (:func:`model_inputs`), as those
    inputs; ``[fallback]`` (the example input) when none does."""
    fitting = [b for b in (model_inputs(b, names, shapes) for b in batches) if b is not None]
    return fitting or [fallback]


def _array(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return x


def onnx_input_names(count: int) -> list[str]:
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


# ----------------------------------------------------------------------------- loading and running


class DeployedModel:
    """An ONNX Runtime session as a callable: ``model(x)`` with torch tensors (or numpy arrays).

    Returns a torch tensor for torch input (numpy for numpy input); several outputs come back as a
    tuple. ``session`` is the underlying ``onnxruntime.InferenceSession``.
    """

    training = False  # evaluation helpers written for nn.Module read and restore this flag

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = import_ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.path = os.fspath(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_shapes = [list(i.shape[1:]) for i in self.session.get_inputs()]  # after the batch dim
        self.output_names = [o.name for o in self.session.get_outputs()]

    def feeds(self, *inputs: Any, **named: Any) -> dict[str, Any]:
        """ONNX Runtime feeds from what a user naturally passes: NumPy arrays or torch tensors, one per
        input, as arguments, as one list/tuple of them, or by input name (keywords or one dict).
        Arrays are cast to the dtype the model declares (float64 NumPy data to a float32 input)."""
        named, inputs = _named_inputs(inputs, named)
        if named:
            missing = [n for n in self.input_names if n not in named]
            unknown = [n for n in named if n not in self.input_names]
            if inputs or missing or unknown:
                raise ValueError(f"deployed model {self.path}: inputs by name must be exactly {self.input_names}"
                                 + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
            values = [named[n] for n in self.input_names]
        else:
            values = list(inputs)
        if len(values) != len(self.input_names):
            raise ValueError(f"deployed model {self.path}: expected {len(self.input_names)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(values)}")
        types = {i.name: i.type for i in self.session.get_inputs()}
        return {n: _input_array(v, n, types.get(n, ""), self.path) for n, v in zip(self.input_names, values)}

    def __call__(self, *inputs: Any, **named: Any) -> Any:
        """Inputs as :meth:`feeds` takes them; torch tensors in, torch tensors out (else NumPy).
        A model exported from a dict output returns a dict."""
        outputs = self.session.run(None, self.feeds(*inputs, **named))
        given, _ = _named_inputs(inputs, named)
        flat = list(given.values()) if given else list(_named_inputs(inputs, {})[1])
        if any(isinstance(v, torch.Tensor) for v in flat):
            outputs = [torch.from_numpy(o) for o in outputs]
        if "output" not in self.output_names:  # exported from a dict / ModelOutput result
            return dict(zip(self.output_names, outputs))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def eval(self) -> "DeployedModel":
        """No-op, so evaluation helpers written for ``nn.Module`` accept the deployed model."""
        return self

    def train(self, mode: bool = True) -> "DeployedModel":
        if mode:
            raise ValueError("a deployed ONNX model cannot be trained")
        return self


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
               "tensor(bool)": "bool"}


def _named_inputs(inputs: tuple[Any, ...], named: dict[str, Any]) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """``model({"input": x})`` -> by name; ``model([x0, x1])`` (arrays/tensors) -> positional."""
    if not named and len(inputs) == 1 and isinstance(inputs[0], Mapping):
        return dict(inputs[0]), ()
    if (not named and len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) and inputs[0]
            and all(_is_array(v) for v in inputs[0])):
        return {}, tuple(inputs[0])
    return named, inputs


def _is_array(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (torch.Tensor, np.ndarray))


def _input_array(value: Any, name: str, ort_type: str, path: str) -> Any:
    """One input as the NumPy array ORT wants; a one-line error naming the input otherwise."""
    import numpy as np

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # numpy has no bfloat16
    elif not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError):
            value = None
        if value is None or value.dtype == object or value.dtype.kind in "USV":
            raise ValueError(f"deployed model {path}: input {name!r}: expected a NumPy array or a torch tensor")
    wanted = _ORT_DTYPES.get(ort_type)
    if wanted is None or value.dtype == np.dtype(wanted):
        return value
    if np.dtype(wanted).kind in "iub" and value.dtype.kind == "f":
        raise ValueError(f"deployed model {path}: input {name!r} is {wanted}, got {value.dtype} values")
    return value.astype(wanted)


def load_deployed(path: str | os.PathLike, threads: int | None = None) -> DeployedModel:
    """Load an artifact written by ``export_model(..., format="onnx")`` for evaluation.

    ``threads`` is ORT's intra-op thread count (default: torch's current setting).
    """
    if not os.path.exists(path):
        raise ValueError(f"load_deployed: {os.fspath(path)!r} does not exist")
    return DeployedModel(path, threads)


def ort_latency_ms(deployed: DeployedModel, example_input: Any, runs: int = 20, warmup: int = 5) -> float:
    """Median wall time (ms) of one batch-1 ``session.run`` after warm-up."""
    if isinstance(example_input, Mapping):
        feeds = deployed.feeds(**{k: v[:1] for k, v in example_input.items()})
    else:
        feeds = deployed.feeds(*(x[:1] for x in as_args(example_input)))
    run = deployed.session.run
    for _ in range(warmup):
        run(None, feeds)
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        run(None, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))



@torch.no_grad()
def agreement(deployed: DeployedModel, model: nn.Module, batches: Sequence[Any]) -> float:
    """Deployed vs in-memory model on ``batches`` (the deployed inputs, see :func:`model_inputs`):
    top-1 agreement for class scores ``[N, C>1]``, else the maximum absolute difference."""
    from aup.compression.torch.measure import call_model, first_tensor

    was_training = model.training
    model.eval()
    same = total = 0
    worst = 0.0
    classify = True
    try:
        for batch in batches:
            if isinstance(batch, Mapping):
                ours = first_tensor(call_model(model, batch)).float()
                theirs = first_tensor(deployed(**batch)).float()
            else:
                args = as_args(batch)
                ours = first_tensor(call_model(model, args if len(args) > 1 else args[0])).float()
                theirs = first_tensor(deployed(*args)).float()
            if ours.dim() == 2 and ours.shape[1] > 1:
                same += int((ours.argmax(1) == theirs.argmax(1)).sum())
                total += ours.shape[0]
            else:
                classify = False
            worst = max(worst, float((ours - theirs.reshape(ours.shape)).abs().max()))
    finally:
        model.train(was_training)
    return same / total if classify and total else worst
