"""Transformers end to end: quantizers take effect, heads and MLP channels shrink exactly, artifacts and MACs.

Models are built in code from small configs with random weights (nothing downloads): a
``nn.TransformerEncoder`` classifier and Hugging Face BERT, GPT-2, ViT and Llama (grouped-query).
"""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aup.compression import create_compressor
from aup.compression.torch.artifact.files import call_model, load_compressed, output_tensors, save_artifact
from aup.compression.torch.measure import measure_model
from aup.compression.torch.pruners.transformer import HeadPrunedMultiheadAttention, TransformerPruner
from aup.compression.torch.pruners.magnitude import LevelPruner
from aup.compression.torch.quantization.bnn import BNNQuantizer
from aup.compression.torch.quantization.dorefa import DoReFaQuantizer
from aup.compression.torch.quantization.naive import NaiveQuantizer
from aup.compression.torch.quantization.qat import QATQuantizer

# Hugging Face tests are marked slow: importing transformers alone costs seconds (the fast suite's budget).
hf = pytest.mark.slow


def _hf():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


class EncoderClassifier(nn.Module):
    """Tokens of 8 features -> 2-layer TransformerEncoder (4 heads) -> mean pool -> 10 classes."""

    def __init__(self, d: int = 32, heads: int = 4, ff: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x), src_key_padding_mask=mask).mean(1))


def _encoder() -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier().eval()


def _tokens(batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 8, 8, generator=torch.Generator().manual_seed(1))


def _eval(model: nn.Module, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.clone() for t in output_tensors(call_model(model, x))]


def _bert():
    transformers = _hf()
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    return transformers.BertForSequenceClassification(config).eval()


def _gpt2():
    transformers = _hf()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def _vit():
    transformers = _hf()
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=16, patch_size=4, num_labels=3)
    return transformers.ViTForImageClassification(config).eval()


def _llama():
    transformers = _hf()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=8,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(config).eval()


def _ids(length: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length - 3:] = 0
    return {"input_ids": torch.randint(0, 100, (2, length), generator=g), "attention_mask": mask}


HF_MODELS = {"bert": (_bert, _ids), "gpt2": (_gpt2, _ids), "llama": (_llama, _ids),
             "vit": (_vit, lambda: torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)))}


# ----------------------------------------------------------------------------- quantizers


QUANTIZERS = [
    (NaiveQuantizer, {"quant_types": ["weight"], "quant_bits": 8}),
    (QATQuantizer, {"quant_types": ["weight"], "quant_bits": 4}),
    (DoReFaQuantizer, {"quant_types": ["weight"], "quant_bits": 2}),
    (BNNQuantizer, {"quant_types": ["weight"], "quant_bits": 1}),
]


def _eval_quantized(cls: type) -> dict:
    """QAT evaluates an untrained model with float weights (NNI 2.0); these tests look at quantized eval."""
    return {"quantize_eval_before_training": True} if cls is QATQuantizer else {}


def _eval_unfused(model: nn.Module, x) -> torch.Tensor:
    """The output without PyTorch's fused fast path (its rounding differs slightly from the plain path)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _eval(model, x)[0]
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@pytest.mark.parametrize("cls,entry", QUANTIZERS, ids=[c.__name__ for c, _ in QUANTIZERS])
@pytest.mark.parametrize("layer", ["encoder.layers.0.linear1", "encoder.layers.0.self_attn.out_proj"])
def test_each_quantizer_changes_the_eval_output_of_a_transformer_encoder(cls, entry, layer, caplog):
    """eval() + no_grad takes PyTorch's fused fast path, which never calls linear1 or out_proj."""
    model, x = _encoder(), _tokens()
    dense, fused = _eval_unfused(model, x), _eval(model, x)[0]
    quantizer = cls(model, [{**entry, "op_names": [layer]}], **_eval_quantized(cls))
    with caplog.at_level(logging.INFO):
        quantizer.compress()
    assert "fast path is off in 'encoder'" in caplog.text
    quantized = _eval(model, x)[0]
    assert (quantized - dense).abs().max() > 1e-4  # far beyond the fused/plain rounding difference
    quantizer.remove()
    assert torch.equal(_eval(model, x)[0], fused)  # fast path and plain forward are back


@hf
@pytest.mark.parametrize("cls,entry", QUANTIZERS, ids=[c.__name__ for c, _ in QUANTIZERS])
@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_each_quantizer_changes_hugging_face_outputs(cls, entry, name):
    build, inputs = HF_MODELS[name]
    model, x = build(), inputs()
    dense = _eval(model, x)[0]
    op_types = ["Conv1D"] if name == "gpt2" else ["Linear"]
    cls(model, [{**entry, "op_types": op_types}], **_eval_quantized(cls)).compress()
    assert (_eval(model, x)[0] - dense).abs().max() > 1e-4


@pytest.mark.parametrize("cls,entry", QUANTIZERS, ids=[c.__name__ for c, _ in QUANTIZERS])
def test_packed_attention_projections_are_quantized_too(cls, entry, tmp_path):
    """MultiheadAttention's in_proj_weight (query/key/value in one tensor) is its weight to quantizers."""
    model, x = _encoder(), _tokens()
    dense = _eval_unfused(model, x)
    quantizer = cls(model, [{**entry, "op_types": ["MultiheadAttention"]}], **_eval_quantized(cls))
    assert {layer.param for layer in quantizer.layers} == {"in_proj_weight"}
    quantizer.compress()
    quantized = _eval(model, x)[0]
    assert (quantized - dense).abs().max() > 1e-4
    path = quantizer.export_model("q.aup", folder_name=str(tmp_path), dummy_input=x)
    assert torch.allclose(_eval(load_compressed(path), x)[0], quantized, atol=1e-5)


def test_attention_output_projection_counts_as_linear():
    model = _encoder()
    quantizer = NaiveQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Linear"]}])
    names = {layer.name for layer in quantizer.layers}
    assert "encoder.layers.0.self_attn.out_proj" in names and "encoder.layers.1.self_attn.out_proj" in names
    pruner = LevelPruner(model, [{"sparsity": 0.5, "op_types": ["Linear"]}])
    assert "encoder.layers.1.self_attn.out_proj" in pruner.layers


def test_layers_a_compressor_cannot_handle_are_named():
    model = _encoder()
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.self_attn\.out_proj.*reads its weight"):
        QATQuantizer(model, [{"quant_types": ["output"], "quant_bits": 8,
                              "op_names": ["encoder.layers.0.self_attn.out_proj"]}]).compress()
    with pytest.raises(ValueError, match=r"'encoder\.layers\.0\.dropout1' \(Dropout\).*no weight"):
        NaiveQuantizer(model, [{"quant_types": ["weight"], "op_names": ["encoder.layers.0.dropout1"]}])
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="no attention module or MLP"):
        TransformerPruner(cnn, [{"head_sparsity": 0.5}])


# ----------------------------------------------------------------------------- heads and MLP channels


def _prune_and_shrink(model, x, **kwargs):
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.5}], **kwargs)
    pruner.compress()
    masked = _eval(model, x)
    before = sum(p.numel() for p in model.parameters())
    pruner.apply_speedup(x)
    return pruner, masked, before


def test_head_pruning_shrinks_a_torch_transformer_encoder_exactly():
    model, x = _encoder(), _tokens()
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[0, 5:] = True
    pruner, masked, before = _prune_and_shrink(model, (x, mask))
    attn = model.encoder.layers[0].self_attn
    assert isinstance(attn, HeadPrunedMultiheadAttention) and attn.num_heads == 2
    assert model.encoder.layers[0].linear1.out_features == 32 and model.encoder.layers[0].linear2.in_features == 32
    assert sum(p.numel() for p in model.parameters()) < 0.6 * before
    assert torch.allclose(_eval(model, (x, mask))[0], masked[0], atol=1e-5)
    assert torch.allclose(_eval(model, x)[0], _eval(model, x)[0])  # still runs without a mask
    model.train()
    model(x).sum().backward()  # trainable after the shrink


@hf
@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_head_and_mlp_pruning_shrinks_hugging_face_models_exactly(name):
    build, inputs = HF_MODELS[name]
    model, x = build(), inputs()
    pruner, masked, before = _prune_and_shrink(model, x)
    after = sum(p.numel() for p in model.parameters())
    got = _eval(model, x)
    assert after < 0.8 * before
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, masked))
    heads = {"bert": 2, "gpt2": 2, "vit": 2, "llama": 4}[name]
    assert model.config.num_attention_heads == heads
    assert all(v >= 1 for v in pruner.shrink_report["removed"].values())
    other = inputs() if name == "vit" else _ids(7)  # HF's own forward with another sequence length
    assert output_tensors(call_model(model, other))[0].shape[0] == 2


@hf
def test_grouped_query_attention_keeps_every_key_value_head():
    model, x = _llama(), _ids()
    _prune_and_shrink(model, x)
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features == 2 * attn.head_dim and attn.v_proj.out_features == 2 * attn.head_dim
    assert attn.q_proj.out_features == 4 * attn.head_dim and attn.num_key_value_groups == 2


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_weight_criteria_remove_the_weakest_heads(criterion):
    model = _encoder()
    attn = model.encoder.layers[0].self_attn
    with torch.no_grad():
        for head in (1, 3):  # two clearly weak heads
            for part in range(3):
                attn.in_proj_weight[part * 32 + head * 8:part * 32 + (head + 1) * 8] *= 0.01
            attn.out_proj.weight[:, head * 8:(head + 1) * 8] *= 0.01
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "op_names": ["encoder.layers.0.self_attn"]}],
                               criterion=criterion)
    pruner.compress()
    assert pruner.removed["encoder.layers.0.self_attn#heads"] == [1, 3]


def test_taylor_criterion_uses_training_gradients():
    model, x = _encoder(), _tokens(16)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.25}], criterion="taylor",
                               optimizer=optimizer, statistics_batch_num=2)
    pruner.compress()
    assert not pruner.masks_calculated
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(4))
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert pruner.masks_calculated and pruner.batches == 2
    assert len(pruner.removed["encoder.layers.1.self_attn#heads"]) == 2
    pruner.apply_speedup(x)
    assert model.encoder.layers[1].self_attn.num_heads == 2


def test_head_and_mlp_sparsity_are_separate_searchable_keys():
    from aup.compression.schemas import check_value, validate_config_list

    validate_config_list("torch", "pruning", "transformer",
                         [{"head_sparsity": 0.25, "mlp_sparsity": 0.5, "op_types": ["default"]}])
    assert check_value("transformer", "head_sparsity", 0.0) is None
    assert check_value("transformer", "mlp_sparsity", 1.0) is not None
    with pytest.raises(ValueError, match="head_sparsity"):
        validate_config_list("torch", "pruning", "transformer", [{"head_sparsity": 1.2, "op_types": ["default"]}])
    model = _encoder()
    pruner = TransformerPruner(model, [{"mlp_sparsity": 0.5, "op_types": ["default"]}])
    assert {type(b).__name__ for b, _ in pruner.blocks} == {"MlpBlock"} and len(pruner.blocks) == 2


def test_created_by_name_with_a_criterion():
    model = _encoder()
    config = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "transformer",
              "config_list": [{"head_sparsity": 0.5, "op_types": ["default"]}]}
    pruner = create_compressor(model, config, criterion="l2")
    assert isinstance(pruner, TransformerPruner) and pruner.criterion == "l2"


# ----------------------------------------------------------------------------- export and MACs


@hf
@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_export_load_round_trip_of_hugging_face_models(tmp_path, name):
    build, inputs = HF_MODELS[name]
    model, x = build(), inputs()
    info = save_artifact(tmp_path / "m.aup", model, example_input=x)
    assert info["max_abs_diff"] == 0.0
    loaded = load_compressed(tmp_path / "m.aup")
    assert all(torch.equal(a, b) for a, b in zip(_eval(loaded, x), _eval(model, x)))
    if name == "bert":  # non-persistent position_ids come back with their values
        assert torch.equal(loaded.bert.embeddings.position_ids, model.bert.embeddings.position_ids)
    if name == "gpt2":  # tied embedding and LM head: stored once, tied again
        assert loaded.lm_head.weight is loaded.transformer.wte.weight


@hf
def test_shrunk_models_export_and_reload(tmp_path):
    for name, (build, inputs) in (("bert", HF_MODELS["bert"]), ("encoder", (_encoder, _tokens))):
        model, x = build(), inputs()
        pruner, _, _ = _prune_and_shrink(model, x)
        path = pruner.export_model(f"{name}.aup", folder_name=str(tmp_path), dummy_input=x)
        loaded = load_compressed(path)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_eval(loaded, x), _eval(model, x)))
        assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def _torch_macs(model, x) -> int:
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call_model(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["encoder", pytest.param("bert", marks=hf), pytest.param("gpt2", marks=hf)])
def test_macs_equal_torchs_flop_counter(name):
    build, inputs = {"encoder": (_encoder, lambda: _tokens(1)), **HF_MODELS}[name]
    model, x = build(), inputs()
    if name != "encoder":
        x = {k: v[:1] for k, v in x.items()}
    assert measure_model(model, x, latency=False)["macs"] == _torch_macs(model, x)


def test_macs_are_mask_aware_for_attention_projections():
    model, x = _encoder(), _tokens(1)
    dense = measure_model(model, x, latency=False)["macs"]
    masks = {"encoder.layers.0.self_attn.out_proj": {"weight": torch.zeros(32, 32), "bias": None},
             "encoder.layers.0.self_attn": {"in_proj_weight": torch.cat([torch.zeros(32, 32), torch.ones(64, 32)])}}
    masked = measure_model(model, x, masks=masks, latency=False)["macs"]
    assert dense - masked == 2 * 32 * 32 * 8  # out_proj and the query third, 8 tokens each


def test_pipeline_sparsity_counts_removed_and_zeroed_weights():
    model, x = _encoder(), _tokens()
    config = {"compression_pipeline": [
        {"compression_framework": "torch", "compression_type": "pruning", "compressor": "transformer",
         "config_list": [{"head_sparsity": 0.5, "mlp_sparsity": 0.5, "op_types": ["default"]}]},
        {"compression_framework": "torch", "compression_type": "quantization", "compressor": "naive",
         "config_list": [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Linear"]}]}]}
    pipeline = create_compressor(model, config, dummy_input=x)
    pipeline.compress()
    metrics = pipeline.extra_metrics()
    assert 0.45 < metrics["sparsity"] < 0.55, metrics["sparsity"]
    assert metrics["layer_sparsity"]["encoder.layers.0.linear1"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- ONNX deploy path


def test_onnx_deploy_of_a_shrunk_and_of_an_int8_transformer_encoder(tmp_path):
    pytest.importorskip("onnxruntime")
    from aup.compression.torch.deploy.settings import agreement, load_deployed

    model, x = _encoder(), _tokens()
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.5, "op_types": ["default"]}])
    pruner.compress()
    path = pruner.export_model("pruned.onnx", folder_name=str(tmp_path), dummy_input=x, format="onnx")
    assert torch.allclose(load_deployed(path)(x), _eval(model, x)[0], atol=1e-5)
    model, x = _encoder(), _tokens(32)
    NaiveQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Linear"]}]).compress()
    quantizer_path = str(tmp_path / "int8.onnx")
    from aup.compression.torch.deploy.settings import export_onnx

    export_onnx(model, x, quantizer_path, int8_modules=["encoder.layers.0.linear1", "head"])
    assert agreement(load_deployed(quantizer_path), model, [x]) >= 0.9


def _float_matrices(path: str) -> list[str]:
    """Float initializers of two or more dimensions in an ONNX file (weights not stored as int8)."""
    import onnx

    return [i.name for i in onnx.load(path).graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 2]


@pytest.mark.parametrize("head_pruned", [False, True], ids=["MultiheadAttention", "HeadPrunedMultiheadAttention"])
def test_int8_onnx_quantizes_attention_query_key_value_projection(tmp_path, head_pruned):
    """The packed ``in_proj_weight`` (one MatMul, or three after the head-pruned module splits it)
    becomes int8 when its attention module is among the int8 modules: no float MatMul is left."""
    pytest.importorskip("onnxruntime")
    from aup.compression.torch.deploy.settings import agreement, export_onnx, load_deployed

    model, x = _encoder(), _tokens(16)
    if head_pruned:
        pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "op_types": ["default"]}])
        pruner.compress()
        pruner.apply_speedup(x)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or hasattr(m, "in_proj_weight")]
    linears_only = export_onnx(model, x, tmp_path / "linears.onnx", calibration=[x],
                               int8_modules=[n for n in names if not n.endswith("self_attn")])
    assert _float_matrices(linears_only)  # the q/k/v projections stay float
    everything = export_onnx(model, x, tmp_path / "all.onnx", int8_modules=names, calibration=[x])
    assert _float_matrices(everything) == []
    assert agreement(load_deployed(everything), model, [x]) >= 0.9


@hf
def test_keyword_called_model_calibrates_int8_on_the_batches_it_saw(tmp_path, monkeypatch):
    """``model(**batch)`` (with training-only ``labels``) is recorded by name; the int8 export
    calibrates on those batches (their exported inputs only) and the agreement check runs on them."""
    pytest.importorskip("onnxruntime")
    from aup.compression.torch.deploy import onnx_export
    from aup.compression.torch.deploy.metrics import deployed_file_metrics
    from aup.compression.torch.quantization import NaiveQuantizer

    model, x = _bert(), _ids()
    quantizer = NaiveQuantizer(model, [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["Linear"]}])
    quantizer.compress()
    generator = torch.Generator().manual_seed(3)
    for length in (10, 10, 10, 16, 10, 10):  # the user's passes; the exported model takes 10 tokens
        batch = {"input_ids": torch.randint(0, 100, (4, length), generator=generator),
                 "attention_mask": torch.ones(4, length, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
        model(**batch)
    batches = quantizer.calibration_batches()
    assert len(batches) == 6 and all(set(b) == {"input_ids", "attention_mask", "labels"} for b in batches)
    seen = []
    real = onnx_export.quantize_static_qdq
    monkeypatch.setattr(onnx_export, "quantize_static_qdq",
                        lambda raw, path, modules, calibration, *rest: seen.append(calibration)
                        or real(raw, path, modules, calibration, *rest))
    path = quantizer.write_deployed(str(tmp_path / "bert8.onnx"), example_input=x)
    assert len(seen[0]) == 5 and all(set(b) == {"input_ids", "attention_mask"} for b in seen[0])  # 16 tokens: out
    metrics = deployed_file_metrics(path, model, x, batches)
    assert metrics["deploy_agreement"] >= 0.9


@hf
def test_onnx_deploy_takes_keyword_inputs_and_gives_dict_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from aup.compression.torch.deploy.settings import agreement, export_onnx, load_deployed

    model, x = _bert(), _ids()
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.5, "op_types": ["default"]}])
    pruner.compress()
    path = pruner.export_model("bert.onnx", folder_name=str(tmp_path), dummy_input=x, format="onnx")
    deployed = load_deployed(path)
    assert deployed.input_names == ["input_ids", "attention_mask"] and deployed.output_names == ["logits"]
    out = deployed(**x)
    assert torch.allclose(out["logits"], _eval(model, x)[0], atol=1e-5)
    int8 = export_onnx(model, x, tmp_path / "bert8.onnx",
                       int8_modules=[n for n, m in model.named_modules() if isinstance(m, nn.Linear)])
    assert agreement(load_deployed(int8), model, [x]) == 1.0


def test_a_shrink_whose_outputs_differ_restores_the_model(monkeypatch):
    """The head/MLP shrink replaces attention modules and slices weights; when the check fails the
    model is put back exactly (modules, parameters, shape attributes)."""
    from aup.compression.torch.pruners.transformer import slicing

    model, x = _encoder(), _tokens()
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.5, "op_types": ["default"]}])
    pruner.compress()
    before = {n: (type(m), {k: p for k, p in m._parameters.items()}) for n, m in model.named_modules()}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _eval(model, x)[0]
    real = slicing.shrink_blocks

    def shrink_wrongly(*args, **kwargs):
        real(*args, **kwargs)
        model.head.weight = nn.Parameter(model.head.weight.detach() * 2)  # a shrink that changes the outputs

    monkeypatch.setattr(slicing, "shrink_blocks", shrink_wrongly)
    with pytest.raises(ValueError, match="differ"):
        pruner.apply_speedup(x)
    assert {n: (type(m), {k: p for k, p in m._parameters.items()}) for n, m in model.named_modules()} == before
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert model.encoder.layers[0].self_attn.num_heads == 4
    assert torch.equal(_eval(model, x)[0], expected)
