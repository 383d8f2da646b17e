"""config_list validation for ``"framework": "tensorflow"``: one line naming the entry and key.

Model-free checks run before TensorFlow is imported (and in the experiment validator, which must stay
TensorFlow-free); checks against the Keras model list the model's layer names.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import aup
from aup.compression.search_space import CompressionJobConfigBuilder
from keras_helpers import level_config, needs_keras, small_cnn

EXAMPLES = Path(__file__).resolve().parents[3] / "experiments" / "tensorflow"


@pytest.mark.parametrize("entry, message", [
    ({"sparsity": 1.6, "op_types": ["default"]}, r"config_list\[0\]\.sparsity: expected a number in \(0, 1\), got 1\.6"),
    ({"sparsity": "0.2", "op_types": ["default"]}, r"config_list\[0\]\.sparsity: expected a number in \(0, 1\), got '0\.2'"),
    ({"sparsity": 0.5, "op_types": "default"}, r"config_list\[0\]\.op_types: expected a list of Keras layer class names"),
    ({"sparsity": 0.5, "op_names": "conv1"}, r"config_list\[0\]\.op_names: expected a list of Keras layer names"),
    ({"sparsity": 0.5}, r"config_list\[0\]: expected \"op_types\" or \"op_names\""),
    ({"sparsty": 0.5, "op_types": ["Dense"]}, r"unknown key 'sparsty' \(did you mean 'sparsity'\?\) for 'level'"),
    ({"op_types": ["Dense"]}, r"config_list\[0\]\.sparsity: required by 'level'"),
])
def test_schema_errors_before_the_model_is_touched(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aup.create_compressor(None, level_config([entry]))


def test_validation_and_search_space_do_not_import_tensorflow() -> None:
    code = (
        "import sys, json, aup\n"
        "from aup.config import validate_experiment\n"
        "from aup.compression.search_space import check_compression\n"
        f"exp = json.load(open({str(EXAMPLES / 'exp_auto_level.json')!r}))\n"
        "assert check_compression(exp['compression']) == []\n"
        "try:\n"
        "    aup.create_compressor(None, {'framework': 'tf', 'type': 'pruning', 'compressor': 'level',\n"
        "                                 'config_list': [{'sparsity': 2, 'op_types': ['default']}]})\n"
        "except ValueError as e:\n"
        "    assert 'sparsity' in str(e)\n"
        "bad = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]\n"
        "print('imported:', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "imported: []"


def test_tensorflow_experiments_search_per_layer_sparsity_like_torch() -> None:
    exp = json.loads((EXAMPLES / "exp_auto_level.json").read_text())
    builder = CompressionJobConfigBuilder(exp["compression"])
    names = ["sparsity (conv1)", "sparsity (conv2)", "sparsity (fc1)", "sparsity (fc2)"]
    assert [d.name for d in builder.space] == names
    job = builder.build({name: 0.1 * (i + 3) for i, name in enumerate(names)})
    assert job["compression_framework"] == "tensorflow" and job["compressor"] == "level"
    assert job["config_list"] == [{"sparsity": pytest.approx(0.1 * (i + 3)), "op_names": [layer]}
                                  for i, layer in enumerate(["conv1", "conv2", "fc1", "fc2"])]
    one_time = CompressionJobConfigBuilder(json.loads((EXAMPLES / "exp_level.json").read_text())["compression"])
    assert one_time.one_time


def test_out_of_range_search_is_refused_before_any_trial() -> None:
    section = {"framework": "tensorflow", "type": "pruning", "compressor": "level",
               "config_list": [{"sparsity": {"type": "float", "range": [0.1, 1.0]}, "op_types": ["Dense"]}]}
    problems = __import__("aup.compression.search_space", fromlist=["check_compression"]).check_compression(section)
    assert problems == ["compression.config_list[0].sparsity: range [0.1, 1.0] reaches 1.0: "
                        "expected a number in (0, 1), got 1.0"]


@pytest.mark.slow
@needs_keras
def test_errors_against_the_keras_model_name_the_layers(keras: Any) -> None:
    model = small_cnn(keras)
    with pytest.raises(ValueError, match=r"^config_list\[0\]\.op_names: no layer named 'conv3' in the model "
                                         r"\(did you mean 'conv2'\?\); layers: conv1, conv2, flatten, fc$"):
        aup.create_compressor(model, level_config([{"sparsity": 0.5, "op_names": ["conv3"]}]))
    with pytest.raises(ValueError, match=r"'level' cannot compress 'flatten' \(Flatten\): it has no kernel to prune"):
        aup.create_compressor(model, level_config([{"sparsity": 0.5, "op_names": ["flatten"]}]))
    with pytest.warns(UserWarning, match="the model has no 'LSTM' layer"), \
            pytest.raises(ValueError, match=r"no layer of the model matches any entry for 'level'; layer types "
                                            r"present: Conv2D, Dense, Flatten"):
        aup.create_compressor(model, level_config([{"sparsity": 0.5, "op_types": ["LSTM"]}]))
    with pytest.raises(ValueError, match=r"^model: expected a keras.Model .*got dict"):
        aup.create_compressor({}, level_config([{"sparsity": 0.5, "op_types": ["default"]}]))
    unbuilt = keras.Sequential([keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="the Keras model is not built yet"):
        aup.create_compressor(unbuilt, level_config([{"sparsity": 0.5, "op_types": ["default"]}]))
