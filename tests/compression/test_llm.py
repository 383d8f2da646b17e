"""Wanda, SparseGPT, RTN and GPTQ on language-model layers, the perplexity metric and the stdlib LMs.

Hand-built layers with correlated inputs (where reconstruction matters) check the algorithms' order;
the tiny byte-level Llama trained on the standard library (seconds, cached) checks the layer-wise
calibration, the masks and the MatMulNBits deployment.
"""
from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup import metrics as M  # noqa: E402
from aup.compression.torch import lm_data, obs  # noqa: E402
from aup.errors import FieldError  # noqa: E402


def _create(model: nn.Module, name: str, config_list: list[dict[str, Any]], ctype: str, **kwargs: Any) -> Any:
    config = {"compression_framework": "torch", "compression_type": ctype, "compressor": name,
              "config_list": config_list}
    return aup.create_compressor(model, config, **kwargs)


# ---------------------------------------------------------------------------------------------- a layer
def _correlated_inputs(n: int = 1024, d: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs from 8 latent factors plus a little noise, features at very different scales."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g) @ torch.randn(8, d, generator=g) + 0.1 * torch.randn(n, d, generator=g)
    return x * torch.linspace(0.2, 3.0, d)


def _layer(seed: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32, bias=False))


def _output_error(dense: nn.Module, compressed: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        reference = dense(x)
        return float(((compressed(x) - reference) ** 2).mean() / (reference ** 2).mean())


def _pruned_error(name: str, sparsity: Any, x: torch.Tensor) -> float:
    dense = _layer()
    model = _layer()
    if name == "level":
        mask = obs.magnitude_mask(model[0].weight, sparsity)  # per-row magnitude (Wanda's comparison group)
        with torch.no_grad():
            model[0].weight.mul_(mask)
    else:
        _create(model, name, [{"sparsity": sparsity, "op_types": ["Linear"]}], "pruning",
                calibration=[x[i:i + 256] for i in range(0, len(x), 256)]).compress()
    return _output_error(dense, model, x)


@pytest.mark.parametrize("sparsity", [0.5, "2:4", 0.7])
def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude(sparsity: Any) -> None:
    x = _correlated_inputs()
    errors = {name: _pruned_error(name, sparsity, x) for name in ("level", "wanda", "sparsegpt")}
    assert errors["sparsegpt"] < errors["wanda"] < errors["level"], errors


def test_wanda_is_blind_to_outlier_features_that_mislead_magnitude() -> None:
    """Wanda's premise (Sun et al.): LLM inputs have a few features far larger than the rest with small
    weights reading them. Rescaling feature j by s and column j by 1/s keeps the function and Wanda's
    mask; magnitude pruning then removes exactly those columns."""
    x = _correlated_inputs()
    masks: dict[str, list[torch.Tensor]] = {"wanda": [], "level": []}
    for scale in (1.0, 50.0):
        inputs = x.clone()
        inputs[:, :4] *= scale
        for name in masks:
            model = _layer()
            with torch.no_grad():
                model[0].weight[:, :4] /= scale
            kwargs = {"calibration": [inputs]} if name == "wanda" else {}
            pruner = _create(model, name, [{"sparsity": 0.5, "op_types": ["Linear"]}], "pruning", **kwargs)
            pruner.compress()
            masks[name].append(pruner.get_masks()["0"]["weight"])
    assert torch.equal(masks["wanda"][0], masks["wanda"][1])
    assert bool((masks["level"][1][:, :4] == 0).all()) and not bool((masks["level"][0][:, :4] == 0).all())


def test_gptq_int4_layer_error_below_rtn() -> None:
    x = _correlated_inputs()
    calibration = [x[i:i + 256] for i in range(0, len(x), 256)]
    errors = {}
    for name, kwargs in (("rtn", {}), ("gptq", {"calibration": calibration})):
        model = _layer()
        quantizer = _create(model, name, [{"quant_bits": 4, "group_size": 32, "op_types": ["Linear"]}],
                            "quantization", **kwargs)
        quantizer.compress()
        errors[name] = _output_error(_layer(), model, x)
    assert errors["gptq"] < 0.5 * errors["rtn"], errors


def test_gptq_after_sparsegpt_keeps_the_mask_and_compensates_it() -> None:
    """A pruned layer stays exactly as sparse, and GPTQ's joint compensation beats rounding the pruned layer."""
    x = _correlated_inputs()
    errors, zeros = {}, {}
    for name, kwargs in (("rtn", {}), ("gptq", {"calibration": [x]})):
        model = _layer()
        _create(model, "sparsegpt", [{"sparsity": 0.5, "op_types": ["Linear"]}], "pruning", calibration=[x]).compress()
        pruned = model[0].weight.detach() == 0
        _create(model, name, [{"quant_bits": 4, "group_size": 32, "op_types": ["Linear"]}], "quantization",
                **kwargs).compress()
        with torch.no_grad():
            weight = model[0](torch.eye(64)).t()  # the weight the layer computes with (quantized)
        assert bool((weight[pruned] == 0).all())
        zeros[name] = float((weight == 0).float().mean())
        errors[name] = _output_error(_layer(), model, x)
    assert min(zeros.values()) >= 0.5
    assert errors["gptq"] < errors["rtn"], errors
    weight = _layer()[0].weight.detach() * (torch.rand(32, 64, generator=torch.Generator().manual_seed(0)) > 0.5)
    hessian = 2 * x.t() @ x / len(x)
    for act_order in (False, True):  # the algorithm itself, without a pruner's mask re-applied in forward
        quantized, _grid = obs.gptq_quantize(weight, hessian, 4, 32, True, act_order=act_order)
        assert bool((quantized[weight == 0] == 0).all())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_weights_lie_on_the_grid_it_reports(symmetric: bool, act_order: bool) -> None:
    x = _correlated_inputs()
    model = _layer()
    quantizer = _create(model, "gptq", [{"quant_bits": 4, "group_size": 16, "symmetric": symmetric,
                                         "act_order": act_order, "op_types": ["Linear"]}],
                        "quantization", calibration=[x])
    quantizer.compress()
    grid = quantizer.weight_grid("0")
    weight = model[0].weight.detach().double()
    scales = grid.scales.double().repeat_interleave(16, dim=1)
    zeros = (torch.full_like(scales, 8.0) if grid.zero_points is None
             else grid.zero_points.double().repeat_interleave(16, dim=1))
    codes = weight / scales + zeros
    assert grid.bits == 4 and grid.group_size == 16 and grid.symmetric is symmetric
    assert (grid.zero_points is None) is symmetric
    torch.testing.assert_close(codes, codes.round(), atol=1e-6, rtol=0)
    assert codes.round().min() >= 0 and codes.round().max() <= 15


# ---------------------------------------------------------------------------------------------- masks
@pytest.fixture(scope="module")
def tiny_llama() -> nn.Module:
    return lm_data.pretrained_lm("llama-tiny")


@pytest.fixture(scope="module")
def calibration() -> list[dict[str, torch.Tensor]]:
    return lm_data.calibration_batches(context=64, count=16, seed=0, batch=8)


def _fresh(model: nn.Module) -> nn.Module:
    clone = lm_data.build_lm(lm_data.SPECS["llama-tiny"])
    clone.load_state_dict(model.state_dict())
    return clone.eval()


@pytest.mark.parametrize("name", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.5, 0.75, "2:4", "1:4"])
def test_masks_have_the_asked_sparsity_or_exact_nm_pattern(tiny_llama: nn.Module, calibration: list, name: str,
                                                          sparsity: Any) -> None:
    model = _fresh(tiny_llama)
    pruner = _create(model, name, [{"sparsity": sparsity, "op_types": ["Linear"]},
                                   {"exclude": True, "op_names": ["lm_head"]}], "pruning", calibration=calibration)
    pruner.compress()
    masks = pruner.get_masks()
    assert set(masks) == {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    for layer, mask in masks.items():
        weight = dict(model.named_modules())[layer].weight.detach()
        assert torch.equal(weight == 0, mask["weight"] == 0) or bool((weight[mask["weight"] == 0] == 0).all())
        if isinstance(sparsity, str):
            n, m = map(int, sparsity.split(":"))
            kept = (mask["weight"] != 0).reshape(weight.shape[0], -1, m).sum(-1)
            assert bool((kept == n).all()), layer  # exactly n of every m kept
        elif name == "wanda":  # per output row
            pruned = (mask["weight"] == 0).sum(1)
            assert bool((pruned == int(weight.shape[1] * sparsity)).all()), layer
        else:  # per block of columns, over all rows
            assert float((mask["weight"] == 0).float().mean()) == pytest.approx(sparsity, abs=0.01)


def test_layers_are_calibrated_in_order_in_groups_sharing_their_input(tiny_llama: nn.Module,
                                                                      calibration: list) -> None:
    model = _fresh(tiny_llama)
    pruner = _create(model, "wanda", [{"sparsity": 0.5, "op_types": ["Linear"]}], "pruning", calibration=calibration)
    pruner.compress()
    first = ["model.layers.0.self_attn." + p for p in ("q_proj", "k_proj", "v_proj")]
    assert pruner.calibrated_groups[:4] == [first, ["model.layers.0.self_attn.o_proj"],
                                            ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"],
                                            ["model.layers.0.mlp.down_proj"]]
    assert pruner.calibrated_groups[-1] == ["lm_head"]


def test_calibration_comes_from_the_batches_the_model_saw(tiny_llama: nn.Module, calibration: list) -> None:
    model = _fresh(tiny_llama)
    pruner = _create(model, "sparsegpt", [{"sparsity": 0.5, "op_types": ["Linear"]}], "pruning",
                     n_calibration_batches=2)
    pruner.compress()
    assert not pruner.masks_calculated  # nothing seen yet: waits
    with torch.no_grad():
        for batch in calibration[:2]:
            model(**batch)
    pruner.step()
    assert pruner.masks_calculated
    assert pruner.sparsity() == pytest.approx(0.5, abs=0.01)


def test_pruning_keeps_held_out_perplexity_ordered(tiny_llama: nn.Module, calibration: list) -> None:
    held_out = lm_data.corpus_tokens("heldout", max_bytes=6000)
    dense = lm_data.perplexity(tiny_llama, held_out, context=64)
    scores = {}
    for name in ("wanda", "sparsegpt"):
        model = _fresh(tiny_llama)
        _create(model, name, [{"sparsity": 0.5, "op_types": ["Linear"]}, {"exclude": True, "op_names": ["lm_head"]}],
                "pruning", calibration=calibration).compress()
        scores[name] = lm_data.perplexity(model, held_out, context=64)
    assert dense < min(scores.values()), (dense, scores)
    assert max(scores.values()) < 2 * dense, (dense, scores)


def test_bad_nm_pattern_names_entry_and_key() -> None:
    with pytest.raises(FieldError) as caught:
        _create(_layer(), "wanda", [{"sparsity": "4:2", "op_types": ["Linear"]}], "pruning")
    assert (caught.value.entry, caught.value.key) == (0, "sparsity")


def test_nm_pattern_must_divide_the_input_size() -> None:
    model = nn.Sequential(nn.Linear(6, 4))
    with pytest.raises(ValueError, match="multiple of 4"):
        _create(model, "sparsegpt", [{"sparsity": "2:4", "op_types": ["Linear"]}], "pruning", calibration=[torch.ones(2, 6)])


def test_group_size_must_divide_the_input_size() -> None:
    with pytest.raises(ValueError, match="group_size 24 does not divide"):
        _create(_layer(), "rtn", [{"quant_bits": 4, "group_size": 24, "op_types": ["Linear"]}], "quantization")


# ---------------------------------------------------------------------------------------------- perplexity
def test_perplexity_equals_a_hand_computed_value() -> None:
    """A bigram model (logits depend on the previous token only): every window length gives the same
    per-token NLL, so the sliding window must score each token after the first exactly once."""
    table = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-2.0, 3.0, 1.0]])
    tokens = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2, 1, 1, 0])

    def bigram(ids: torch.Tensor) -> torch.Tensor:
        return table[ids]

    nll = [-math.log(math.exp(table[a, b]) / sum(math.exp(v) for v in table[a].tolist()))
           for a, b in zip(tokens[:-1].tolist(), tokens[1:].tolist())]
    expected = math.exp(sum(nll) / len(nll))
    for context, stride in ((4, 2), (4, 3), (3, 1), (11, 5), (64, 32)):
        assert lm_data.perplexity(bigram, tokens, context=context, stride=stride) == pytest.approx(expected, rel=1e-9)


def test_sliding_windows_score_every_token_once_with_history() -> None:
    windows = lm_data.sliding_windows(100, context=32, stride=8)
    scored = [t for begin, end, n in windows for t in range(end - n, end)]
    assert scored == list(range(1, 100))
    assert all(end - n - begin >= 32 - 8 for begin, end, n in windows[1:])
    with pytest.raises(ValueError, match="stride"):
        lm_data.sliding_windows(100, context=32, stride=32)  # the window's first token would have no history


def test_uniform_model_has_perplexity_of_its_vocabulary() -> None:
    tokens = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0))
    assert lm_data.perplexity(lambda ids: torch.zeros(*ids.shape, 256), tokens, context=64) == pytest.approx(256.0)


def test_perplexity_is_a_lower_is_better_metric() -> None:
    from aup.constraints import parse_constraints

    assert M.PERPLEXITY == "perplexity" and M.PERPLEXITY in M.LOWER_IS_BETTER and M.PERPLEXITY in M.ALL_METRICS
    constraint = parse_constraints({"perplexity": 5.0})[0]
    assert constraint.op == "<="
    assert constraint.value({"perplexity": 4.0}) < 0 < constraint.value({"perplexity": 6.0})


def test_stdlib_split_is_by_file_and_deterministic() -> None:
    train, held = lm_data.corpus_files("train"), lm_data.corpus_files("heldout")
    assert train and held and not {p.name for p in train} & {p.name for p in held}
    assert lm_data.corpus_files("heldout") == held


# ---------------------------------------------------------------------------------------------- deployment
@pytest.mark.parametrize("name", ["rtn", "gptq"])
def test_onnx_export_ships_matmulnbits_and_agrees(tiny_llama: nn.Module, calibration: list, name: str,
                                                  tmp_path: Any) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from aup.compression import load_compressed, load_deployed

    model = _fresh(tiny_llama)
    config_list = [{"quant_bits": 4, "group_size": 32, "op_types": ["Linear"]},
                   {"quant_bits": 8, "op_names": ["lm_head"]}]
    kwargs = {"calibration": calibration} if name == "gptq" else {}
    quantizer = _create(model, name, config_list, "quantization", **kwargs)
    quantizer.compress()
    example = calibration[0]["input_ids"][:2]
    # the user's path: the deployed file and aup's packed artifact (a Hugging Face model is stored as its
    # class, config and weights, so transformers' internals do not matter)
    path = str(tmp_path / "model.onnx")
    quantizer.export_model(path, format="onnx", dummy_input=example)
    quantizer.export_model(str(tmp_path / "model.pt"), dummy_input=example)  # aup's packed artifact too
    restored = load_compressed(str(tmp_path / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(restored(example).logits, model(example).logits, atol=1e-4, rtol=1e-4)
    nodes = [n for n in onnx.load(path).graph.node if n.op_type == "MatMulNBits"]
    bits = sorted(next((a.i for a in n.attribute if a.name == "bits"), 4) for n in nodes)  # absent: default 4
    assert len(nodes) == 15 and bits == [4] * 14 + [8]
    deployed = load_deployed(path)
    with torch.no_grad():
        expected = model(example).logits
    got = torch.as_tensor(lm_data._logits(deployed(example)))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["wanda", "sparsegpt"])
def test_gpt2_conv1d_layers_are_pruned_along_their_inputs(name: str) -> None:
    """GPT-2's projections are transformers' Conv1D (weight stored [in, out]): n:m runs along the inputs."""
    model = lm_data.pretrained_lm("gpt2-tiny")
    calibration = lm_data.calibration_batches(context=64, count=8, seed=0, batch=8)
    pruner = _create(model, name, [{"sparsity": "2:4", "op_types": ["Conv1D"]}], "pruning", calibration=calibration)
    pruner.compress()
    masks = pruner.get_masks()
    assert len(masks) == 8 and all(".attn." in n or ".mlp." in n for n in masks)
    for layer, mask in masks.items():
        weight = dict(model.named_modules())[layer].weight
        assert mask["weight"].shape == weight.shape  # [in, out]
        kept = (mask["weight"].t() != 0).reshape(weight.shape[1], -1, 4).sum(-1)
        assert bool((kept == 2).all()), layer


def _conv1d_twin(seed: int = 1) -> tuple[nn.Module, nn.Module]:
    """The same layer twice: a ``Linear`` and transformers' ``Conv1D`` holding its weight transposed."""
    from transformers.pytorch_utils import Conv1D

    linear = _layer(seed)
    conv = nn.Sequential(Conv1D(32, 64))
    with torch.no_grad():
        conv[0].weight.copy_(linear[0].weight.t())
        conv[0].bias.zero_()
    return linear, conv


@pytest.mark.parametrize("name", ["rtn", "gptq"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_conv1d_is_quantized_along_its_inputs_like_the_same_linear(name: str, symmetric: bool) -> None:
    """GPT-2's Conv1D stores [in, out]: its groups run along the inputs, so it quantizes exactly like the
    Linear holding the transposed weight (same grid, same GPTQ compensation)."""
    x = _correlated_inputs()
    kwargs = {"calibration": [x[i:i + 256] for i in range(0, len(x), 256)]} if name == "gptq" else {}
    weights, grids = {}, {}
    for op_type, model in zip(("Linear", "Conv1D"), _conv1d_twin()):
        quantizer = _create(model, name, [{"quant_bits": 4, "group_size": 16, "symmetric": symmetric,
                                           "op_types": [op_type]}], "quantization", **kwargs)
        quantizer.compress()
        with torch.no_grad():
            weights[op_type] = model[0](torch.eye(64)) - (model[0].bias if op_type == "Conv1D" else 0)  # [in, out]
        grids[op_type] = quantizer.weight_grid("0")
    assert grids["Conv1D"].scales.shape == (32, 4)  # [out, n_groups]
    torch.testing.assert_close(grids["Conv1D"].scales, grids["Linear"].scales)
    torch.testing.assert_close(weights["Conv1D"], weights["Linear"], atol=1e-6, rtol=0)
    levels = [len(weights["Conv1D"][16 * g:16 * g + 16, o].unique()) for o in range(32) for g in range(4)]
    assert max(levels) <= 16  # each group of 16 inputs of an output on one 4-bit grid


@pytest.mark.parametrize("name", ["rtn", "gptq"])
def test_gpt2_conv1d_ships_matmulnbits_and_agrees(name: str, tmp_path: Any) -> None:
    """GPT-2 (random weights, built from its config): every Conv1D becomes a 4-bit MatMulNBits on the
    quantizer's grid; the deployed file and aup's packed artifact compute what the model computes."""
    pytest.importorskip("onnxruntime")
    import onnx

    from aup.compression import load_compressed, load_deployed

    model = lm_data.build_lm(lm_data.SPECS["gpt2-tiny"]).eval()
    calibration = lm_data.calibration_batches(context=64, count=8, seed=0, batch=8)
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    kwargs = {"calibration": calibration} if name == "gptq" else {}
    quantizer = _create(model, name, [{"quant_bits": 4, "group_size": 32, "op_types": ["Conv1D"]}],
                        "quantization", **kwargs)
    quantizer.compress()
    example = calibration[0]["input_ids"][:2]
    path = str(tmp_path / "model.onnx")
    quantizer.export_model(path, format="onnx", dummy_input=example)
    quantizer.export_model(str(tmp_path / "model.pt"), dummy_input=example)
    with torch.no_grad():
        expected = model(example).logits
        with quantizer.exported_view():
            changed = [n for n, p in model.named_parameters() if not torch.equal(p, dense[n])]
    assert sorted(changed) == sorted(n for n in dense if n.endswith((".c_attn.weight", ".c_proj.weight",
                                                                     ".c_fc.weight")))
    restored = load_compressed(str(tmp_path / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(restored(example).logits, expected, atol=1e-5, rtol=1e-5)
    nodes = [n for n in onnx.load(path).graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 8 and all(next((a.i for a in n.attribute if a.name == "bits"), 4) == 4 for n in nodes)
    got = torch.as_tensor(lm_data._logits(load_deployed(path)(example)))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)


def test_search_ranges_over_sparsity_and_nm_patterns_are_checked_before_any_trial() -> None:
    from aup.compression.search_space import CompressionJobConfigBuilder, CompressionSpaceError

    section = {"framework": "torch", "type": "pruning", "compressor": {"type": "choice", "range": ["wanda", "sparsegpt"]},
               "config_list": [{"sparsity": {"type": "choice", "range": [0.5, "2:4", 0.7]}, "op_types": ["Linear"]}]}
    CompressionJobConfigBuilder(section)
    for bad in ({"type": "choice", "range": [0.5, "3:2"]}, {"type": "float", "range": [0.3, 1.0]}):
        section["config_list"][0]["sparsity"] = bad
        with pytest.raises((CompressionSpaceError, ValueError), match="n:m"):
            CompressionJobConfigBuilder(section)


@pytest.mark.parametrize("name, config_list", [
    ("sparsegpt", [{"sparsity": 0.5, "op_types": ["Linear"]}]),
    ("gptq", [{"quant_types": ["weight"], "quant_bits": {"weight": 4}, "op_types": ["Linear"]}]),
])
@pytest.mark.parametrize("option, message", [
    ({"damp": 2}, "damp must be a number in (0, 1), got 2"),
    ({"block_size": 0}, "block_size must be an integer >= 1, got 0"),
    ({"block_size": True}, "block_size must be an integer >= 1, got True"),
])
def test_both_obs_solvers_refuse_bad_solver_options_naming_themselves(name: str, config_list: list[dict[str, Any]],
                                                                      option: dict[str, Any], message: str) -> None:
    from aup.compression.torch.pruners.sparsegpt import SparseGPTPruner
    from aup.compression.torch.quantization.gptq import GPTQQuantizer

    cls = {"sparsegpt": SparseGPTPruner, "gptq": GPTQQuantizer}[name]
    with pytest.raises(ValueError) as error:
        cls(nn.Sequential(nn.Linear(4, 4)), config_list, **option)
    assert str(error.value) == f"{name}: {message}"
