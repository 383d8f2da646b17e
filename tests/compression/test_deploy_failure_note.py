"""A quantized trial whose ONNX export fails says why, not "install onnxruntime", when ORT is installed."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")

import aup  # noqa: E402
from aup.compression.torch import base as base_module  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.deploy import settings as deploy  # noqa: E402

NAIVE = [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}]


def test_failed_export_note_gives_the_reason(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("operator Foo has no ONNX form")

    monkeypatch.setattr(deploy, "export_onnx", refuse)
    monkeypatch.setenv("AUP_CHANNEL", str(tmp_path / "channel.jsonl"))
    model = zoo.DigitsCNN()
    quantizer = aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
                                              "compressor": "naive", "config_list": NAIVE})
    quantizer.compress()
    model(torch.rand(4, 1, 8, 8))
    base_module.report_at_trial_end()
    out = capsys.readouterr().out
    assert "export to ONNX failed: RuntimeError: operator Foo has no ONNX form" in out
    assert "install aup[deploy]" not in out
