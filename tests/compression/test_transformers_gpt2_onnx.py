"""GPT-2 (LM head tied to the token embedding) through the ONNX deployable artifact and back."""
from __future__ import annotations

import pytest
import torch

from aup.compression import load_deployed
from aup.compression.torch.artifact.files import call_model, output_tensors
from aup.compression.torch.pruners.heads import TransformerPruner
from aup.compression.torch.pruners.magnitude import LevelPruner


def _gpt2():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, as GPT-2 ships
    return model


def _ids() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    return {"input_ids": torch.randint(0, 100, (2, 10), generator=g), "attention_mask": mask}


def _logits(model, x) -> torch.Tensor:
    with torch.no_grad():
        return output_tensors(call_model(model, x))[0].clone()


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda m: TransformerPruner(m, [{"head_sparsity": 0.5, "mlp_sparsity": 0.5, "op_types": ["default"]}]),
    lambda m: LevelPruner(m, [{"sparsity": 0.5, "op_types": ["default"]}]),
], ids=["heads", "level"])
def test_gpt2_with_tied_lm_head_onnx_round_trip_agrees(tmp_path, make):
    pytest.importorskip("onnxruntime")
    model, x = _gpt2(), _ids()
    pruner = make(model)
    pruner.compress()
    path = pruner.export_model("gpt2.onnx", folder_name=str(tmp_path), dummy_input=x, format="onnx")
    deployed = load_deployed(path)
    assert deployed.input_names == ["input_ids", "attention_mask"]
    out = deployed(**x)
    logits = out["logits"] if isinstance(out, dict) else out
    expected = _logits(model, x)
    assert logits.shape == expected.shape
    keep = x["attention_mask"].bool()  # padded positions' logits are not defined by the model's contract
    assert torch.allclose(logits[keep], expected[keep], atol=1e-4)
    assert model.lm_head.weight is model.transformer.wte.weight  # export left the tie alone
    onnx = pytest.importorskip("onnx")
    stored = [tuple(sorted(init.dims)) for init in onnx.load(path).graph.initializer]
    assert stored.count((32, 100)) == 1  # the tied vocabulary matrix is stored once, not again transposed
