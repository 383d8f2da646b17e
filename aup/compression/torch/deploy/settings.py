"""The deployable artifact: ONNX export, real int8 through ONNX Runtime, and measuring what ships.

This module holds the experiment's ``compression.deploy`` settings and re-exports the pieces, each in
its own module:

* :mod:`.onnx_export` -- :func:`export_onnx` (ONNX, tied weights stored once), optionally int8;
* :mod:`.ort_quantize` -- static QDQ int8 via ``onnxruntime.quantization`` and int8-weight-only files;
* :mod:`.ort_runtime` -- :func:`import_ort` (with its cache dir), :func:`load_deployed`,
  :func:`ort_latency_ms`, :func:`agreement`;
* :mod:`.calibration` -- :class:`CalibrationRecorder`, the batches static quantization calibrates on.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from aup.compression.torch.deploy.calibration import CalibrationRecorder
from aup.compression.torch.deploy.onnx_export import OPSET, export_onnx
from aup.compression.torch.deploy.runtime import (DeployedModel, agreement, import_ort, load_deployed, onnx_input_names, ort_available,
                          ort_latency_ms)

__all__ = ["DeploySettings", "CalibrationRecorder", "DeployedModel", "ort_available", "import_ort", "export_onnx",
           "load_deployed", "ort_latency_ms", "agreement", "onnx_input_names", "clean_copy", "OPSET"]

FORMATS = ("onnx",)
INT8_MODES = ("static", "none")


@dataclass(frozen=True)
class DeploySettings:
    """What the experiment's ``compression.deploy`` asks for: a format and an int8 mode."""

    format: str = "onnx"
    int8: str = "static"  # "static": QDQ int8 of the quantized (or, without a quantizer, all) conv/linear layers
    per_channel: bool = True

    @classmethod
    def parse(cls, value: Any, where: str = "deploy") -> "DeploySettings | None":
        """``True``/``{}`` -> defaults, ``False``/``None`` -> no deployment, a dict -> checked settings."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object such as {{\"format\": \"onnx\", \"int8\": \"static\"}}, "
                             f"got {value!r}")
        unknown = sorted(set(value) - {"format", "int8", "per_channel"})
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown key (known: format, int8, per_channel)")
        fmt = value.get("format", "onnx")
        if fmt not in FORMATS:
            raise ValueError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        int8 = value.get("int8", "static")
        int8 = "none" if int8 in (None, False) else int8
        if int8 not in INT8_MODES:
            raise ValueError(f"{where}.int8: expected \"static\" or \"none\" (dynamic int8 is slower than fp32 on "
                             f"convolutions), got {int8!r}")
        per_channel = value.get("per_channel", True)
        if not isinstance(per_channel, bool):
            raise ValueError(f"{where}.per_channel: expected true or false, got {per_channel!r}")
        return cls(fmt, int8, per_channel)

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "int8": self.int8, "per_channel": self.per_channel}


def clean_copy(model: nn.Module) -> nn.Module:
    """A deep copy without aup's mask and recording pre-hooks (so it can be shrunk and traced)."""
    from aup.compression.torch.masking import ForwardMask

    clone = copy.deepcopy(model)
    for module in clone.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, (ForwardMask, CalibrationRecorder)):
                del module._forward_pre_hooks[key]
    return clone
