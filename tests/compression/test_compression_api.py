"""create_compressor, the registry, and the Compressor API around the masks."""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import io
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression import catalog, registry  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402

L1_HALF = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
           "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_import_aup_stays_free_of_torch_and_compression_loads_lazily():
    code = ("import sys, aup, aup.compression.schemas, aup.compression.registry; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "f = aup.compression.create_compressor; assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("config, message", [
    ({"compression_framework": "mxnet", "compression_type": "pruning", "compressor": "level", "config_list": []},
     r"unknown compression framework 'mxnet'; supported: tensorflow, torch"),
    ({"compression_framework": "tensorflow", "compression_type": "quantization", "compressor": "naive", "config_list": []},
     r"unknown compression type 'quantization' for framework 'tensorflow'; supported: pruning"),
    ({"compression_framework": "tensorflow", "compression_type": "pruning", "compressor": "fpgm", "config_list": []},
     r"unknown compressor 'fpgm' for tensorflow pruning; supported: level"),
    ({"compression_framework": "torch", "compression_type": "pruning", "compressor": "l3_filter", "config_list": []},
     r"unknown compressor 'l3_filter'.*supported: .*l1_filter"),
    ({"compression_type": "pruning", "compressor": "level", "config_list": []}, r"missing 'compression_framework' or 'framework'"),
])
def test_unknown_names_are_refused_before_the_model_is_touched(config, message):
    with pytest.raises(ValueError, match=message):
        aup.create_compressor(None, config)


def test_registry_lists_every_compressor():
    # the seed's 16, the transformer pruner and the one-shot LLM pruners
    assert len(registry.COMPRESSORS["torch"]["pruning"]) == 19
    assert {"wanda", "sparsegpt"} <= set(registry.COMPRESSORS["torch"]["pruning"])
    assert set(registry.COMPRESSORS["torch"]["quantization"]) == {"naive", "qat", "dorefa", "bnn", "rtn", "gptq"}
    assert set(registry.COMPRESSORS["tensorflow"]["pruning"]) == {"level"}


def test_unwritten_compressor_gives_a_clear_message(monkeypatch):
    entry = dataclasses.replace(catalog.lookup("torch", "pruning", "level"),
                                class_path="aup.compression.torch.pruners.nothing:X")
    monkeypatch.setattr(catalog, "lookup", lambda *names: entry)
    with pytest.raises(ValueError, match="not implemented yet in this build"):
        registry.load_class("torch", "pruning", "level")


def test_same_function_everywhere_and_the_compression_section_form():
    assert aup.compression.create_compressor is importlib.import_module("aup.compression.factory").create_compressor
    section = {"compression": {"framework": "torch", "type": "pruning", "compressor": "level",
                               "config_list": [{"sparsity": 0.5, "op_types": ["default"]}]}}
    pruner = aup.create_compressor(zoo.DigitsCNN(), section)
    assert type(pruner).__name__ == "LevelPruner"
    pruner = aup.compression.create_compressor(zoo.DigitsCNN(), section["compression"])
    assert type(pruner).__name__ == "LevelPruner"


def test_extra_arguments_by_position_and_keyword():
    model = zoo.DigitsCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(1, 1, 8, 8)
    by_position = aup.create_compressor(model, L1_HALF, optimizer, True, x)
    assert by_position.optimizer is optimizer and by_position.dependency_aware and by_position.dummy_input is x
    by_keyword = aup.create_compressor(zoo.DigitsCNN(), L1_HALF, optimizer=None, dependency_aware=False)
    assert by_keyword.optimizer is None
    with pytest.raises(ValueError, match=r"compressor 'l1_filter': .*unexpected keyword argument 'pruning_algorithm'"):
        aup.create_compressor(zoo.DigitsCNN(), L1_HALF, pruning_algorithm="level")
    with pytest.raises(ValueError, match=r"compressor 'level': too many positional arguments"):
        aup.create_compressor(zoo.DigitsCNN(), dict(L1_HALF, compressor="level"), None, True)


def test_config_is_not_mutated():
    config = copy.deepcopy(L1_HALF)
    pruner = aup.create_compressor(zoo.DigitsCNN(), config)
    pruner.config_list[0]["sparsity"] = 0.9
    assert config == L1_HALF


def test_masks_keep_state_dict_keys_and_module_classes_and_survive_training():
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    keys = list(model.state_dict())
    classes = [type(m) for m in model.modules()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    pruner = aup.create_compressor(model, L1_HALF, optimizer)
    assert pruner.compress() is model
    torch.save(model, io.BytesIO())  # hooks are picklable
    assert list(model.state_dict()) == keys and [type(m) for m in model.modules()] == classes
    pruned = {n: (m["weight"].flatten(1).sum(1) == 0) for n, m in pruner.get_masks().items() if n.startswith("conv")}
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name, dead in pruned.items():  # gradients of pruned filters are zero
            assert getattr(model, name).weight.grad[dead].abs().sum() == 0
        optimizer.step()
    for name, dead in pruned.items():
        assert getattr(model, name).weight.detach()[dead].abs().sum() == 0
    masks = pruner.get_masks()
    assert set(masks) == {"conv1", "conv2", "bn1", "bn2"} and set(masks["conv1"]) == {"weight", "bias"}
    assert masks["conv1"]["bias"] is None  # DigitsCNN convs have no bias
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):  # the BatchNorm after a pruned filter goes with it
        assert torch.equal(masks[bn]["weight"] == 0, pruned[conv]) and torch.equal(masks[bn]["bias"] == 0, pruned[conv])
    # the model can still be copied and saved whole
    copy.deepcopy(model)
    torch.save(model, io.BytesIO())


def test_weights_written_by_the_user_are_masked_again_at_forward():
    model = zoo.DigitsCNN()
    pruner = aup.create_compressor(model, L1_HALF)
    pruner.compress()
    dead = pruner.get_masks()["conv1"]["weight"].flatten(1).sum(1) == 0
    with torch.no_grad():
        model.conv1.weight.fill_(1.0)
    model(torch.randn(1, 1, 8, 8))
    assert model.conv1.weight.detach()[dead].abs().sum() == 0


def test_lifecycle_defaults():
    pruner = aup.create_compressor(zoo.DigitsCNN(), L1_HALF)
    pruner.compress()
    pruner.update_epoch(3)
    assert pruner.epoch == 3
    assert list(pruner.get_prune_iterations()) == [0]
    pruner.prune_iteration_start()
    pruner.step()


def test_count_flops_params_is_mask_aware():
    model = zoo.DigitsCNN(width=16)
    dense_flops, dense_params, rows = aup.compression.count_flops_params(model, (1, 1, 8, 8), verbose=False)
    assert [r["name"] for r in rows] == ["conv1", "conv2", "fc1", "fc2"]
    assert rows[0]["flops"] == 16 * 9 * 64 and rows[2]["flops"] == 512 * 64
    assert dense_params == sum(p.numel() for p in model.parameters())
    pruner = aup.create_compressor(model, L1_HALF)
    pruner.compress()
    flops, params, rows = pruner.count_flops_params(torch.zeros(1, 1, 8, 8), verbose=False)
    conv = {r["name"]: r for r in rows}
    assert conv["conv1"]["flops"] == 16 * 9 * 64 / 2
    # half the filters of conv1/conv2, plus weight and bias of the BatchNorm channels after them
    assert dense_params - params == (16 * 9 + 32 * 16 * 9) / 2 + (16 + 32)


def test_export_writes_clean_weights_and_nni_mask_file(tmp_path, caplog):
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    pruner = aup.create_compressor(model, L1_HALF)
    pruner.compress()
    keys = list(model.state_dict())
    with caplog.at_level("DEBUG", logger="aup.compression.torch.base"):
        path = pruner.export_model("model.pth", "mask.pth", folder_name=str(tmp_path / "out"), save_best_only=True)
    assert "save_best_only" in caplog.text  # Auptimizer's keyword: accepted, logged at debug level
    masks = torch.load(tmp_path / "out" / "mask.pth")
    assert set(masks) == {"conv1", "conv2", "bn1", "bn2"} and masks["conv2"]["weight"].shape == model.conv2.weight.shape
    assert (tmp_path / "out" / "model.pth").exists() and path.endswith("model.pth")
    assert list(model.state_dict()) == keys


def test_export_reports_metrics_inside_a_trial(tmp_path, monkeypatch):
    pytest.importorskip("aup.compression.torch.measure")
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model = zoo.DigitsCNN()
    pruner = aup.create_compressor(model, L1_HALF)
    pruner.compress()
    model(torch.randn(4, 1, 8, 8))  # the compressor remembers an example input from training
    pruner.export_model("model.pth", folder_name=str(tmp_path))
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    metrics = {k: v for r in records if r["kind"] == "metrics" for k, v in r["metrics"].items()}
    assert metrics["model_bytes"] == (tmp_path / "model.pth").stat().st_size
    assert abs(metrics["sparsity"] - 0.5) <= 0.01


@pytest.mark.skipif(not has("aup.compression.torch.shrink.core"), reason="shrink.py not in this build yet")
def test_export_after_apply_speedup_saves_the_shrunk_model(tmp_path):
    torch.manual_seed(0)
    model = zoo.DigitsCNN(width=16)
    x = torch.randn(2, 1, 8, 8)
    pruner = aup.create_compressor(model, L1_HALF)
    pruner.compress()
    model.eval()
    masked_out = model(x)
    assert pruner.apply_speedup(x) is model
    assert model.conv1.out_channels == 8 and model.conv2.out_channels == 16
    assert torch.allclose(model(x), masked_out, atol=1e-4)
    assert pruner.get_masks() == {}
    pruner.export_model("model.pth", "mask.pth", folder_name=str(tmp_path))
    assert model.conv1.out_channels == 8  # the live model is not corrupted by export
    assert torch.load(tmp_path / "mask.pth")["conv1"]["weight"].shape == (16, 1, 3, 3)


def test_apply_speedup_on_a_quantizer_is_refused():
    config = {"compression_framework": "torch", "compression_type": "quantization", "compressor": "dorefa",
              "config_list": [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}]}
    quantizer = aup.create_compressor(zoo.DigitsCNN(), config)
    with pytest.raises(ValueError, match="apply_speedup shrinks pruned models"):
        quantizer.apply_speedup(torch.zeros(1, 1, 8, 8))


@pytest.mark.skipif(not has("aup.compression.torch.shrink.core"), reason="shrink.py not in this build yet")
def test_size_reaches_the_channel_right_after_compress_and_apply_speedup(tmp_path, monkeypatch):
    # multi-objective early stopping ranks a trial at its first epoch by its size: the size must be
    # in the channel before the script's first result
    from aup.compression.torch import base as base_module

    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    monkeypatch.setattr(base_module, "_live", [])
    monkeypatch.setattr(base_module, "_first", {})
    aup.create_compressor(zoo.DigitsCNN(), L1_HALF).compress()
    assert not channel.exists()  # only when the runner asks (AUP_EARLY_SIZE: rungs ranked by size)
    monkeypatch.setattr(base_module, "_live", [])
    monkeypatch.setattr(base_module, "_first", {})  # a new trial: its first compressor is the script's
    monkeypatch.setenv("AUP_EARLY_SIZE", "1")
    model = zoo.DigitsCNN(width=16)
    pruner = aup.create_compressor(model, L1_HALF)
    inner = aup.create_compressor(zoo.DigitsCNN(), L1_HALF)  # a later compressor (as a search pruner's)
    pruner.compress()
    inner.compress()
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["metrics"]  # only the script's own compressor reports
    masked = records[0]["metrics"]
    assert abs(masked["sparsity"] - 0.5) <= 0.01 and "latency_ms" not in masked and masked["model_bytes"] > 0
    x = torch.randn(2, 1, 8, 8)
    pruner.apply_speedup(x)
    shrunk = json.loads(channel.read_text().splitlines()[-1])["metrics"]
    assert shrunk["param_count"] < masked["param_count"] and shrunk["model_bytes"] < masked["model_bytes"]
    assert not pruner.reported  # the full report at export or at the trial's end still runs
