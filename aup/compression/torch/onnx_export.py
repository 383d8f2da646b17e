"""Export a torch model to ONNX (optionally int8), with tied weights stored once.

:func:`export_onnx` uses the legacy TorchScript exporter (``dynamo=False``: measured 0.07-0.12 s
per model here against 1.4-3 s for the dynamo exporter, single file, same outputs), then optionally
quantizes the conv/linear nodes of ``int8_modules`` (:mod:`.ort_quantize`) calibrated on batches the
model saw. Models called with keywords or returning dicts are wrapped so ONNX gets named inputs and
outputs.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .ort_quantize import _quantize_static, _weight_only_int8
from .ort_runtime import _as_args, fitting_batches, onnx_input_names

__all__ = ["export_onnx", "OPSET"]

OPSET = 17


class _NamedIO(nn.Module):
    """Positional tensors in, a tuple of tensors out, for models called with keywords or returning dicts.

    ONNX graphs have named inputs and outputs, not keyword calls or ``ModelOutput`` objects: this
    wrapper calls ``model(**dict(zip(input_names, args)))`` (or ``model(*args)``) and returns the
    tensors of a dict output in key order.  The wrapped model is the child ``_aup_wrapped``, a prefix
    :func:`.ort_quantize._module_nodes` strips so ONNX nodes still map to the user's module names.
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
                    batches = fitting_batches(calibration, names, [a.shape[1:] for a in args], example_input)
                    _quantize_static(raw, path, set(int8_modules), batches, names, per_channel, tmp)
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
