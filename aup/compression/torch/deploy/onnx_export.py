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

from aup.compression.torch.deploy.compact import (drop_default_attributes, drop_unused_opsets, fold_shape_arithmetic,
                                                  share_duplicate_initializers)
from aup.compression.torch.deploy.nbits import WeightGrid
from aup.compression.torch.deploy.quantize import quantize_static_qdq, weight_only_int8
from aup.compression.torch.deploy.runtime import as_args, fitting_batches, onnx_input_names

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
        args = as_args(example_input)
        names, keyword = onnx_input_names(len(args)), None
    from aup.compression.torch.measure import call_model

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
                per_channel: bool = True, weight_only: bool = False, low_bits: Mapping[str, int] | None = None,
                grids: Mapping[str, WeightGrid] | None = None, shipped: dict[str, Any] | None = None) -> str:
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
            quantize = int8_modules is not None or bool(low_bits)
            raw = os.path.join(tmp, "raw.onnx") if quantize else path
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # constant folding off: weights keep their parameter names, which map nodes to modules;
                # ORT's pre-processing fuses BatchNorm into the convolutions afterwards.
                torch.onnx.export(exported, args, raw, dynamo=False, opset_version=OPSET, input_names=names,
                                  output_names=outputs, do_constant_folding=not quantize,
                                  dynamic_axes={**{n: {0: "batch"} for n in names + outputs}})
            if not quantize:
                _untie_folded_transposes(path)
            else:
                batches = [] if weight_only else fitting_batches(calibration, names, [a.shape[1:] for a in args],
                                                                 example_input)
                _mixed_precision(raw, path, set(int8_modules or ()), dict(low_bits or {}), dict(grids or {}),
                                 lambda src, modules: weight_only_int8(src, path, modules, per_channel)
                                 if weight_only else quantize_static_qdq(src, path, modules, batches, names,
                                                                      per_channel, tmp),
                                 shipped)
        _compact(path, protected=exported.state_dict().keys())
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
    return path


def _compact(path: str, protected: Iterable[str] = ()) -> None:
    """Drop what ONNX Runtime does not need from the file: node names and doc strings, stored shape
    annotations (``value_info``, re-inferred at load), and long intermediate tensor names (renamed
    ``t<i>``); shape arithmetic that does not depend on the batch size, attributes equal to their default,
    unused operator domains, and second copies of equal constants other than the ``protected``
    parameters (:mod:`.compact`). Graph inputs, outputs and
    initializers keep their names. On a small transformer the
    names and annotations were a third to a half of the file (the exporter's scope paths, ORT's
    pre-processing); the same rule applies to every exported file, dense ones included, so ratios
    between them stay fair. Graphs with subgraphs or external data are left as they are.
    """
    import onnx

    model = onnx.load(path)
    graph = model.graph
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.initializer) or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    renamed: dict[str, str] = {}
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        for index, name in enumerate(node.output):
            if name and name not in keep:
                renamed.setdefault(name, f"t{len(renamed)}")
                node.output[index] = renamed[name]
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    del graph.value_info[:]
    model.doc_string = graph.doc_string = ""
    fold_shape_arithmetic(model)
    share_duplicate_initializers(model.graph, protected)
    drop_default_attributes(model)
    drop_unused_opsets(model)
    onnx.save(model, path)


def _mixed_precision(raw: str, path: str, int8: set[str], low_bits: dict[str, int], grids: dict[str, WeightGrid],
                     quantize_int8: Any, shipped: dict[str, Any] | None) -> None:
    """Low-bit linears (before ORT's pre-processing), int8 QDQ by ``quantize_int8(src, modules)``, then
    low-bit convolutions (after it, on the BatchNorm-folded weights); see :mod:`.ort_mixed`."""
    import onnx
    from onnx import numpy_helper

    from aup.compression.torch.deploy.mixed import low_bit_convs, low_bit_linears
    from aup.compression.torch.deploy.quantize import module_nodes

    model = onnx.load(raw)
    nodes_of = module_nodes(model.graph)
    kinds = {n.name: n.op_type for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    convs = {m: b for m, b in low_bits.items() if any(kinds.get(n) == "Conv" for n in nodes_of.get(m, []))}
    linears = {m: b for m, b in low_bits.items() if m not in convs}
    conv_weights = {m: numpy_helper.to_array(inits[node.input[1]]) for m in convs for node in model.graph.node
                    if node.name in nodes_of.get(m, []) and node.input[1] in inits}
    failed = low_bit_linears(model, nodes_of, linears, grids, shipped)
    for module in sorted(failed):  # e.g. a projection reading a slice of a packed weight
        int8.add(module)
        if shipped is not None:
            shipped[module] = {"asked": low_bits[module], "shipped": 8, "as": "int8 QDQ (weight is not one matrix)"}
    onnx.save(model, raw)
    quantize_int8(raw, int8 - set(convs) - set(linears) | failed)
    if shipped is not None:
        for module in sorted((int8 - set(convs) - set(linears)) | failed):
            if nodes_of.get(module) and module not in shipped:
                shipped[module] = {"asked": None, "shipped": 8, "as": "int8 QDQ"}
    if convs:
        final = low_bit_convs(onnx.load(path), nodes_of, convs, grids, conv_weights, shipped)
        onnx.save(final, path)


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
