"""An edited artifact's graph cannot reach Python globals or call anything but pure tensor operations.

Each case edits the JSON description of a real artifact the way an attacker would and checks that
loading (and calling) the model refuses the file before the payload (``touch`` of a marker file) runs.
The first case is issue 21's reproduction: ``handle_torch_function`` calls its first argument
through ``Tensor.__torch_function__``, a route around the refusal of underscore attributes.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from aup.compression.torch.artifact.files import load_compressed, save_artifact
from artifact_edit import rewrite_description  # noqa: E402


def _saved(tmp_path):
    path = tmp_path / "m.aup"
    save_artifact(path, nn.Sequential(nn.Linear(4, 4)), example_input=torch.randn(1, 4))
    return path



def _node(op, name, target, *args, **kwargs):
    return {"op": op, "name": name, "target": target, "args": _value(args), "kwargs": _value(kwargs)}


def _value(v):
    if isinstance(v, tuple):
        return {"__t": "tuple", "v": [_value(x) for x in v]}
    if isinstance(v, dict) and "__t" in v:
        return v
    if isinstance(v, dict):
        return {"__t": "dict", "v": [[k, _value(x)] for k, x in v.items()]}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _ref(name):
    return {"__t": "node", "v": name}


def _graph_before_output(doc, nodes, result):
    """Insert ``nodes`` before the output node and make ``result`` the model's output."""
    out = doc["graph"][-1]
    doc["graph"][-1:] = nodes
    out["args"] = _value((_ref(result),))
    doc["graph"].append(out)


def _attack_handle_torch_function(doc, marker):
    doc["structure"]["attrs"]["gfn"] = {"__t": "fn", "v": "getattr"}
    doc["structure"]["attrs"]["rfn"] = {"__t": "fn", "v": "torch.nn.functional.relu"}
    htf = "torch.nn.functional.handle_torch_function"
    x = _ref("input_1")
    _graph_before_output(doc, [
        _node("get_attr", "gfn", "gfn"),
        _node("get_attr", "rfn", "rfn"),
        _node("call_function", "glob", htf, _ref("gfn"), (x,), _ref("rfn"), "__globals__"),
        _node("call_function", "torch_mod", "_operator.getitem", _ref("glob"), "torch"),
        _node("call_function", "os_mod", "getattr", _ref("torch_mod"), "os"),
        _node("call_function", "system", "getattr", _ref("os_mod"), "system"),
        _node("call_function", "ran", htf, _ref("system"), (x,), f"touch {marker}"),
    ], "ran")


def _attack_fn_argument(doc, marker):
    """``getattr`` handed to a function as data (no get_attr node)."""
    x = _ref("input_1")
    gfn = {"__t": "fn", "v": "getattr"}
    rfn = {"__t": "fn", "v": "torch.nn.functional.relu"}
    htf = "torch.nn.functional.handle_torch_function"
    doc["graph"][-1:-1] = [
        {"op": "call_function", "name": "glob", "target": htf,
         "args": {"__t": "tuple", "v": [gfn, _value((x,)), rfn, "__globals__"]}, "kwargs": _value({})}]


def _attack_max_key(doc, marker):
    """``max(..., key=f)`` calls ``f``: here a bound tensor method reached through getattr."""
    doc["structure"]["attrs"]["rfn"] = {"__t": "fn", "v": "torch.nn.functional.relu"}
    _graph_before_output(doc, [
        _node("get_attr", "w", "0.weight"),
        _node("get_attr", "rfn", "rfn"),
        _node("call_function", "hook", "getattr", _ref("w"), "register_hook"),
        _node("call_function", "ran", "max", [_ref("rfn")], key=_ref("hook")),
    ], "input_1")


def _attack_kwarg_name(doc, marker):
    """fx writes keyword names into the Python source it generates."""
    x = _ref("input_1")
    key = f"dim=0, _=__import__('os').system('touch {marker}'), out"
    _graph_before_output(doc, [_node("call_function", "s", "torch.relu", x, **{key: None})], "s")


def _attack_computed_getattr(doc, marker):
    """An attribute name computed by the graph (not a literal) so that it is not checked."""
    x = _ref("input_1")
    _graph_before_output(doc, [
        _node("call_function", "name", "_operator.add", "__class", "__"),
        _node("call_function", "cls", "getattr", x, _ref("name")),
    ], "input_1")


def _attack_get_attr_module(doc, marker):
    """get_attr of a submodule hands the module object to methods (``apply`` calls its argument)."""
    x = _ref("input_1")
    _graph_before_output(doc, [
        _node("get_attr", "sub", "0"),
        _node("call_method", "ran", "apply", _ref("sub"), {"__t": "fn", "v": "torch.nn.functional.relu"}),
    ], "input_1")


def _attack_from_file(doc, marker):
    """torch.from_file reads (and with shared=True maps) any file: not a pure tensor operation."""
    _graph_before_output(doc, [_node("call_function", "f", "torch.from_file", "/etc/hostname", False, 4)], "f")


def _attack_tensor_method_hook(doc, marker):
    x = _ref("input_1")
    _graph_before_output(doc, [
        _node("call_method", "h", "register_post_accumulate_grad_hook", x, {"__t": "fn", "v": "getattr"}),
    ], "input_1")


def _attack_import_side_effect(doc, marker):
    """A class reference that makes the loader import a module whose import runs a program."""
    doc["structure"]["children"]["0"]["cls"] = "torch.utils.model_dump.__main__:Linear"


ATTACKS = {"import_side_effect": _attack_import_side_effect, "handle_torch_function": _attack_handle_torch_function, "fn_argument": _attack_fn_argument,
           "max_key": _attack_max_key, "kwarg_name": _attack_kwarg_name,
           "computed_getattr": _attack_computed_getattr, "get_attr_module": _attack_get_attr_module,
           "from_file": _attack_from_file, "tensor_method_hook": _attack_tensor_method_hook}


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_edited_graph_is_refused_before_anything_runs(tmp_path, case):
    path, marker = _saved(tmp_path), str(tmp_path / "pwned")
    rewrite_description(path, lambda doc: ATTACKS[case](doc, marker))
    with pytest.raises(ValueError, match=str(path)):
        model = load_compressed(path)
        model(torch.randn(1, 4))
    assert not os.path.exists(marker)


def test_the_attack_helpers_produce_loadable_graphs(tmp_path):
    """A harmless edit made with the same helpers loads and runs (so the refusals are about the payloads)."""
    path = _saved(tmp_path)
    x = _ref("input_1")
    rewrite_description(path, lambda doc: _graph_before_output(doc, [
        _node("call_function", "r", "torch.nn.functional.relu", x),
        _node("call_function", "s", "getattr", _ref("r"), "shape"),
        _node("call_method", "v", "view", _ref("r"), _ref("s")),
    ], "v"))
    out = load_compressed(path)(torch.full((1, 4), -1.0))
    assert torch.equal(out, torch.zeros(1, 4))
