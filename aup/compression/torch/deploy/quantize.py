"""int8 ONNX files: static QDQ through onnxruntime, or int8 weights only.

Why ONNX Runtime static QDQ: a fake-quantized torch model runs in float and is slower than the dense
one, so timing it punishes quantization; ORT's *dynamic* int8 on convolutions is 6.5-26x slower than
fp32 on this class of CPU, while *static* QDQ (calibrated activation ranges, per-channel int8
weights) gives files of about 0.3x and batch-1 latency below torch eager (README, "Deployment").
Conv/linear nodes are found through their weight's parameter name, so the selection is by module.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

from aup.compression.torch.deploy.runtime import onnx_feed, import_ort

_QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


# ops between a weight parameter and the node using it: the exporter transposes a linear weight,
# and splits attention's packed query/key/value weight (``in_proj_weight``) into three
_WEIGHT_PASSTHROUGH = ("Transpose", "Identity", "Split", "Slice", "Squeeze")
_WEIGHT_SUFFIXES = (".weight", ".in_proj_weight")


def module_nodes(graph: Any) -> dict[str, list[str]]:
    """``{module name: [ONNX node names]}`` for conv/linear/matmul nodes, found through their weight's
    parameter name (a ``MultiheadAttention`` maps to its query/key/value projection nodes)."""
    producers = {out: node for node in graph.node for out in node.output}
    found: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in _QUANTIZED_OPS or len(node.input) < 2:
            continue
        name = node.input[1]
        while name in producers and producers[name].op_type in _WEIGHT_PASSTHROUGH:
            name = producers[name].input[0]
        suffix = next((s for s in _WEIGHT_SUFFIXES if name.endswith(s)), None)
        if suffix is not None:
            found.setdefault(name[: -len(suffix)].removeprefix("_aup_wrapped."), []).append(node.name)
    return found


def quantize_static_qdq(raw: str, path: str, modules: set[str], calibration: Sequence[Any], names: list[str],
                     per_channel: bool, tmp: str) -> None:
    import onnx

    import_ort()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    nodes = module_nodes(onnx.load(raw).graph)
    selected = [node for m in sorted(modules) for node in nodes.get(m, [])]
    prepared = os.path.join(tmp, "prepared.onnx")
    quant_pre_process(raw, prepared, skip_symbolic_shape=True)
    if not selected:  # nothing to quantize: the optimised fp32 graph is the artifact
        os.replace(prepared, path)
        return

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([onnx_feed(b, names) for b in calibration])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(prepared, path, _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        nodes_to_quantize=selected, op_types_to_quantize=list(_QUANTIZED_OPS))


def weight_only_int8(raw: str, path: str, modules: set[str], per_channel: bool) -> None:
    """Replace the weights of ``modules``' Conv/Gemm nodes by int8 codes + ``DequantizeLinear``."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(raw)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    wanted = {node for module, found in module_nodes(graph).items() if module in modules for node in found}
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
