"""Binarized Neural Networks (Hubara, Courbariaux et al. 2016, arXiv 1602.02830).

Weights and outputs become ``sign(x)`` with ``sign(0) = +1``.  Outputs use the paper's clipped
straight-through estimator (gradient cancelled where ``|x| > 1``); weights pass the gradient
straight through and, as in the paper (Algorithm 1), the real-valued weights are clipped to
``[-1, 1]`` after every optimizer step so they cannot grow where the sign no longer changes.
NNI 2.0's ``BNNQuantizer`` did not clip the weights; pass ``optimizer`` (or call ``step()`` after
each optimizer step) to get the clipping.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from aup.compression.torch.quantization.base import QuantLayer, Quantizer
from aup.compression.torch.quantization.primitives import BINARY_SPEC, QuantSpec, binarize

__all__ = ["BNNQuantizer"]


class BNNQuantizer(Quantizer):
    """Binary (+-1) weights and outputs (``quant_types`` from weight/output, ``quant_bits`` 1)."""

    compressor_name: ClassVar[str] = "bnn"

    def quantize_weight(self, layer: QuantLayer, weight: torch.Tensor, *, export: bool = False
                        ) -> tuple[torch.Tensor, QuantSpec]:
        return binarize(weight, clip=False)

    def quantize_activation(self, layer: QuantLayer, kind: str, x: torch.Tensor) -> torch.Tensor:
        return binarize(x, clip=True)[0]

    def activation_spec(self, layer: QuantLayer, kind: str) -> dict[str, Any] | None:
        return {**BINARY_SPEC.as_dict(), "mode": "sign"}

    def after_optimizer_step(self) -> None:
        """Clip the real-valued weights of binarised layers to [-1, 1] (Hubara et al., Alg. 1)."""
        with torch.no_grad():
            for layer in self.layers:
                if "weight" in layer.quant_types:
                    getattr(layer.module, layer.param).clamp_(-1.0, 1.0)
