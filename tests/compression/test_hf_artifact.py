"""Hugging Face models are stored as Hugging Face stores them: class, config, weights (issue 21 item 8).

Why: transformers 5.25's Llama attention holds ``_kernel_funcs`` (functions), which a module-tree
description cannot store without pickle; config + weights do not depend on such internals.  Pruned
models keep working: the per-layer sizes a shrink changed (head counts, ``in_features``...) are
stored next to the config and applied to the class built from it, so layers pruned differently
(which no single config expresses) reload exactly.
"""
from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

from aup.compression.torch.artifact.files import load_compressed, save_artifact
from aup.compression.torch.pruners.transformer import TransformerPruner
from test_transformers import HF_MODELS, _bert, _eval, _ids, _llama
from artifact_edit import rewrite_description  # noqa: E402

pytestmark = pytest.mark.slow  # importing transformers costs seconds


def _doc(path) -> dict:
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    return json.loads(header["__metadata__"]["aup"])



def _same_model(loaded: nn.Module, model: nn.Module, x) -> None:
    assert all(torch.equal(a, b) for a, b in zip(_eval(loaded, x), _eval(model, x)))
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_hugging_face_models_are_stored_as_class_config_and_weights(tmp_path, name):
    build, inputs = HF_MODELS[name]
    model, x = build(), inputs()
    info = save_artifact(tmp_path / "m.aup", model, example_input=x)
    doc = _doc(tmp_path / "m.aup")
    assert info["kind"] == "hf" and "children" not in doc["structure"]
    assert doc["structure"]["attrs"] == {}  # an unpruned model is exactly what its class builds
    _same_model(load_compressed(tmp_path / "m.aup"), model, x)


@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_pruned_hugging_face_models_reload_with_their_shrunk_sizes(tmp_path, name):
    build, inputs = HF_MODELS[name]
    model, x = build(), inputs()
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.5}])
    pruner.compress()
    pruner.apply_speedup(x)
    info = save_artifact(tmp_path / "m.aup", model, example_input=x)
    assert info["kind"] == "hf" and info["max_abs_diff"] == 0.0
    _same_model(load_compressed(tmp_path / "m.aup"), model, x)


@pytest.mark.parametrize("build, layer", [(_bert, "bert.encoder.layer.0"), (_llama, "model.layers.1")])
def test_layers_pruned_differently_reload_exactly(tmp_path, build, layer):
    """Only one layer shrunk: the shared config cannot say so, the stored per-layer sizes do."""
    model, x = build(), _ids()
    attention = next(n for n, _ in model.named_modules() if n.startswith(layer) and n.endswith(("self", "self_attn")))
    mlp = layer if "bert" in layer else f"{layer}.mlp"
    pruner = TransformerPruner(model, [{"head_sparsity": 0.5, "mlp_sparsity": 0.75, "op_names": [attention, mlp]}])
    pruner.compress()
    pruner.apply_speedup(x)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert len({s for k, s in shapes.items() if k.endswith(("query.weight", "q_proj.weight"))}) == 2
    info = save_artifact(tmp_path / "m.aup", model, example_input=x)
    assert info["kind"] == "hf"
    loaded = load_compressed(tmp_path / "m.aup")
    _same_model(loaded, model, x)
    other = _ids(7)  # another sequence length through the class's own forward
    assert torch.equal(_eval(loaded, other)[0], _eval(model, other)[0])


def test_tied_weights_are_tied_again(tmp_path):
    build, inputs = HF_MODELS["gpt2"]
    model, x = build(), inputs()
    save_artifact(tmp_path / "m.aup", model, example_input=x)
    loaded = load_compressed(tmp_path / "m.aup")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_a_model_its_class_does_not_build_falls_back_to_the_module_tree(tmp_path):
    model, x = _bert(), _ids()
    model.bert.pooler.activation = nn.ReLU()  # replaced by hand: not what BertForSequenceClassification builds
    info = save_artifact(tmp_path / "m.aup", model, example_input=x)
    assert info["kind"] == "tree"
    assert isinstance(load_compressed(tmp_path / "m.aup").bert.pooler.activation, nn.ReLU)


EDITS = {
    "string_attr": lambda s: s["attrs"].setdefault("bert.encoder", {}).update(name="x"),
    "private_attr": lambda s: s["attrs"].setdefault("bert.encoder", {}).update(_attn_implementation=1),
    "internal_attr": lambda s: s["attrs"].setdefault("bert.encoder", {}).update(training=True, forward=1),
    "unknown_module": lambda s: s["attrs"].setdefault("bert.nowhere", {}).update(x=1),
    "not_a_model_class": lambda s: s.update(cls="torch.nn.modules.linear:Linear"),
    "missing_weight": lambda s: s["state"].pop("classifier.bias"),
    "weight_path": lambda s: s["state"].update({"bert.__class__.x": "classifier.bias"}),
}


def _huge_vocabulary(doc) -> None:
    data = doc["configs"][doc["structure"]["config"]]["data"]["v"]
    next(pair for pair in data if pair[0] == "vocab_size")[1] = 1 << 40


@pytest.mark.parametrize("case", sorted(EDITS) + ["hub_attention", "huge_vocabulary"])
def test_an_edited_hugging_face_description_is_refused(tmp_path, case):
    model, x = _bert(), _ids()
    path = tmp_path / "m.aup"
    save_artifact(path, model, example_input=x)

    def edit(doc):
        if case == "hub_attention":  # a kernel repository name would make transformers download code
            doc["configs"][doc["structure"]["config"]]["attn"] = "kernels-community/flash-attn"
        elif case == "huge_vocabulary":  # a memory bomb through the config: refused before allocating
            _huge_vocabulary(doc)
        else:
            EDITS[case](doc["structure"])

    rewrite_description(path, edit)
    with pytest.raises(ValueError, match=str(path)):
        load_compressed(path)
