"""DoReFa-Net weight quantizer (Zhou et al. 2016, arXiv 1606.06160).

Weights only, k bits: ``2 * round_k(tanh(w) / (2 max|tanh w|) + 0.5) - 1``.  Unlike NNI 2.0, which
quantized a detached copy and passed the gradient straight to ``w``, the gradient here flows through
tanh and the normalisation and only the rounding uses the straight-through estimator, as in the
paper.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from aup.compression.torch.quantization.base import QuantLayer, Quantizer
from aup.compression.torch.quantization.primitives import QuantSpec, dorefa_weight

__all__ = ["DoReFaQuantizer"]


class DoReFaQuantizer(Quantizer):
    """k-bit DoReFa weights (``quant_types: [weight]``, ``quant_bits`` 1..31)."""

    compressor_name: ClassVar[str] = "dorefa"

    def quantize_weight(self, layer: QuantLayer, weight: torch.Tensor, *, export: bool = False
                        ) -> tuple[torch.Tensor, QuantSpec]:
        return dorefa_weight(weight, layer.bits["weight"])
