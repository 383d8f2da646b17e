"""``aup.compression.config_match``: the config_list rules torch and Keras share, on plain objects.

Framework-free on purpose: the rules (last matching entry wins, ``exclude``, unknown ``op_names``,
refusals, nothing selected) are one implementation; the adapters only list layers and test types.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from aup.compression import config_match
from aup.errors import FieldError

LAYERS = [("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc", "Linear")]


def by_type(layer: str, op_types: list[str]) -> bool:
    return "default" in op_types or layer.lower() in {t.lower() for t in op_types}


def test_last_matching_entry_wins_and_exclude_leaves_a_layer_alone() -> None:
    config = [{"sparsity": 0.5, "op_types": ["default"]}, {"sparsity": 0.8, "op_names": ["conv2"]},
              {"exclude": True, "op_types": ["Linear"]}]
    picked = config_match.select(LAYERS, config, by_type)
    assert [(name, index) for name, _, index, _ in picked] == [("conv1", 0), ("conv2", 1)]


def test_errors_read_the_same_for_both_frameworks() -> None:
    error = config_match.unknown_op_name(["conv1", "conv2"], [{"op_names": ["conv3"]}], what="layer")
    assert isinstance(error, FieldError) and str(error) == (
        "config_list[0].op_names: no layer named 'conv3' in the model (did you mean 'conv2'?); layers: conv1, conv2")
    refused = config_match.refusal("fpgm", "fc", "Linear", 2, "not a convolution")
    assert str(refused) == "config_list[2]: 'fpgm' cannot compress 'fc' (Linear): not a convolution"
    assert config_match.refusal("fpgm", "fc", "Linear", 2, None) is None
    assert str(config_match.nothing_selected("level", ["ReLU", "Linear", "ReLU"])) == (
        "config_list: no layer of the model matches any entry for 'level'; layer types present: Linear, ReLU")


def test_an_op_type_the_model_lacks_is_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"config_list\[0\].op_types: the model has no 'Conv1d' layer"):
        config_match.warn_unmatched_types({"conv2d"}, [{"op_types": ["Conv1d", "default"]}])


def test_imports_neither_torch_nor_keras() -> None:
    code = "import sys, aup.compression.config_match; print('torch' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_bit_widths_are_checked_with_the_schema_before_any_trial() -> None:
    """The quantizers' "a bit width for every quant type" rule runs in the one torch-free check the
    experiment validator uses, not only when the quantizer is built inside a trial."""
    from aup.compression import schemas

    config = [{"quant_types": ["weight", "output"], "quant_bits": {"weight": 8}, "op_types": ["Conv2d"]}]
    with pytest.raises(FieldError) as caught:
        schemas.validate_config_list("torch", "quantization", "qat", config)
    assert str(caught.value).startswith("config_list[0].quant_bits: no bit width for 'output'")
    schemas.validate_config_list("torch", "quantization", "qat", [dict(config[0], quant_bits=8)])
