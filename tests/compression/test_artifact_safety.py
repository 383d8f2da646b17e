"""Loading an untrusted file never runs code: pickles are refused, the JSON description is allowlisted."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from aup.compression.torch import zoo
from aup.compression.torch.artifact.files import UnsafeArtifact, load_compressed, read_artifact, save_artifact
from aup.compression.torch.artifact.storage import encode_tensor
from artifact_edit import rewrite_description  # noqa: E402


class _WritesMarker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _marker(tmp_path) -> str:
    return str(tmp_path / "pwned")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = _marker(tmp_path)
    path = tmp_path / "evil.pt"
    payload = {"format": "aup-compressed", "version": 1, "module": _WritesMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    for load in (load_compressed, read_artifact):
        with pytest.raises(ValueError, match="refused because loading it could run code"):
            load(path)
    assert not os.path.exists(marker)


def test_a_file_that_is_not_an_artifact_is_refused(tmp_path):
    marker = _marker(tmp_path)
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(_WritesMarker(marker)))
    with pytest.raises(ValueError, match="not an aup compressed-model artifact"):
        load_compressed(path)
    (tmp_path / "text.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an aup compressed-model artifact"):
        load_compressed(tmp_path / "text.txt")
    assert not os.path.exists(marker)


def test_trust_is_the_explicit_gate_for_legacy_pickles(tmp_path):
    """The same malicious legacy file runs its payload once the caller says trust=True (so the gate is real)."""
    marker = _marker(tmp_path)
    torch.save({"format": "aup-compressed", "version": 1, "module": _WritesMarker(marker)}, tmp_path / "e.pt")
    with pytest.raises(Exception):
        load_compressed(tmp_path / "e.pt", trust=True)
    assert os.path.exists(marker)


def test_a_legacy_artifact_loads_with_trust(tmp_path):
    torch.manual_seed(0)
    live = nn.Linear(3, 2)
    legacy = {"format": "aup-compressed", "version": 1, "kind": "pickle", "module": nn.Linear(3, 2, device="meta"),
              "tensors": {k: encode_tensor(v) for k, v in live.state_dict().items()}, "meta": {"compressor": "x"}}
    torch.save(legacy, tmp_path / "old.aup")
    with pytest.raises(ValueError, match="trust=True"):
        load_compressed(tmp_path / "old.aup")
    loaded = load_compressed(tmp_path / "old.aup", trust=True)
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x), live(x)) and loaded.aup_meta["compressor"] == "x"


# ----------------------------------------------------------------------------- tampered descriptions



def _saved(tmp_path):
    model = zoo.DigitsCNN().eval()
    path = tmp_path / "m.aup"
    save_artifact(path, model, example_input=torch.randn(1, 1, 8, 8))
    return path


def _first(doc, op):
    return next(node for node in doc["graph"] if node["op"] == op)


@pytest.mark.parametrize("case", ["function", "torch_load", "method", "class", "class_dunder", "node_name",
                                  "input_name", "attr_name", "getattr_dunder", "config"])
def test_tampered_description_is_refused_without_running(tmp_path, case):
    path = _saved(tmp_path)
    marker = _marker(tmp_path)

    def edit(doc):
        if case == "function":
            _first(doc, "call_function")["target"] = "os.system"
        elif case == "torch_load":
            _first(doc, "call_function")["target"] = "torch.load"
        elif case == "method":
            node = _first(doc, "call_module")
            node.update(op="call_method", target="register_hook")
        elif case == "class":
            doc["structure"]["children"]["conv1"]["cls"] = "subprocess:Popen"
        elif case == "class_dunder":
            doc["structure"]["children"]["conv1"]["cls"] = "torch.nn:Linear.__init__.__globals__"
        elif case == "node_name":
            _first(doc, "call_module")["name"] = f"x=__import__('os').system('touch {marker}')"
        elif case == "input_name":
            _first(doc, "placeholder")["target"] = f"x=__import__('os').system('touch {marker}')"
        elif case == "attr_name":
            doc["structure"]["children"]["conv1"]["attrs"]["__class__"] = 1
        elif case == "getattr_dunder":
            node = _first(doc, "call_function")
            node.update(target="getattr", args={"__t": "tuple", "v": [{"__t": "node", "v": "x"}, "__class__"]})
        elif case == "config":
            doc["structure"]["children"]["conv1"]["attrs"]["padding"] = {"__t": "pickle", "v": "gASV"}

    rewrite_description(path, edit)
    with pytest.raises(ValueError):
        model = load_compressed(path)
        model(torch.randn(1, 1, 8, 8))
    assert not os.path.exists(marker)


def test_untouched_rewrite_still_loads(tmp_path):
    """The tampering helper itself keeps a valid file (so the refusals above are about the edits)."""
    path = _saved(tmp_path)
    rewrite_description(path, lambda doc: None)
    assert isinstance(load_compressed(path), nn.Module)


def test_a_model_class_from_a_module_not_imported_is_refused(tmp_path):
    path = _saved(tmp_path)
    rewrite_description(path, lambda doc: doc["structure"]["children"]["conv1"].update(cls="antigravity:Nothing"))
    with pytest.raises(ValueError, match="not imported"):
        load_compressed(path)
