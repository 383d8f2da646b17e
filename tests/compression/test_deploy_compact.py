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
from aup.testing.models import TinyEncoder  # noqa: E402




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


def test_shape_arithmetic_of_an_attention_block_is_folded_and_batches_still_work(tmp_path):
    """The exporter's Shape -> Gather -> Concat -> Reshape chains of nn.MultiheadAttention become constants
    (a -1 where the batch goes); outputs at batch sizes the fold never saw (3, 7) still match torch."""
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    x = torch.randn(7, 4, 4)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Shape") <= 1 and ops.count("Gather") < 4, ops  # 8 Shape and 9 Gather unfolded
    with torch.no_grad():
        for batch in (3, 7):
            assert np.allclose(_run(path, x[:batch].numpy()), model(x[:batch]).numpy(), atol=1e-5)


def _batch_graph(target_from_batch: bool) -> onnx.ModelProto:
    """x (batch, 6) reshaped to [2 * batch, 3] or [2, 3, batch], the target computed from Shape(x), then summed."""
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              [("/zero", [0]), ("/one", [1]), ("/two", [2]), ("/three", [3])]]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "/zero"], ["b"], axis=0),
             helper.make_node("Mul", ["b", "/two"], ["b2"]),
             helper.make_node("Gather", ["s", "/one"], ["six"], axis=0),
             helper.make_node("Div", ["six", "/two"], ["three"]),
             helper.make_node("Concat", ["b2", "three"] if target_from_batch else ["/two", "three", "b"], ["shape"],
                              axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("ReduceSum", ["r", "/one"], ["y"], keepdims=0)]
    out_shape = ["n"] if target_from_batch else [2, "b"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, ["b", 6])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, out_shape)], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_folding_replaces_only_batch_free_values_and_checks_itself(monkeypatch):
    from aup.compression.torch.deploy import compact

    model = _batch_graph(target_from_batch=True)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    before = _run(model, x)
    assert compact.fold_shape_arithmetic(model) > 0
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Reshape", "ReduceSum"]
    target = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == model.graph.node[0].input[1])
    assert target.tolist() == [-1, 3]
    assert np.array_equal(_run(model, x), before)
    other = _batch_graph(target_from_batch=False)  # [2, 3, batch]: the batch goes last
    assert compact.fold_shape_arithmetic(other) > 0
    target = next(numpy_helper.to_array(i) for i in other.graph.initializer if i.name == other.graph.node[0].input[1])
    assert target.tolist() == [2, 3, -1]
    assert np.array_equal(_run(other, x), _run(_batch_graph(target_from_batch=False), x))
    untouched = _batch_graph(target_from_batch=True)  # when the rewritten graph disagrees, nothing changes
    monkeypatch.setattr(compact, "_same", lambda a, b: False)
    assert compact.fold_shape_arithmetic(untouched) == 0
    assert untouched == _batch_graph(target_from_batch=True)


def test_flatten_by_view_of_the_batch_size_is_folded_to_a_copied_dimension(tmp_path):
    """``x.view(x.size(0), -1)``: the target already holds its -1, so the batch position becomes 0 (copy
    the input's dimension) and the Shape -> Gather -> Concat chain goes."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.conv(x))
            return self.fc(y.view(y.size(0), -1))

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(7, 1, 8, 8)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx")
    graph = onnx.load(path).graph
    assert not [n.op_type for n in graph.node if n.op_type in ("Shape", "Gather", "Concat")]
    reshape = next(n for n in graph.node if n.op_type == "Reshape")
    target = next(numpy_helper.to_array(i) for i in graph.initializer if i.name == reshape.input[1])
    assert target.tolist() == [0, -1]
    with torch.no_grad():
        for batch in (3, 7):
            assert np.allclose(_run(path, x[:batch].numpy()), model(x[:batch]).numpy(), atol=1e-5)
