"""The deployable artifact: ONNX export, real int8 through ONNX Runtime, and measuring what ships.

Why ONNX Runtime static QDQ: a fake-quantized torch model runs in float and is slower than the dense
one, so timing it punishes quantization; ORT's *dynamic* int8 on convolutions is 6.5-26x slower than
fp32 on this class of CPU, while *static* QDQ (calibrated activation ranges, per-channel int8
weights) gives files of about 0.3x and batch-1 latency below torch eager (README, "Deployment").

* :func:`export_onnx` writes ``model`` as ONNX with the legacy TorchScript exporter (``dynamo=False``:
  measured 0.07-0.12 s per model here against 1.4-3 s for the dynamo exporter, single file, same
  outputs), then optionally quantizes the conv/linear nodes of ``int8_modules`` with
  ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel QInt8 weights, QUInt8 activations)
  calibrated on batches the model saw.
* :func:`load_deployed` returns an ORT session wrapped as a callable (torch tensors in and out).
* :func:`ort_latency_ms` and :func:`agreement` measure the artifact for the trial's metrics.
* :class:`CalibrationRecorder` is the forward pre-hook a compressor keeps on its model: the first
  sample (the example input when the user gave none) and a bounded reservoir of real batches.

onnxruntime writes ``$XDG_CACHE_HOME/Microsoft/...`` when it is imported; :func:`import_ort` points
that at aup's own folder (``.aup/cache`` under the working directory when it exists, else a temp
dir) for the import only.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import os
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

__all__ = ["DeploySettings", "CalibrationRecorder", "DeployedModel", "ort_available", "import_ort", "export_onnx",
           "load_deployed", "ort_latency_ms", "agreement", "onnx_input_names"]

FORMATS = ("onnx",)
INT8_MODES = ("static", "none")
OPSET = 17
_QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DeploySettings:
    """What the experiment's ``compression.deploy`` asks for: a format and an int8 mode."""

    format: str = "onnx"
    int8: str = "static"  # "static": QDQ int8 of the quantized (or, without a quantizer, all) conv/linear layers
    per_channel: bool = True

    @classmethod
    def parse(cls, value: Any, where: str = "deploy") -> "DeploySettings | None":
        """``True``/``{}`` -> defaults, ``False``/``None`` -> no deployment, a dict -> checked settings."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object such as {{\"format\": \"onnx\", \"int8\": \"static\"}}, "
                             f"got {value!r}")
        unknown = sorted(set(value) - {"format", "int8", "per_channel"})
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown key (known: format, int8, per_channel)")
        fmt = value.get("format", "onnx")
        if fmt not in FORMATS:
            raise ValueError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        int8 = value.get("int8", "static")
        int8 = "none" if int8 in (None, False) else int8
        if int8 not in INT8_MODES:
            raise ValueError(f"{where}.int8: expected \"static\" or \"none\" (dynamic int8 is slower than fp32 on "
                             f"convolutions), got {int8!r}")
        per_channel = value.get("per_channel", True)
        if not isinstance(per_channel, bool):
            raise ValueError(f"{where}.per_channel: expected true or false, got {per_channel!r}")
        return cls(fmt, int8, per_channel)

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "int8": self.int8, "per_channel": self.per_channel}


# ----------------------------------------------------------------------------- onnxruntime import


def ort_available() -> bool:
    """Whether the ``deploy`` extra (onnx + onnxruntime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def _cache_home() -> str:
    local = os.path.join(os.getcwd(), ".aup")
    base = os.path.join(local, "cache") if os.path.isdir(local) else os.path.join(tempfile.gettempdir(), "aup-cache")
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


# ----------------------------------------------------------------------------- calibration data


class CalibrationRecorder:
    """Forward pre-hook on the root model keeping what it saw, with bounded memory.

    ``first``: one sample (batch 1) of the first input, the example input for measuring.
    ``batches``: a reservoir of up to ``max_batches`` inputs (each cut to ``max_rows`` samples and
    all together at most ``max_bytes``), uniformly sampled over every forward pass, so calibration
    sees late (fine-tuned) batches as well as early ones. Only positional tensor inputs are kept.
    Copies of the model (``deepcopy``, pickling) carry an inert recorder.
    """

    def __init__(self, model: nn.Module, max_batches: int = 16, max_rows: int = 32,
                 max_bytes: int = 8 * 2**20) -> None:
        self.first: Any = None
        self.batches: list[tuple[torch.Tensor, ...]] = []
        self.seen = 0
        self.paused = 0
        self.max_batches, self.max_rows, self.max_bytes = max_batches, max_rows, max_bytes
        self._rng = random.Random(0)
        self.handle: Any = model.register_forward_pre_hook(self)

    @classmethod
    def attach(cls, model: nn.Module) -> "CalibrationRecorder":
        """The recorder already watching ``model`` (another compressor's, e.g. a pipeline's or a
        search pruner's outer one), else a new one: one hook and one reservoir per model."""
        for hook in model._forward_pre_hooks.values():
            if isinstance(hook, cls) and hook.handle is not None:
                return hook
        return cls(model)

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if self.paused or not inputs or not all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in inputs):
            return
        if any(x.is_meta for x in inputs):  # a shape-only trace (dependency graph): no data to keep
            return
        if self.first is None:
            first = tuple(x[:1].detach().cpu().clone() for x in inputs)
            self.first = first[0] if len(first) == 1 else first
        self.seen += 1
        slot = len(self.batches) if len(self.batches) < self.max_batches else self._rng.randrange(self.seen)
        if slot >= self.max_batches:
            return
        batch = tuple(x[:self.max_rows].detach().cpu().clone() for x in inputs)
        size = sum(x.numel() * x.element_size() for x in batch)
        if size * min(self.max_batches, len(self.batches) + 1) > self.max_bytes:
            return
        if slot < len(self.batches):
            self.batches[slot] = batch
        else:
            self.batches.append(batch)

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Forward passes inside (aup's own measurements) are not recorded."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {"first": None, "batches": [], "seen": 0, "paused": 1, "max_batches": 0, "max_rows": 0,
                "max_bytes": 0, "_rng": None, "handle": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> "CalibrationRecorder":
        clone = CalibrationRecorder.__new__(CalibrationRecorder)
        clone.__dict__.update(self.__getstate__())
        return clone


# ----------------------------------------------------------------------------- export


def clean_copy(model: nn.Module) -> nn.Module:
    """A deep copy without aup's mask and recording pre-hooks (so it can be shrunk and traced)."""
    from .masking import _ForwardMask

    clone = copy.deepcopy(model)
    for module in clone.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, (_ForwardMask, CalibrationRecorder)):
                del module._forward_pre_hooks[key]
    return clone



def _as_args(example: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, (tuple, list)) and example and all(isinstance(x, torch.Tensor) for x in example):
        return tuple(example)
    raise ValueError("ONNX export needs the example input as a tensor or a tuple of tensors, "
                     f"got {type(example).__name__}")


class _NamedIO(nn.Module):
    """Positional tensors in, a tuple of tensors out, for models called with keywords or returning dicts.

    ONNX graphs have named inputs and outputs, not keyword calls or ``ModelOutput`` objects: this
    wrapper calls ``model(**dict(zip(input_names, args)))`` (or ``model(*args)``) and returns the
    tensors of a dict output in key order.  The wrapped model is the child ``_aup_wrapped``, a prefix
    :func:`_module_nodes` strips so ONNX nodes still map to the user's module names.
    """

    def __init__(self, model: nn.Module, input_names: list[str] | None, output_names: list[str] | None) -> None:
        super().__init__()
        self._aup_wrapped = model
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, *args: torch.Tensor) -> Any:
        if self.input_names is None:
            out = self._aup_wrapped(*args)
        else:
            out = self._aup_wrapped(**dict(zip(self.input_names, args)))
        if self.output_names is None:
            return out
        return tuple(out[name] for name in self.output_names)


def _io(model: nn.Module, example_input: Any) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str]]:
    """(module to export, positional args, input names, output names) for tensor, tuple or dict inputs."""
    if isinstance(example_input, Mapping):
        names = [str(k) for k in example_input]
        args = tuple(example_input[k] for k in example_input)
        keyword: list[str] | None = names
    else:
        args = _as_args(example_input)
        names, keyword = onnx_input_names(len(args)), None
    from .measure import call_model

    with torch.no_grad():
        out = call_model(model, example_input)
    if isinstance(out, Mapping):
        outputs = [str(k) for k, v in out.items() if isinstance(v, torch.Tensor)]
        return _NamedIO(model, keyword, outputs), args, names, outputs
    if keyword is not None:
        return _NamedIO(model, keyword, None), args, names, ["output"]
    return model, args, names, ["output"]


def export_onnx(model: nn.Module, example_input: Any, path: str | os.PathLike, *,
                int8_modules: Iterable[str] | None = None, calibration: Sequence[Any] = (),
                per_channel: bool = True, weight_only: bool = False) -> str:
    """Write ``model`` (eval mode) as ONNX at ``path``; with ``int8_modules``, as static QDQ int8.

    ``int8_modules`` names the conv/linear modules whose nodes become int8 (an empty list quantizes
    nothing); ``calibration`` holds input batches (tensors, tuples of tensors or dicts of keyword
    inputs) for the activation ranges, the example input alone when empty. ``weight_only`` stores
    the weights as int8 (symmetric, ``DequantizeLinear`` in the graph) and keeps activations in
    float: for binarized networks, where an int8 input moves values across the sign threshold of
    the next layer. The batch dimension stays dynamic. A dict example input (``input_ids``,
    ``attention_mask``) gives ONNX inputs of those names; a dict / ``ModelOutput`` result gives
    outputs named by its keys. PyTorch's fused transformer fast path is off while exporting (its
    kernel has no ONNX form).
    """
    path = os.fspath(path)
    was_training = model.training
    model.eval()
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        exported, args, names, outputs = _io(model, example_input)
        with tempfile.TemporaryDirectory(prefix="aup-onnx-") as tmp:
            raw = os.path.join(tmp, "raw.onnx") if int8_modules is not None else path
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # constant folding off: weights keep their parameter names, which map nodes to modules;
                # ORT's pre-processing fuses BatchNorm into the convolutions afterwards.
                torch.onnx.export(exported, args, raw, dynamo=False, opset_version=OPSET, input_names=names,
                                  output_names=outputs, do_constant_folding=int8_modules is None,
                                  dynamic_axes={**{n: {0: "batch"} for n in names + outputs}})
            if int8_modules is None:
                _untie_folded_transposes(path)
            else:
                if weight_only:
                    _weight_only_int8(raw, path, set(int8_modules), per_channel)
                else:
                    _quantize_static(raw, path, set(int8_modules), calibration or [example_input], names,
                                     per_channel, tmp)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
    return path


def _untie_folded_transposes(path: str) -> None:
    """Store a weight used transposed elsewhere once (GPT-2's LM head is its token embedding).

    Constant folding writes ``Transpose(weight)`` as a second initializer, which for a tied vocabulary
    matrix is the largest tensor of the file again; such a copy becomes a Transpose node of the
    parameter. Models with external data (over 2 GB) are left as exported.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.initializer):
        return
    named: dict[tuple[int, ...], list[Any]] = {}
    for init in graph.initializer:
        if len(init.dims) == 2 and not init.name.startswith("onnx::"):
            named.setdefault((init.dims[1], init.dims[0], init.data_type), []).append(init)
    replaced = []
    for init in list(graph.initializer):
        if not init.name.startswith("onnx::") or len(init.dims) != 2:
            continue
        folded = numpy_helper.to_array(init)
        for source in named.get((init.dims[0], init.dims[1], init.data_type), []):
            if np.array_equal(folded, numpy_helper.to_array(source).T):
                graph.initializer.remove(init)
                replaced.append(helper.make_node("Transpose", [source.name], [init.name], perm=[1, 0],
                                                 name=f"aup_untie_{init.name}"))
                break
    if replaced:
        for node in reversed(replaced):
            graph.node.insert(0, node)
        onnx.save(model, path)


def _feed(batch: Any, names: list[str]) -> dict[str, Any]:
    """ONNX feeds of one batch: by name for dicts, else positionally; integer inputs keep their dtype."""
    values = [batch[n] for n in names] if isinstance(batch, Mapping) else list(_as_args(batch))
    return {n: _array(v) for n, v in zip(names, values)}


def _array(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return x


def onnx_input_names(count: int) -> list[str]:
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _module_nodes(graph: Any) -> dict[str, str]:
    """``{module name: ONNX node name}`` for conv/linear nodes, found through their weight's name."""
    producers = {out: node for node in graph.node for out in node.output}
    found: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in _QUANTIZED_OPS or len(node.input) < 2:
            continue
        name = node.input[1]
        while name in producers and producers[name].op_type in ("Transpose", "Identity"):
            name = producers[name].input[0]
        if name.endswith(".weight"):
            found[name[: -len(".weight")].removeprefix("_aup_wrapped.")] = node.name
    return found


def _quantize_static(raw: str, path: str, modules: set[str], calibration: Sequence[Any], names: list[str],
                     per_channel: bool, tmp: str) -> None:
    import onnx

    import_ort()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    nodes = _module_nodes(onnx.load(raw).graph)
    selected = [nodes[m] for m in sorted(modules) if m in nodes]
    prepared = os.path.join(tmp, "prepared.onnx")
    quant_pre_process(raw, prepared, skip_symbolic_shape=True)
    if not selected:  # nothing to quantize: the optimised fp32 graph is the artifact
        os.replace(prepared, path)
        return

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([_feed(b, names) for b in calibration])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(prepared, path, _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        nodes_to_quantize=selected, op_types_to_quantize=list(_QUANTIZED_OPS))


def _weight_only_int8(raw: str, path: str, modules: set[str], per_channel: bool) -> None:
    """Replace the weights of ``modules``' Conv/Gemm nodes by int8 codes + ``DequantizeLinear``."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(raw)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    wanted = {node for module, node in _module_nodes(graph).items() if module in modules}
    dequantizers = []
    for node in graph.node:
        if node.name not in wanted or node.op_type not in ("Conv", "Gemm") or node.input[1] not in initializers:
            continue
        name = node.input[1]
        weight = numpy_helper.to_array(initializers[name]).astype(np.float32)
        peak = np.abs(weight).reshape(weight.shape[0], -1).max(1) if per_channel else np.abs(weight).max(keepdims=True)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.round(weight / scale.reshape(-1, *[1] * (weight.ndim - 1))), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers.pop(name))
        graph.initializer.extend([numpy_helper.from_array(codes, f"{name}_int8"),
                                  numpy_helper.from_array(scale if per_channel else scale.reshape(()), f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros(scale.shape if per_channel else (), np.int8),
                                                          f"{name}_zero_point")])
        dequantizers.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                                             [name], name=f"{name}_DequantizeLinear", axis=0))
    for index, node in enumerate(dequantizers):
        graph.node.insert(index, node)
    onnx.save(model, path)


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
        self.output_names = [o.name for o in self.session.get_outputs()]

    def feeds(self, *inputs: Any, **named: Any) -> dict[str, Any]:
        if named:
            missing = [n for n in self.input_names if n not in named]
            if inputs or missing:
                raise ValueError(f"{self.path}: expected keyword inputs {self.input_names}, missing {missing}")
            return _feed(named, self.input_names)
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.path}: expected {len(self.input_names)} input(s), got {len(inputs)}")
        return _feed(tuple(inputs), self.input_names)

    def __call__(self, *inputs: Any, **named: Any) -> Any:
        """Positional or keyword inputs; a model exported from a dict output returns a dict."""
        outputs = self.session.run(None, self.feeds(*inputs, **named))
        first = inputs[0] if inputs else next(iter(named.values()), None)
        if isinstance(first, torch.Tensor):
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
        feeds = deployed.feeds(*(x[:1] for x in _as_args(example_input)))
    run = deployed.session.run
    for _ in range(warmup):
        run(None, feeds)
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        run(None, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _first_output(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    for value in out:
        if isinstance(value, torch.Tensor):
            return value
    raise ValueError("the model returned no tensor")


@torch.no_grad()
def agreement(deployed: DeployedModel, model: nn.Module, batches: Sequence[Any]) -> float:
    """Deployed vs in-memory model on ``batches``: top-1 agreement for class scores ``[N, C>1]``,
    else the maximum absolute difference (regression outputs)."""
    from .measure import call_model

    was_training = model.training
    model.eval()
    same = total = 0
    worst = 0.0
    classify = True
    try:
        for batch in batches:
            if isinstance(batch, Mapping):
                ours = _first_output(call_model(model, batch)).float()
                theirs = _first_output(deployed(**batch)).float()
            else:
                args = _as_args(batch)
                ours = _first_output(call_model(model, args if len(args) > 1 else args[0])).float()
                theirs = _first_output(deployed(*args)).float()
            if ours.dim() == 2 and ours.shape[1] > 1:
                same += int((ours.argmax(1) == theirs.argmax(1)).sum())
                total += ours.shape[0]
            else:
                classify = False
            worst = max(worst, float((ours - theirs.reshape(ours.shape)).abs().max()))
    finally:
        model.train(was_training)
    return same / total if classify and total else worst
