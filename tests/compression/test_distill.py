"""Distillation from the dense model (``compressor.distill_loss``, the ``distill`` options)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aup.compression import create_compressor
from aup.compression.search_space import CompressionJobConfigBuilder, check_compression
from aup.compression.torch.distill import soft_kl
from aup.compression.torch.zoo import DigitsCNN, load_digits_tensors, train_epoch

PRUNE = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
         "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DigitsCNN()


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits_tensors()
    return data.x_train[:n], data.y_train[:n]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_soft_kl_equals_hand_computed_kl_at_temperature() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temperature = 3.0
    expected = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zs = sum(math.exp(v / temperature) for v in row_s)
        zt = sum(math.exp(v / temperature) for v in row_t)
        p_s = [math.exp(v / temperature) / zs for v in row_s]
        p_t = [math.exp(v / temperature) / zt for v in row_t]
        expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = expected / 2 * temperature ** 2
    assert float(soft_kl(s, t, temperature)) == pytest.approx(expected, rel=1e-5)


def test_distill_loss_mixes_label_loss_and_kl_by_alpha() -> None:
    model = _model()
    compressor = create_compressor(model, {**PRUNE, "compression_distill": {"alpha": 0.3, "temperature": 2.0}})
    x, y = _batch()
    teacher = _model()  # same seed: the dense model as it was
    teacher.eval()
    outputs = model(x)
    label = F.cross_entropy(outputs, y)
    with torch.no_grad():
        t = teacher(x)
    p_t = F.softmax(t / 2.0, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(outputs.detach() / 2.0, 1))).sum(1).mean() * 4.0
    loss = compressor.distill_loss(outputs, label, x)
    assert float(loss.detach()) == pytest.approx(float(0.7 * label.detach() + 0.3 * kl), rel=1e-5)
    loss.backward()  # the student gets gradients through the soft term
    assert model.conv1.weight.grad is not None


def test_no_options_or_alpha_zero_returns_the_label_loss() -> None:
    x, y = _batch()
    for config in (PRUNE, {**PRUNE, "compression_distill": {"alpha": 0.0}}):
        model = _model()
        compressor = create_compressor(model, config)
        outputs = model(x)
        label = F.cross_entropy(outputs, y)
        assert compressor.distill_loss(outputs, label, x) is label


def test_teacher_gets_no_gradients_and_never_changes_while_the_student_trains() -> None:
    model = _model()
    before = _state(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    compressor = create_compressor(model, {**PRUNE, "compression_distill": {"alpha": 0.5, "layers": ["conv2"]}},
                                   optimizer)
    teacher = compressor.distiller.teacher
    compressor.compress()
    data = load_digits_tensors()
    train_epoch(model, data.x_train[:256], data.y_train[:256], optimizer, seed=0, loss_hook=compressor.distill_loss)
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the student did train
    assert teacher is not model


def test_after_apply_speedup_layers_compare_the_kept_channels() -> None:
    model = _model()
    x, y = _batch(16)
    compressor = create_compressor(model, {**PRUNE, "compression_distill": {"alpha": 0.5, "layers": ["conv1"],
                                                                           "layer_weight": 1.0}})
    compressor.compress()
    compressor.apply_speedup(x[:1])
    assert model.conv1.out_channels < compressor.distiller.teacher.conv1.out_channels  # shapes differ
    kept = compressor.kept_channels()["conv1"]
    outputs = model(x)
    label = F.cross_entropy(outputs, y)
    with torch.no_grad():
        t_logits = compressor.distiller.teacher(x)
        t_conv1 = compressor.distiller.teacher.conv1(x)[:, kept]
    s_conv1 = model.conv1(x)
    expected = 0.5 * label + 0.5 * soft_kl(outputs, t_logits, 4.0) + F.mse_loss(s_conv1, t_conv1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layer is compared, not skipped
        loss = compressor.distill_loss(outputs, label, x)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    loss.backward()


def test_layer_terms_count_on_every_batch_not_only_the_first() -> None:
    model = _model()
    compressor = create_compressor(model, {**PRUNE, "compression_distill": {"alpha": 0.0, "layers": ["conv1"]}})
    x, y = _batch(16)
    for batch in (x[:8], x[8:]):
        outputs = model(batch)
        label = F.cross_entropy(outputs, y[:8])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # never skipped
            loss = compressor.distill_loss(outputs, label, batch)
        # the student is still the dense model: its conv1 equals the teacher's, so the MSE is 0
        assert float(loss.detach()) == pytest.approx(float(label.detach()), abs=1e-6)
    with torch.no_grad():
        model.conv1.weight.add_(0.5)  # now they differ: the MSE term must show on a later batch
    outputs = model(x[:8])
    label = F.cross_entropy(outputs, y[:8])
    assert float(compressor.distill_loss(outputs, label, x[:8]).detach()) > float(label.detach()) + 1e-3


def test_a_layer_without_matching_channels_is_skipped_with_one_warning() -> None:
    model = _model()
    x, y = _batch(16)
    compressor = create_compressor(model, {**PRUNE, "compression_distill": {"alpha": 0.0, "layers": {"conv2": "conv1"}}})
    outputs = model(x)
    label = F.cross_entropy(outputs, y)
    with pytest.warns(UserWarning, match="skips layer 'conv2'"):
        assert float(compressor.distill_loss(outputs, label, x).detach()) == pytest.approx(float(label.detach()))


def test_works_with_a_quantizer() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    config = {"compression_framework": "torch", "compression_type": "quantization", "compressor": "qat",
              "config_list": [{"quant_types": ["weight"], "quant_bits": {"weight": 8}, "op_types": ["Conv2d", "Linear"]}],
              "compression_distill": {"alpha": 0.7, "temperature": 3}}
    compressor = create_compressor(model, config, optimizer)
    compressor.compress()
    x, y = _batch(32)
    outputs = model(x)
    loss = compressor.distill_loss(outputs, F.cross_entropy(outputs, y), x)
    assert float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is None for p in compressor.distiller.teacher.parameters())


@pytest.mark.slow
def test_works_with_a_hugging_face_classifier() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    compressor = create_compressor(model, {
        "compression_framework": "torch", "compression_type": "pruning", "compressor": "level",
        "config_list": [{"sparsity": 0.5, "op_types": ["Linear"]}],
        "compression_distill": {"alpha": 0.5, "temperature": 2, "layers": ["bert.encoder.layer.0.output.dense"]}})
    compressor.compress()
    inputs = {"input_ids": torch.randint(0, 50, (4, 8)), "labels": torch.tensor([0, 1, 2, 0])}
    outputs = model(**inputs)
    loss = compressor.distill_loss(outputs, outputs.loss, inputs)
    assert float(loss.detach()) != pytest.approx(float(outputs.loss.detach()))
    loss.backward()
    assert all(p.grad is None for p in compressor.distiller.teacher.parameters())


def test_distill_options_are_searchable_and_reach_the_job_config() -> None:
    section = {"compressor": "l1_filter", "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
               "distill": {"alpha": {"type": "choice", "range": [0.0, 0.5]},
                           "temperature": {"type": "float", "range": [1.0, 8.0]}, "layers": ["conv2"]}}
    builder = CompressionJobConfigBuilder(section)
    assert [name for name, _ in builder.describe()] == ["distill alpha", "distill temperature"]
    job = builder.build({"distill alpha": 0.5, "distill temperature": 2.5})
    assert job["compression_distill"] == {"alpha": 0.5, "temperature": 2.5, "layers": ["conv2"]}


def test_without_layers_the_temperature_is_sampled_only_when_alpha_is_not_zero() -> None:
    section = {"compressor": "l1_filter", "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
               "distill": {"alpha": {"type": "choice", "range": [0.0, 0.5, 0.9]},
                           "temperature": {"type": "choice", "range": [2, 8]}}}
    builder = CompressionJobConfigBuilder(section)
    temperature = builder.distill_dims["temperature"]
    assert temperature.condition == ("distill alpha", (0.5, 0.9))
    assert builder.build({"distill alpha": 0.0})["compression_distill"] == {"alpha": 0.0}
    assert builder.build({"distill alpha": 0.9, "distill temperature": 8})["compression_distill"] == \
        {"alpha": 0.9, "temperature": 8}


@pytest.mark.parametrize("distill, message", [
    ({"alpha": 1.5}, "compression.distill.alpha: expected a weight between 0 and 1"),
    ({"temperature": 0}, "compression.distill.temperature: expected a temperature > 0"),
    ({"alpha": {"type": "float", "range": [0.0, 2.0]}}, "compression.distill.alpha: range [0.0, 2.0] reaches 2.0"),
    ({"temprature": 2}, "compression.distill.temprature: unknown key (did you mean 'temperature'?)"),
    ({"layers": "conv1"}, "compression.distill.layers: expected a list of module names"),
    ([0.5], "compression.distill: expected an object"),
])
def test_bad_distill_options_are_one_line_errors(distill: object, message: str) -> None:
    problems = check_compression({"compressor": "l1_filter", "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
                                  "distill": distill})
    assert len(problems) == 1 and problems[0].startswith(message) and "\n" not in problems[0]


def test_an_unknown_layer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="compression_distill.layers: the student has no module 'conv9'"):
        create_compressor(_model(), {**PRUNE, "compression_distill": {"layers": ["conv9"]}})


def test_distill_on_a_tensorflow_stage_is_refused_before_any_trial() -> None:
    problems = check_compression({"framework": "tensorflow", "compressor": "level",
                                  "config_list": [{"sparsity": 0.5, "op_types": ["default"]}], "distill": {"alpha": 0.5}})
    assert problems == ["compression.distill: distillation is implemented for the torch framework only"]
