"""Quantization-aware training of Jacob et al., CVPR 2018 (arXiv 1712.05877).

Affine unsigned fake quantization ``(clamp(round(x/s + z), 0, 2^b - 1) - z) * s``:

* weights: range from the weight's current min/max, widened to include 0;
* inputs / outputs: range from an exponential moving average (decay 0.99) of each batch's min/max,
  bias-corrected (:class:`~.primitives.EMAObserver`), updated in training mode only (ranges are
  frozen in ``eval()``, except that a never-observed layer observes its first batch);
* straight-through gradients, cancelled where a value was clipped.

``quant_start_step`` (default 0) counts *optimizer steps* as in NNI 2.0 (``optimizer.step()`` when an
optimizer is passed, else calls of ``step()``), not forward calls.  Nothing is quantized until that
many steps are done; NNI compared against a counter that starts at 1 and so began one step early.
The EMA keeps observing before the start (as TensorFlow's quantization delay does), so the range is
already settled when quantization begins; NNI only started tracking then.
NNI 2.0 also fake-quantized the bias to 32 bits, a no-op at float32 precision, which is left out.

Before the first forward pass in training mode, an ``eval()`` model computes with its float weights,
as NNI 2.0's did (its weight quantization ran only in training mode, and an eval pass reused the
weights of the last training pass). After one, aup quantizes the current weights in eval mode too
(NNI reused the quantized weights of the last training pass, before the optimizer step moved them).
``quantize_eval_before_training=True`` quantizes in eval mode from the start (post-training
quantization accuracy of an untrained QAT model). For outputs NNI quantized such an untrained eval
pass with its initial scale 1 and zero point 0 (rounding to integers, because weight and output
shared one scale buffer); aup's observer takes the range of that first batch instead.
The EMA ranges are bias-corrected (:class:`~.primitives.EMAObserver`); NNI 2.0's were not.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from aup.compression.torch.quantization.base import QuantLayer, Quantizer
from aup.compression.torch.quantization.primitives import EMAObserver, QuantSpec, fake_quant_affine, quantize_affine

__all__ = ["QATQuantizer", "EMA_DECAY"]

EMA_DECAY = 0.99


class QATQuantizer(Quantizer):
    """Affine fake quantization of weight/input/output with EMA ranges (``quant_bits`` 1..31 per type)."""

    compressor_name: ClassVar[str] = "qat"

    def __init__(self, model: torch.nn.Module, config_list: list[dict], optimizer: torch.optim.Optimizer | None = None,
                 dummy_input: object = None, *, quantize_eval_before_training: bool = False) -> None:
        self.observers: dict[str, dict[str, EMAObserver]] = {}
        self.quantize_eval_before_training = bool(quantize_eval_before_training)
        self.trained = False  # a forward pass in training mode has happened
        super().__init__(model, config_list, optimizer, dummy_input)
        for layer in self.layers:
            self.observers[layer.name] = {kind: EMAObserver(EMA_DECAY)
                                          for kind in ("input", "output") if kind in layer.quant_types}

    def started(self, layer: QuantLayer) -> bool:
        """Whether ``quant_start_step`` optimizer steps are done for this layer's config entry."""
        return self.steps_done >= int(layer.config.get("quant_start_step", 0))

    def quantize_weight(self, layer: QuantLayer, weight: torch.Tensor, *, export: bool = False
                        ) -> tuple[torch.Tensor, QuantSpec]:
        quantized, spec = quantize_affine(weight, layer.bits["weight"])
        if layer.module.training:
            self.trained = True
        elif not (export or self.trained or self.quantize_eval_before_training):
            return weight, spec  # NNI 2.0: an untrained model evaluates with its float weights
        if export or self.started(layer):
            return quantized, spec
        return weight, spec

    def quantize_activation(self, layer: QuantLayer, kind: str, x: torch.Tensor) -> torch.Tensor:
        observer = self.observers[layer.name][kind]
        if layer.module.training or not observer.observed:
            observer.update(x)
        if not self.started(layer):
            return x
        scale, zero_point = observer.qparams(layer.bits[kind])
        return fake_quant_affine(x, scale, zero_point, layer.bits[kind])

    def activation_spec(self, layer: QuantLayer, kind: str) -> dict[str, Any] | None:
        observer = self.observers[layer.name][kind]
        if not observer.observed:
            return None
        bits = layer.bits[kind]
        scale, zero_point = observer.qparams(bits)
        return {**QuantSpec(bits, scale, zero_point).as_dict(), "mode": "affine"}

    def state_dict(self) -> dict[str, Any]:
        """Quantizer state (step count and EMA ranges), kept outside the model's ``state_dict``."""
        return {"steps_done": self.steps_done,
                "observers": {name: {kind: obs.state_dict() for kind, obs in per.items()}
                              for name, per in self.observers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (e.g. when resuming training)."""
        self.steps_done = int(state["steps_done"])
        for name, per in state["observers"].items():
            for kind, obs_state in per.items():
                self.observers[name][kind].load_state_dict(obs_state)
