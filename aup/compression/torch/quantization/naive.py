"""Naive quantizer: symmetric per-tensor 8-bit weights.

Same scheme as NNI 2.0's ``NaiveQuantizer`` (scale ``max|w| / 127``, a running maximum of that scale
across calls so it never shrinks), except that values are *rounded to nearest*; NNI cast with
``.type(torch.int8)``, which truncates toward zero and costs up to one quantization step.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from aup.compression.torch.quantization.base import QuantLayer, Quantizer
from aup.compression.torch.quantization.primitives import QuantSpec, fake_quant_symmetric, symmetric_scale

__all__ = ["NaiveQuantizer"]


class NaiveQuantizer(Quantizer):
    """Symmetric int8 fake quantization of weights, rounding to nearest (``quant_types: [weight]``)."""

    compressor_name: ClassVar[str] = "naive"

    def __init__(self, model: torch.nn.Module, config_list: list[dict], optimizer: torch.optim.Optimizer | None = None,
                 dummy_input: object = None) -> None:
        self.layer_scale: dict[str, float] = {}
        super().__init__(model, config_list, optimizer, dummy_input)

    def quantize_weight(self, layer: QuantLayer, weight: torch.Tensor, *, export: bool = False
                        ) -> tuple[torch.Tensor, QuantSpec]:
        bits = layer.bits["weight"]
        scale = max(self.layer_scale.get(layer.name, 0.0), symmetric_scale(weight, bits))
        if not export:
            self.layer_scale[layer.name] = scale
        return fake_quant_symmetric(weight, scale, bits)
