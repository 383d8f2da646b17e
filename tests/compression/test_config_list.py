"""config_list semantics (NNI 2.0) and up-front validation with one-line errors."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression import schemas  # noqa: E402
from aup.compression.torch.config_list import select_modules, validate_against_model  # noqa: E402


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc1 = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.conv2(self.relu1(self.bn1(self.conv1(x))))
        return self.fc1(x.flatten(1))


def names(selected):
    return {s.name: s.config.get("sparsity") for s in selected}


def test_last_matching_entry_wins():
    cl = [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"sparsity": 0.2, "op_names": ["conv2"]}]
    assert names(select_modules(Net(), cl)) == {"conv1": 0.5, "conv2": 0.2}
    cl = [{"sparsity": 0.2, "op_names": ["conv2"]}, {"sparsity": 0.5, "op_types": ["Conv2d"]}]
    assert names(select_modules(Net(), cl)) == {"conv1": 0.5, "conv2": 0.5}


def test_default_means_weighted_layers_and_exclude_true_skips():
    cl = [{"sparsity": 0.5, "op_types": ["default"]}, {"exclude": True, "op_names": ["fc1"]}]
    assert set(names(select_modules(Net(), cl))) == {"conv1", "conv2"}  # BN is not a "default" layer


def test_exclude_false_does_not_exclude():
    # NNI excluded on the mere presence of the key; we honour its value
    cl = [{"sparsity": 0.5, "op_types": ["default"]}, {"sparsity": 0.3, "exclude": False, "op_names": ["fc1"]}]
    assert names(select_modules(Net(), cl))["fc1"] == 0.3


def test_parameterless_modules_are_valid_op_names_and_types_match_case_insensitively():
    cl = [{"quant_types": ["output"], "quant_bits": 1, "op_types": ["relu"], "op_names": ["relu1"]}]
    selected = validate_against_model(Net(), cl, compressor="bnn")
    assert [s.name for s in selected] == ["relu1"]


def test_unknown_op_name_is_refused_with_a_suggestion(cfg):
    with pytest.raises(ValueError, match=r"config_list\[0\]\.op_names: no module named 'conv3'.*did you mean 'conv"):
        aup.create_compressor(Net(), cfg("level", [{"sparsity": 0.5, "op_names": ["conv3"]}]))


@pytest.mark.parametrize("entry, message", [
    ({"sparsity": "0.2", "op_types": ["Conv2d"]}, r"config_list\[0\]\.sparsity: expected a number in \(0, 1\), got '0.2'"),
    ({"sparsity": 1.6, "op_types": ["Conv2d"]}, r"config_list\[0\]\.sparsity: expected a number in \(0, 1\), got 1.6"),
    ({"sparsity": 1, "op_types": ["Conv2d"]}, r"sparsity: expected a number in \(0, 1\), got 1"),
    ({"sparsity": 0.0, "op_types": ["Conv2d"]}, r"sparsity: expected a number in \(0, 1\)"),
    ({"sparsity": True, "op_types": ["Conv2d"]}, r"sparsity: expected a number"),
    ({"sparsity": 0.2, "op_types": "default"}, r"config_list\[0\]\.op_types: expected a list"),
    ({"sparsity": 0.2, "op_names": "abc"}, r"config_list\[0\]\.op_names: expected a list"),
    ({"sparsity": 0.2}, r"config_list\[0\]: expected \"op_types\" or \"op_names\""),
    ({"sparsty": 0.2, "op_types": ["Conv2d"]}, r"unknown key 'sparsty' \(did you mean 'sparsity'\?\)"),
    ({"op_types": ["Conv2d"]}, r"config_list\[0\]\.sparsity: required"),
    ({"sparsity": 0.2, "op_types": ["Conv2d"], "exclude": "yes"}, r"exclude: expected true or false"),
])
@pytest.mark.parametrize("pruner", ["level", "fpgm", "l1_filter", "l2_filter", "activation_apoz_rank_filter",
                                    "activation_mean_rank_filter", "taylor_fo_weight_filter"])
def test_bad_entries_are_refused_before_the_model_is_touched(cfg, pruner, entry, message):
    with pytest.raises(ValueError, match=message):
        aup.create_compressor(None, cfg(pruner, [entry]))


def test_error_names_the_entry_index():
    cl = [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"sparsity": 1.6, "op_types": ["Conv2d"]}]
    with pytest.raises(ValueError, match=r"^config_list\[1\]\.sparsity: expected a number in \(0, 1\), got 1.6$"):
        schemas.validate_config_list("torch", "pruning", "l1_filter", cl)


def test_filter_pruners_refuse_other_layer_types(cfg):
    with pytest.raises(ValueError, match=r"config_list\[0\]\.op_types: 'fpgm' can only prune Conv2d layers, got 'Linear'"):
        aup.create_compressor(Net(), cfg("fpgm", [{"sparsity": 0.5, "op_types": ["Linear"]}]))
    with pytest.raises(ValueError, match=r"op_types: .*got 'default'"):
        aup.create_compressor(Net(), cfg("l1_filter", [{"sparsity": 0.5, "op_types": ["default"]}]))
    # by name only: the model check catches it and names the entry and the layer
    with pytest.raises(ValueError, match=r"config_list\[0\]: 'fpgm' cannot compress 'fc1' \(Linear\): it prunes only Conv2d"):
        aup.create_compressor(Net(), cfg("fpgm", [{"sparsity": 0.5, "op_names": ["fc1"]}]))
    with pytest.raises(ValueError, match=r"'slim' cannot compress 'conv1' \(Conv2d\)"):
        aup.create_compressor(Net(), cfg("slim", [{"sparsity": 0.5, "op_names": ["conv1"]}]))
    with pytest.raises(ValueError, match=r"'level' cannot compress 'relu1' \(ReLU\): it has no weight"):
        aup.create_compressor(Net(), cfg("level", [{"sparsity": 0.5, "op_names": ["relu1"]}]))


def test_dependency_aware_needs_dummy_input(cfg):
    with pytest.raises(ValueError, match="dependency_aware=True needs dummy_input"):
        aup.create_compressor(Net(), cfg("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]),
                              dependency_aware=True)


def test_config_list_matching_nothing_is_an_error(cfg):
    with pytest.raises(ValueError, match="no layer of the model matches"):
        aup.create_compressor(Net(), cfg("fpgm", [{"sparsity": 0.5, "op_types": ["Conv2d"], "op_names": ["fc1"]}]))


def test_empty_and_non_list_config_lists(cfg):
    with pytest.raises(ValueError, match=r"config_list: expected at least one entry"):
        aup.create_compressor(Net(), cfg("level", []))
    with pytest.raises(ValueError, match=r"config_list: expected a list"):
        aup.create_compressor(Net(), cfg("level", {"sparsity": 0.5}))


def test_slim_needs_one_shared_sparsity():
    cl = [{"sparsity": 0.5, "op_names": ["bn1"]}, {"sparsity": 0.3, "op_types": ["BatchNorm2d"]}]
    with pytest.raises(ValueError, match=r"config_list\[1\]\.sparsity: 'slim' uses one sparsity"):
        schemas.validate_config_list("torch", "pruning", "slim", cl)


@pytest.mark.parametrize("name, entry, message", [
    ("naive", {"bad_key": 1, "op_types": ["default"]}, "unknown key 'bad_key'"),
    ("qat", {"quant_types": "abc", "quant_bits": 8, "op_types": ["default"]}, r"quant_types: expected a non-empty list"),
    ("qat", {"quant_types": ["weight"], "quant_bits": 34, "op_types": ["default"]}, r"quant_bits: expected an integer in \[1, 32\]"),
    ("dorefa", {"quant_types": ["weight"], "quant_bits": {"abc": 123}, "op_types": ["default"]}, r"quant_bits: expected"),
    ("bnn", {"quant_types": ["weight"], "quant_bits": 1, "op_types": "default"}, r"op_types: expected a list"),
    ("agp", {"initial_sparsity": 0.0, "final_sparsity": 0.8, "start_epoch": 3, "end_epoch": 1, "op_types": ["default"]},
     r"end_epoch: expected an integer >= start_epoch"),
    ("lottery_ticket", {"sparsity": 0.8, "prune_iterations": 0, "op_types": ["default"]}, r"prune_iterations: expected an integer >= 1"),
    ("amc", {"sparsity": 0.5, "op_types": ["Conv2d"]}, r"unknown key 'sparsity'"),
])
def test_other_compressors_schemas(name, entry, message):
    ctype = "quantization" if name in ("naive", "qat", "dorefa", "bnn") else "pruning"
    with pytest.raises(ValueError, match=message):
        schemas.validate_config_list("torch", ctype, name, [entry])


def test_check_value_for_search_space_bounds():
    assert schemas.check_value("fpgm", "sparsity", 0.1) is None
    assert "expected a number in (0, 1)" in schemas.check_value("fpgm", "sparsity", 1.0)
    assert schemas.check_value("agp", "final_sparsity", 1.0) is None
    assert schemas.check_value("lottery_ticket", "prune_iterations", 1) is None
    assert "integer" in schemas.check_value("lottery_ticket", "prune_iterations", 0.5)
    assert "unknown key" in schemas.check_value("level", "quant_bits", 8)
    assert schemas.check_value("qat", "quant_bits", {"weight": 8}) is None
    spec = schemas.entry_keys("fpgm")["sparsity"]
    assert (spec.low, spec.high, spec.low_open, spec.high_open) == (0.0, 1.0, True, True)


def test_every_registered_compressor_has_a_schema():
    from aup.compression.registry import COMPRESSORS

    for fw, types in COMPRESSORS.items():
        for ctype, compressors in types.items():
            for name in compressors:
                assert schemas.get_schema(fw, ctype, name) is not None
