"""Analysis utilities: SensitivityAnalysis curves and CSV, ChannelDependency sets and CSV,
count_flops_params, all from ``aup.compression``."""
from __future__ import annotations

import copy
import csv

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aup.compression as compression  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.analysis import is_monotone  # noqa: E402


def weight_l1(model):
    """Sum of |w| over the conv and linear weights: pruning more of any layer can only lower it."""
    return float(sum(m.weight.detach().abs().sum() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))))


@pytest.mark.parametrize("prune_type", ["l1", "l2", "fpgm", "level"])
def test_curves_are_monotone_and_the_weights_are_restored(prune_type):
    torch.manual_seed(0)
    model = zoo.DigitsCNN(width=8)
    before = copy.deepcopy(model.state_dict())
    analysis = compression.SensitivityAnalysis(model, lambda: weight_l1(model), prune_type=prune_type)
    curves = analysis.analysis()
    assert list(curves) == ["conv1", "conv2"]  # conv layers, NNI's default targets
    for name, curve in curves.items():
        assert sorted(curve) == pytest.approx([0.1 * i for i in range(1, 10)])
        assert is_monotone(curve, decreasing=True)  # masks are nested: more sparsity, fewer weights
        assert curve[0.9] < curve[0.1] <= analysis.ori_metric  # (0.1 of 8 filters rounds to none)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.slow
def test_accuracy_curves_on_digits_and_csv_export(tmp_path, pretrained_digits):
    digits, model = pretrained_digits.data, pretrained_digits.model()
    accuracy = zoo.evaluate(model, digits.x_test, digits.y_test)
    analysis = compression.SensitivityAnalysis(model, zoo.evaluate, sparsities=[0.75, 0.25, 0.5])
    curves = analysis.analysis(val_args=[model, digits.x_test, digits.y_test])
    assert analysis.ori_metric == accuracy
    assert zoo.evaluate(model, digits.x_test, digits.y_test) == accuracy  # restored
    for curve in curves.values():
        assert list(curve) == [0.25, 0.5, 0.75]
        assert curve[0.75] < accuracy  # removing three quarters of a layer's filters costs accuracy
    path = tmp_path / "sensitivity.csv"
    analysis.export(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["layername", "0.25", "0.5", "0.75"]
    assert [r[0] for r in rows[1:]] == ["conv1", "conv2"]
    assert compression.SensitivityAnalysis.load(path) == curves


def test_early_stop_modes_cut_the_sweep():
    torch.manual_seed(0)
    model = zoo.DigitsCNN(width=8)
    full = weight_l1(model)
    conv2 = float(model.conv2.weight.detach().abs().sum())
    drop = 0.35 * conv2  # pruning conv2 crosses this drop somewhere between 0.3 and 0.5
    analysis = compression.SensitivityAnalysis(model, lambda: weight_l1(model), prune_type="level",
                                               early_stop_mode="dropped", early_stop_value=drop)
    curves = analysis.analysis(specified_layers=["conv2"])
    curve = curves["conv2"]
    assert list(curves) == ["conv2"]
    assert 2 <= len(curve) < 9
    assert all(v >= full - drop for v in list(curve.values())[:-1])  # it stopped at the first crossing
    assert list(curve.values())[-1] < full - drop
    minimize = compression.SensitivityAnalysis(model, lambda: weight_l1(model), prune_type="level",
                                               early_stop_mode="minimize", early_stop_value=full - drop)
    assert list(minimize.analysis(specified_layers=["conv2"])["conv2"]) == list(curve)


def test_specified_layers_may_name_other_prunable_layers_and_errors_are_clear():
    model = zoo.DigitsCNN(width=8)
    analysis = compression.SensitivityAnalysis(model, lambda: weight_l1(model), sparsities=[0.5], prune_type="level")
    assert list(analysis.analysis(specified_layers=["fc1"])) == ["fc1"]
    with pytest.raises(ValueError, match="cannot be pruned with prune_type='l1'"):
        compression.SensitivityAnalysis(model, lambda: 1.0).analysis(specified_layers=["fc1"])
    with pytest.raises(ValueError, match="no module named 'conv9'"):
        compression.SensitivityAnalysis(model, lambda: 1.0).analysis(specified_layers=["conv9"])
    with pytest.raises(ValueError, match="val_func must return a single number"):
        compression.SensitivityAnalysis(model, lambda: (0.9, 0.1)).analysis()
    with pytest.raises(ValueError, match="prune_type: expected one of"):
        compression.SensitivityAnalysis(model, lambda: 1.0, prune_type="slim")
    with pytest.raises(ValueError, match="sparsities: expected"):
        compression.SensitivityAnalysis(model, lambda: 1.0, sparsities=[0.5, 1.0])
    with pytest.raises(ValueError, match="early_stop_value"):
        compression.SensitivityAnalysis(model, lambda: 1.0, early_stop_mode="dropped")


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_channel_dependency_ties_residual_convs_and_exports_csv(tmp_path):
    model = zoo.resnet_small(in_channels=1)
    dependency = compression.ChannelDependency(model, torch.zeros(1, 1, 8, 8))
    sets = dependency.dependency_sets
    assert {"conv1", "layer1.0.conv2"} in sets  # identity shortcut: stem and block output add up
    assert {"layer2.0.conv2", "layer2.0.downsample.0"} in sets  # projection shortcut
    assert not any("layer2.0.conv1" in s for s in sets)  # a block's inner conv is free
    path = tmp_path / "dependency.csv"
    dependency.export(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["Dependency Set", "Layers"]
    assert ["Set 1", "conv1", "layer1.0.conv2"] in rows


def test_count_flops_params_is_exported_and_mask_aware():
    model = zoo.DigitsCNN()
    flops, params, rows = compression.count_flops_params(model, (1, 1, 8, 8), verbose=False)
    # MACs per sample: conv1 64*16*9, conv2 64*32*16*9, fc1 512*64, fc2 64*10
    assert flops == 64 * 16 * 9 + 64 * 32 * 16 * 9 + 512 * 64 + 64 * 10
    assert params == sum(p.numel() for p in model.parameters())
    mask = torch.ones_like(model.conv2.weight)
    mask[:16] = 0
    half, _, _ = compression.count_flops_params(model, torch.zeros(1, 1, 8, 8), masks={"conv2": {"weight": mask}},
                                                verbose=False)
    assert flops - half == 64 * 32 * 16 * 9 / 2
    assert [r["name"] for r in rows] == ["conv1", "conv2", "fc1", "fc2"]
