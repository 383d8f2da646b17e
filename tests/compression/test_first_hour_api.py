"""The Python API as the README shows it (issue 25): ``load_deployed`` takes what ONNX Runtime users pass
(NumPy), and ``create_compressor`` takes a list of stages as a pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

import aup  # noqa: E402
from aup.compression import load_deployed  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.pipeline import PipelineCompressor  # noqa: E402


pytestmark = pytest.mark.usefixtures("fresh_trial_state")  # each test is its own trial (conftest)


def _stage(kind: str, name: str, config_list: list) -> dict:
    return {"compression_framework": "torch", "compression_type": kind, "compressor": name, "config_list": config_list}


PRUNE = _stage("pruning", "l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
QUANT = _stage("quantization", "naive", [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}])


@pytest.fixture()
def deployed_path(tmp_path) -> str:
    torch.manual_seed(0)
    model = zoo.DigitsCNN().eval()
    pruner = aup.create_compressor(model, PRUNE, dummy_input=torch.randn(2, 1, 8, 8))
    pruner.compress()
    return pruner.export_model("model.onnx", folder_name=str(tmp_path), format="onnx")


def test_load_deployed_accepts_numpy_tensors_lists_and_dicts(deployed_path: str) -> None:
    """Item 1: ``loaded(x_numpy)`` works (float64 included) and returns NumPy; tensors in, tensors out."""
    loaded = load_deployed(deployed_path)
    x64 = np.random.default_rng(0).normal(size=(4, 1, 8, 8))  # float64: NumPy's default
    out = loaded(x64)
    assert isinstance(out, np.ndarray) and out.shape == (4, 10)
    reference = loaded(torch.from_numpy(x64.astype(np.float32)))
    assert isinstance(reference, torch.Tensor)
    np.testing.assert_allclose(out, reference.numpy(), atol=1e-6)
    for given in (x64.astype(np.float32), [x64], (x64,), {"input": x64}, x64.tolist()):
        np.testing.assert_allclose(np.asarray(loaded(given)), out, atol=1e-5)
    np.testing.assert_allclose(loaded(input=x64), out, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: m("not an array"), "input 'input': expected a NumPy array or a torch tensor"),
    (lambda m, x: m(x, x), "expected 1 input(s) (input), got 2"),
    (lambda m, x: m({"pixels": x}), "inputs by name must be exactly ['input']; missing ['input']; unknown ['pixels']"),
])
def test_load_deployed_errors_name_the_input_not_export(deployed_path: str, call, message: str) -> None:
    loaded = load_deployed(deployed_path)
    with pytest.raises(ValueError) as caught:
        call(loaded, np.zeros((1, 1, 8, 8), dtype=np.float32))
    assert message in str(caught.value) and "export" not in str(caught.value)


def test_a_list_of_stages_is_a_pipeline() -> None:
    """Item 4: ``create_compressor(model, [prune_stage, quant_stage])`` is the README's pipeline."""
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    compressor = aup.create_compressor(model, [PRUNE, QUANT], dummy_input=torch.randn(2, 1, 8, 8))
    assert isinstance(compressor, PipelineCompressor)
    assert [(s.compression_type, s.compressor) for s in compressor.specs] == [
        ("pruning", "l1_filter"), ("quantization", "naive")]
    compressor.compress()
    assert [type(s).__name__ for s in compressor.stages] == ["L1FilterPruner", "NaiveQuantizer"]
