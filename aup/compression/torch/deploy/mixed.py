"""Per-layer precision in the deployed ONNX file: float, int8 QDQ, and fewer-than-8-bit weights.

:func:`.onnx_export.export_onnx` calls these around ORT's static quantization:

* before it, :func:`low_bit_linears` turns the ``Gemm``/``MatMul`` of every Linear (or attention
  projection) asked for at most 4 bits into ``MatMulNBits`` (:mod:`.ort_nbits`). A ``Linear`` exported
  with a 2-D input is a ``Gemm``, which ORT's own ``MatMulNBitsQuantizer`` skips (the weight would stay
  fp32 silently); here a ``Gemm`` becomes ``MatMulNBits`` + ``Add`` of the bias.
* after it, :func:`low_bit_convs` stores the weight of every convolution asked for at most 4 bits as
  UINT4 codes dequantized by ``Cast``/``Sub``/``Mul`` (on the weight ORT's pre-processing left,
  BatchNorm folded in; ORT folds the three at session start, so the convolution runs in float at fp32
  speed) and lifts the file to opset 21 (UINT4 needs it).

Each step records what it shipped per module in ``shipped`` (``{"asked", "shipped", "as"}``), from
which the trial's ``weight_bits`` and its precision note are computed (:func:`precision_note`).
Mapping of asks onto what ORT 1.32 runs on CPU (documented in docs/deploy.md):

==========  ==============================================  ================================
asked bits  Linear / MatMul / attention projection           Conv
==========  ==============================================  ================================
32          float (left out of quantization)                float
9-31        float (no integer type between 8 and 32 runs)   float
5-8         int8 QDQ (static, calibrated)                   int8 QDQ
3-4         MatMulNBits, 4-bit storage, the k-bit grid       UINT4 codes, float Conv
1-2         MatMulNBits, 2-bit storage, the k-bit grid       UINT4 codes holding the k-bit grid
==========  ==============================================  ================================
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from aup.compression.torch.deploy.nbits import MSFT_DOMAIN, WeightGrid, int4_weight_nodes, matmul_nbits_nodes, rtn_grid

__all__ = ["low_bit_linears", "low_bit_convs", "precision_note", "shipped_weight_bits", "Shipped"]

Shipped = dict  # {module: {"asked": int | None, "shipped": int, "as": str}}
_LINEAR_OPS = ("Gemm", "MatMul")


def _record(shipped: Shipped | None, module: str, asked: int | None, bits: int, how: str) -> None:
    if shipped is not None:
        shipped[module] = {"asked": asked, "shipped": bits, "as": how}


def _constant_weight(node: Any, inits: dict[str, Any], producers: dict[str, Any]
                     ) -> tuple[np.ndarray, list[Any]] | None:
    """``(weight [out, in], nodes/initializers it came through)`` of a MatMul/Gemm whose B is a constant
    (an initializer, possibly transposed once), or None (e.g. a slice of a packed weight)."""
    from onnx import numpy_helper

    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Gemm":
        if any(attrs[k].f != 1.0 for k in ("alpha", "beta") if k in attrs) or ("transA" in attrs and attrs["transA"].i):
            return None
        trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
    else:
        trans_b = False
    name = node.input[1]
    through: list[Any] = []
    if name in producers and producers[name].op_type == "Transpose":
        tnode = producers[name]
        perm = [a.ints for a in tnode.attribute if a.name == "perm"]
        if perm and list(perm[0]) != [1, 0]:
            return None
        through.append(tnode)
        name = tnode.input[0]
        trans_b = not trans_b
    if name not in inits:
        return None
    b = numpy_helper.to_array(inits[name])
    if b.ndim != 2:
        return None
    through.append(inits[name])
    return (b if trans_b else b.T), through  # torch layout [out, in]


def low_bit_linears(model: Any, nodes_of: Mapping[str, list[str]], low_bits: Mapping[str, int],
                    grids: Mapping[str, WeightGrid], shipped: Shipped | None) -> set[str]:
    """Rewrite the MatMul/Gemm nodes of ``low_bits`` modules (in place) as MatMulNBits; returns the
    modules that could not be rewritten (their weight is not one constant matrix)."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    failed: set[str] = set()
    for module, bits in sorted(low_bits.items()):
        names = set(nodes_of.get(module, []))
        targets = [n for n in graph.node if n.name in names and n.op_type in _LINEAR_OPS]
        if not targets:
            continue
        found = [(n, _constant_weight(n, inits, producers)) for n in targets]
        if any(weight is None for _n, weight in found):
            failed.add(module)
            continue
        stored = 0
        for index, (node, (weight, through)) in enumerate(found):  # type: ignore[misc]
            grid = grids.get(module)
            if grid is None or _numpy_rows(grid) != weight.shape[0]:
                grid = rtn_grid(weight, bits)
            bias = _vector_bias(node, inits, weight.shape[0])
            bias_add = _following_bias_add(graph, node, inits, weight.shape[0]) if node.op_type == "MatMul" else None
            if bias_add is not None:  # MatMul + Add(bias) -> one MatMulNBits with its bias input
                bias = next(i for i in bias_add.input if i != node.output[0])
                node.output[0] = bias_add.output[0]
                graph.node.remove(bias_add)
            prefix = module + (f"_{index}" if len(found) > 1 else "")
            output = node.output[0] if bias is not None or node.op_type == "MatMul" else f"{prefix}_nobias"
            new_nodes, new_inits, stored = matmul_nbits_nodes(prefix, node.input[0], output, weight, grid, bias)
            if node.op_type == "Gemm" and bias is None and len(node.input) > 2 and node.input[2]:
                new_nodes.append(_add(output, node.input[2], node.output[0], f"{prefix}_bias"))
            elif node.op_type == "Gemm" and bias is None:
                new_nodes[-1].output[0] = node.output[0]
            position = list(graph.node).index(node)
            graph.node.remove(node)
            for offset, new in enumerate(new_nodes):
                graph.node.insert(position + offset, new)
            graph.initializer.extend(new_inits)
            _drop_unused(graph, through)
            _declare_float(graph, node.output[0])
        _record(shipped, module, bits, stored, f"MatMulNBits {stored}-bit")
    uses_msft = any(n.domain == MSFT_DOMAIN for n in graph.node)
    if uses_msft and not any(o.domain == MSFT_DOMAIN for o in model.opset_import):
        from onnx import helper

        model.opset_import.append(helper.make_opsetid(MSFT_DOMAIN, 1))
    return failed


def _declare_float(graph: Any, name: str) -> None:
    """ONNX shape inference does not know MatMulNBits: declare its output float so that ORT's static
    quantization can still quantize the activations after it (an int8 layer fed by a 4-bit one)."""
    from onnx import TensorProto, helper

    if name not in {v.name for v in graph.value_info} | {o.name for o in graph.output}:
        graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))


def _following_bias_add(graph: Any, node: Any, inits: dict[str, Any], rows: int) -> Any | None:
    """The ``Add`` of a constant ``[out]`` vector that alone consumes ``node``'s output, or None."""
    out = node.output[0]
    consumers = [n for n in graph.node if out in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "Add" or out in {o.name for o in graph.output}:
        return None
    add = consumers[0]
    other = [i for i in add.input if i != out]
    if len(other) != 1 or other[0] not in inits or list(inits[other[0]].dims) != [rows]:
        return None
    return add


def _vector_bias(node: Any, inits: dict[str, Any], rows: int) -> str | None:
    """A Gemm's bias when it is a constant ``[out]`` vector (MatMulNBits' bias input), else None."""
    if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in inits:
        return None
    return node.input[2] if list(inits[node.input[2]].dims) == [rows] else None


def _numpy_rows(grid: WeightGrid) -> int:
    return int(np.asarray(grid.arrays()[0]).shape[0])


def _add(a: str, b: str, out: str, name: str) -> Any:
    from onnx import helper

    return helper.make_node("Add", [a, b], [out], name=name)


def _drop_unused(graph: Any, candidates: list[Any]) -> None:
    """Remove the Transpose nodes and weight initializers no other node reads any more."""
    for item in candidates:
        used = {i for node in graph.node for i in node.input}
        if hasattr(item, "op_type"):
            if item.output[0] not in used and item in graph.node:
                graph.node.remove(item)
        elif item.name not in used and item.name not in {o.name for o in graph.output}:
            graph.initializer.remove(item)


def low_bit_convs(model: Any, nodes_of: Mapping[str, list[str]], low_bits: Mapping[str, int],
                  grids: Mapping[str, WeightGrid], raw_weights: Mapping[str, np.ndarray],
                  shipped: Shipped | None) -> Any:
    """Store the weights of ``low_bits`` convolutions as UINT4 codes; returns the model
    (converted to opset 21 when anything was rewritten)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    rewritten = False
    for module, bits in sorted(low_bits.items()):
        names = set(nodes_of.get(module, []))
        convs = [n for n in graph.node if n.name in names and n.op_type == "Conv"]
        if not convs or any(n.input[1] not in inits for n in convs):
            continue
        exact = True
        for node in convs:
            init = inits.pop(node.input[1])
            weight = numpy_helper.to_array(init)
            new_nodes, new_inits, fits = int4_weight_nodes(f"{module}_w4", node.input[1], weight, bits,
                                                           grids.get(module), raw_weights.get(module))
            exact = exact and fits
            graph.initializer.remove(init)
            graph.initializer.extend(new_inits)
            position = list(graph.node).index(node)
            for offset, new in enumerate(new_nodes):
                graph.node.insert(position + offset, new)
        rewritten = True
        _record(shipped, module, bits, 4, "UINT4 conv weights" + ("" if exact else " (RTN per channel)"))
    return _opset21(model) if rewritten else model


def _opset21(model: Any) -> Any:
    """UINT4 tensors (and their Cast) need opset 21: convert (ONNX's version converter), or bump the import
    when the graph has no operator whose form changed between its opset and 21."""
    from onnx import version_converter

    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current >= 21:
        return model
    try:
        return version_converter.convert_version(model, 21)
    except Exception:  # noqa: BLE001 - the converter has no adapter for some contrib graphs
        changed = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Split", "Pad", "Resize", "ScatterND",
                   "ScatterElements", "GroupNormalization", "Col2Im"}
        blocking = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type in changed})
        if blocking:
            raise ValueError(f"int4 convolution weights need opset 21 and the graph's {blocking[0]} cannot be "
                             f"lifted from opset {current}")
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = 21
        return model


def shipped_weight_bits(named_parameters: Callable[[], Any], shipped: Mapping[str, Mapping[str, Any]]) -> float:
    """Parameter-weighted bits as shipped: a shipped module's weight at its stored width, every other
    parameter at its dtype's width (biases, norms, float layers)."""
    import torch

    total_bits = total = 0
    for key, param in named_parameters():
        module, _, attr = key.rpartition(".")
        width = torch.finfo(param.dtype).bits if param.is_floating_point() else torch.iinfo(param.dtype).bits
        entry = shipped.get(module.removeprefix("_aup_wrapped."))
        if entry is not None and attr in ("weight", "in_proj_weight"):
            width = int(entry["shipped"])
        total_bits += width * param.numel()
        total += param.numel()
    return total_bits / total if total else 0.0


def precision_note(shipped: Mapping[str, Mapping[str, Any]]) -> str | None:
    """One line naming the layers whose stored width differs from the asked bits (None when all match):
    a k-bit grid in wider storage, 5-7 bits as int8, 9-31 bits as float, or a fallback."""
    parts = []
    for module, entry in sorted(shipped.items()):
        asked, bits, how = entry.get("asked"), entry["shipped"], entry["as"]
        if asked is None or asked == bits:
            continue
        grid = f" holding the {asked}-bit grid" if asked < bits < 32 else ""
        parts.append(f"{module} asked {asked}-bit, shipped as {how}{grid}")
    if not parts:
        return None
    return "precision as shipped: " + "; ".join(parts)
