"""PyTorch quantizers: naive (int8), qat (Jacob et al. 2018), dorefa (Zhou et al. 2016), bnn (Hubara et al. 2016).

All four fake-quantize during training without renaming parameters or replacing modules, and export
weights as real ``bits``-wide integers with scales.  ``attach_activation_quant`` re-attaches exported
activation quantization to a loaded model (used by ``artifact.load_compressed``).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["NaiveQuantizer", "QATQuantizer", "DoReFaQuantizer", "BNNQuantizer", "Quantizer",
           "attach_activation_quant"]

_LAZY = {
    "NaiveQuantizer": ".naive",
    "QATQuantizer": ".qat",
    "DoReFaQuantizer": ".dorefa",
    "BNNQuantizer": ".bnn",
    "Quantizer": ".base",
    "attach_activation_quant": ".hooks",
}


def __getattr__(name: str) -> Any:
    """Import on first use, so importing the package (e.g. for config checks) stays cheap."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
