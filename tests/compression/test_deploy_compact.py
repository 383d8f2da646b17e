"""The lossless size passes every exported ONNX file goes through (``deploy/compact.py``).

Each pass must leave what ORT computes unchanged (checked bit for bit on the same session options) and
must not take a parameter's name out of the file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto as TP, helper, numpy_helper  # noqa: E402

from aup.compression.torch.deploy.compact import (drop_default_attributes, drop_unused_opsets,  # noqa: E402
                                                  share_duplicate_initializers)
from aup.compression.torch.deploy.settings import export_onnx  # noqa: E402


class TinyEncoder(nn.Module):
    """Four 4-feature tokens through one encoder layer (attention, LayerNorms, MLP) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x)).mean(1))


def _run(model_or_path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_passes_keep_the_outputs_and_drop_defaults_domains_and_copies():
    """A graph with a default-valued attribute, an unused domain, two equal constants and two equal
    parameters: the attribute, the domain and one constant go; both parameters stay; outputs identical."""
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "/shape_a")
    shape_copy = numpy_helper.from_array(np.array([0, -1], np.int64), "/shape_b")
    w1 = numpy_helper.from_array(np.ones((6, 6), np.float32), "fc1.weight")
    w2 = numpy_helper.from_array(np.ones((6, 6), np.float32), "fc2.weight")
    nodes = [helper.make_node("Reshape", ["x", "/shape_a"], ["r"], allowzero=0),
             helper.make_node("MatMul", ["r", "fc1.weight"], ["m"]),
             helper.make_node("Reshape", ["m", "/shape_b"], ["r2"], allowzero=0),
             helper.make_node("MatMul", ["r2", "fc2.weight"], ["y"]),
             helper.make_node("Softmax", ["y"], ["z"], axis=1)]  # opset 17: default axis -1, so 1 stays
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, ["b", 2, 3])],
                              [helper.make_tensor_value_info("z", TP.FLOAT, ["b", 6])], [shape, shape_copy, w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft.nchwc", 1)])
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    before = _run(model, x)
    assert share_duplicate_initializers(model.graph, protected={"fc1.weight", "fc2.weight"}) == 1
    assert drop_default_attributes(model) == 2
    drop_unused_opsets(model)
    assert sorted(i.name for i in model.graph.initializer) == ["/shape_a", "fc1.weight", "fc2.weight"]
    assert [a.name for n in model.graph.node for a in n.attribute] == ["axis"]
    assert [o.domain for o in model.opset_import] == [""]
    assert np.array_equal(_run(model, x), before)


@pytest.mark.parametrize("bits", [8, 4])
def test_exported_files_carry_no_default_attributes_unused_domains_or_copies(tmp_path, bits):
    """What ORT's pre-processing used to leave in every int8 and 4-bit file (the digits transformer's
    all-4-bit file went from 0.601x to under 0.6x its all-int8 file without them)."""
    from aup.compression.torch.deploy.compact import _defaults

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    x = torch.randn(16, 4, 4)
    modules = ["embed", "layer.self_attn", "layer.self_attn.out_proj", "layer.linear1", "layer.linear2", "head"]
    options = {"int8_modules": modules, "calibration": [x]} if bits == 8 else {
        "int8_modules": [], "low_bits": {m: 4 for m in modules}}
    path = export_onnx(model, x[:1], tmp_path / "m.onnx", **options)
    saved = onnx.load(path)
    opsets = {o.domain: o.version for o in saved.opset_import}
    used = {n.domain for n in saved.graph.node} | {""}
    assert set(opsets) == used
    for node in saved.graph.node:
        defaults = _defaults(node.domain, node.op_type, opsets[node.domain])
        left = [a.name for a in node.attribute if a.name in defaults
                and helper.get_attribute_value(a) == defaults[a.name]]
        assert not left, (node.op_type, left)
    assert not any(a.name in ("allowzero", "accuracy_level") for n in saved.graph.node for a in n.attribute)
    parameters = set(model.state_dict())
    constants = [(i.data_type, tuple(i.dims), numpy_helper.to_array(i).tobytes())
                 for i in saved.graph.initializer if i.name not in parameters]
    assert len(constants) == len(set(constants))
    with torch.no_grad():
        expected = model(x).numpy()
    error = np.abs(_run(path, x.numpy()) - expected).max() / np.abs(expected).max()
    assert error < (0.05 if bits == 8 else 0.25)  # int8 activations / 4-bit RTN of untrained weights
