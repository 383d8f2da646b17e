"""A damaged or hostile artifact fails with aup's one-line error naming the file, before allocating.

Issue 21: a 15 kB artifact whose sparse tensor declared the shape [268435456, 8] made the loader
allocate 8.4 GB (``torch.zeros(numel)``) before looking at the stored bitmap; a truncated file
raised safetensors' own ``SafetensorError``.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from aup.compression.torch.artifact.files import load_compressed, save_artifact
from artifact_edit import rewrite_description  # noqa: E402



def _saved(tmp_path, quant: bool = False):
    """Linear(64, 64) with 90 % zeros: its weight is stored sparse (or sparse and 4-bit with ``quant``)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight[torch.rand(64, 64) < 0.9] = 0.0
    path = tmp_path / "m.aup"
    spec = {"0.weight": {"bits": 4, "scale": 0.05, "zero_point": 8}} if quant else None
    save_artifact(path, model, example_input=torch.randn(2, 64), quant=spec)
    return path


def _one_line_error_naming(path, exc_info) -> str:
    message = str(exc_info.value)
    assert str(path) in message and "\n" not in message
    return message


@pytest.mark.slow  # a child process under a memory limit
def test_a_huge_declared_shape_fails_cleanly_under_a_memory_limit(tmp_path):
    """Issue 21's reproduction, in a child limited to ~1.5 GB more address space than it has after imports."""
    path = _saved(tmp_path)
    rewrite_description(path, lambda doc: doc["tensors"]["0.weight"].update(shape=[268435456, 8]))
    assert doc_encoding(path) == "sparse" and os.path.getsize(path) < 64 * 1024
    script = textwrap.dedent(f"""
        import resource, sys
        from aup.compression.torch.artifact.files import load_compressed
        with open("/proc/self/status") as fh:
            vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
        limit = vm + 1536 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            load_compressed({str(path)!r})
        except ValueError as exc:
            print("ERROR", exc)
            sys.exit(3)
        print("LOADED")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1, (done.stdout, done.stderr[-2000:])
    assert str(path) in lines[0] and "bitmap" in lines[0] and "allocate" not in lines[0]


def doc_encoding(path) -> str:
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    return json.loads(header["__metadata__"]["aup"])["tensors"]["0.weight"]["enc"]


# edits of one tensor's encoding, each declaring more (or other) than the file stores
TAMPERED = {
    "sparse_shape": (False, lambda enc: enc.update(shape=[4096, 4096])),
    "sparse_nnz": (False, lambda enc: enc.update(values={"__tensor__": "0.bias#data"})),
    "dense_shape": (False, lambda enc: enc.update(enc="dense", data=enc["values"], shape=[4096, 4096])),
    "negative_shape": (False, lambda enc: enc.update(shape=[-64, -64])),
    "shape_not_ints": (False, lambda enc: enc.update(shape=["64", 64])),
    "quant_shape": (True, lambda enc: enc.update(shape=[4096, 4096])),
    "quant_bits": (True, lambda enc: enc.update(bits=64)),
    "quant_codes": (True, lambda enc: enc.update(enc="quant", shape=[4096, 64])),
    "quant_channels": (True, lambda enc: enc.update(per_channel=True, scale=enc["bitmap"])),
    "quant_dtype": (True, lambda enc: enc.update(dtype="load")),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_declared_sizes_are_checked_against_the_stored_bytes(tmp_path, case):
    quant, edit = TAMPERED[case]
    path = _saved(tmp_path, quant=quant)
    assert doc_encoding(path) == ("sparse_quant" if quant else "sparse")
    rewrite_description(path, lambda doc: edit(doc["tensors"]["0.weight"]))
    with pytest.raises(ValueError) as exc_info:
        load_compressed(path)
    message = _one_line_error_naming(path, exc_info)
    assert "'0.weight'" in message


def _cut_points(path) -> dict[str, int]:
    size = os.path.getsize(path)
    header = struct.unpack("<Q", path.read_bytes()[:8])[0]
    return {"empty": 0, "in_length": 5, "after_length": 8, "in_header": 8 + header // 2,
            "after_header": 8 + header, "in_tensors": 8 + header + (size - 8 - header) // 2, "last_byte": size - 1}


@pytest.mark.parametrize("cut", ["empty", "in_length", "after_length", "in_header", "after_header", "in_tensors",
                                 "last_byte"])
def test_a_truncated_artifact_is_aups_one_line_error(tmp_path, cut):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:_cut_points(path)[cut]])
    with pytest.raises(ValueError) as exc_info:
        load_compressed(path)
    assert type(exc_info.value).__module__.startswith("aup.")
    message = _one_line_error_naming(path, exc_info)
    assert "truncated" in message.replace(str(path), "")


def test_the_untampered_file_loads(tmp_path):
    """The helpers keep a valid file, so the failures above are about the edits."""
    for quant in (False, True):
        path = _saved(tmp_path, quant=quant)
        rewrite_description(path, lambda doc: None)
        assert isinstance(load_compressed(path), nn.Module)
