"""Fake-quantization primitives shared by the four quantizers.

Every function here returns a *fake-quantized* float tensor: a float tensor whose values lie on the
integer grid the deployed model will use, so training sees the rounding error while autograd still
works.  Rounding has no useful derivative, so each primitive is a ``torch.autograd.Function`` with a
straight-through estimator (STE): the gradient passes unchanged where the input lies inside the
representable range and is zeroed where it was clipped (TensorFlow's ``FakeQuantWithMinMaxVars``
convention, which the QAT paper relies on).

Each quantized value can be written as ``(q - zero_point) * scale`` with an integer ``q`` in
``[0, 2**bits)``; :class:`QuantSpec` carries those three numbers so the exporter can store ``q`` in
``bits`` bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "QuantSpec",
    "affine_qparams",
    "fake_quant_affine",
    "quantize_affine",
    "symmetric_scale",
    "fake_quant_symmetric",
    "round_ste",
    "dorefa_weight",
    "binarize",
    "BINARY_SPEC",
    "EMAObserver",
]

# Smallest scale we accept: a constant (or all-zero) tensor has an empty range, and dividing by a
# zero scale would turn the whole layer into NaNs.
_MIN_SCALE = 1e-12


@dataclass(frozen=True)
class QuantSpec:
    """How a fake-quantized tensor maps onto integers: ``value = (q - zero_point) * scale``.

    ``q`` is an integer in ``[0, 2**bits)``.  ``zero_point`` may be fractional (DoReFa and BNN grids
    are symmetric around 0 with an even number of levels, so 0 sits between two codes).
    """

    bits: int
    scale: float
    zero_point: float

    def as_dict(self) -> dict[str, float | int]:
        """The plain-number form stored in artifacts (``{"bits", "scale", "zero_point"}``)."""
        return {"bits": int(self.bits), "scale": float(self.scale), "zero_point": float(self.zero_point)}

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``q`` of an already fake-quantized tensor (exact up to float rounding)."""
        q = torch.round(x.detach().double() / self.scale + self.zero_point)
        return q.clamp_(0, 2 ** self.bits - 1).to(torch.int64)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Float values of integer codes (what a loader computes)."""
        return ((q.double() - self.zero_point) * self.scale).float()


# ----------------------------------------------------------------------------- affine (QAT)


def affine_qparams(rmin: float | torch.Tensor, rmax: float | torch.Tensor, bits: int) -> tuple[float, float]:
    """Scale and integer zero point of Jacob et al. (2018) for the real range ``[rmin, rmax]``.

    The range is first widened to contain 0 so that zero (padding, ReLU output) is exactly
    representable; the zero point is then "nudged" to the nearest integer code.
    """
    rmin = min(float(rmin), 0.0)
    rmax = max(float(rmax), 0.0)
    qmax = 2 ** bits - 1
    scale = (rmax - rmin) / qmax
    if scale < _MIN_SCALE:
        return 1.0, 0.0
    initial_zero_point = -rmin / scale
    zero_point = float(min(max(round(initial_zero_point), 0), qmax))
    return scale, zero_point


class _FakeQuantAffine(torch.autograd.Function):
    """``(clamp(round(x/s + z), 0, 2^b-1) - z) * s`` with a clipped straight-through gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float, zero_point: float, bits: int) -> torch.Tensor:
        qmax = 2 ** bits - 1
        t = x / scale + zero_point
        ctx.save_for_backward((t >= -0.5) & (t <= qmax + 0.5))
        return (torch.clamp(torch.round(t), 0, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


def fake_quant_affine(x: torch.Tensor, scale: float, zero_point: float, bits: int) -> torch.Tensor:
    """Affine (asymmetric, unsigned) fake quantization with STE; see :func:`affine_qparams`."""
    return _FakeQuantAffine.apply(x, float(scale), float(zero_point), int(bits))


def quantize_affine(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, QuantSpec]:
    """Fake-quantize ``x`` with a range taken from its own current min/max (QAT weights)."""
    scale, zero_point = affine_qparams(x.detach().min(), x.detach().max(), bits)
    return fake_quant_affine(x, scale, zero_point, bits), QuantSpec(bits, scale, zero_point)


# ----------------------------------------------------------------------------- symmetric (naive)


def symmetric_scale(x: torch.Tensor, bits: int) -> float:
    """Per-tensor symmetric scale ``max|x| / (2^(b-1) - 1)`` (127 for 8 bits)."""
    return float(x.detach().abs().max()) / (2 ** (bits - 1) - 1)


class _FakeQuantSymmetric(torch.autograd.Function):
    """``clamp(round(x/s), -(2^(b-1)-1), 2^(b-1)-1) * s``: round to nearest, STE gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
        qmax = 2 ** (bits - 1) - 1
        t = x / scale
        ctx.save_for_backward(t.abs() <= qmax + 0.5)
        return torch.clamp(torch.round(t), -qmax, qmax) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def fake_quant_symmetric(x: torch.Tensor, scale: float, bits: int = 8) -> tuple[torch.Tensor, QuantSpec]:
    """Symmetric signed fake quantization; the spec stores codes offset by ``2^(b-1)``.

    Signed codes ``-(2^(b-1)-1) .. 2^(b-1)-1`` become unsigned ``q = code + 2^(b-1)``, so the
    exported grid is ``(q - 2^(b-1)) * scale`` with ``q`` in ``[1, 2^b)``.
    """
    scale = max(float(scale), _MIN_SCALE)
    out = _FakeQuantSymmetric.apply(x, scale, int(bits))
    return out, QuantSpec(bits, scale, float(2 ** (bits - 1)))


# ----------------------------------------------------------------------------- DoReFa


class _RoundSTE(torch.autograd.Function):
    """Rounding whose gradient is the identity (DoReFa's ``quantize_k`` estimator)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return _RoundSTE.apply(x)


def dorefa_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, QuantSpec]:
    """DoReFa-Net k-bit weights (Zhou et al. 2016, eq. 9).

    ``t = tanh(w) / (2 max|tanh w|) + 0.5`` lies in ``[0, 1]``; it is rounded to ``n = 2^k - 1``
    levels and mapped back to ``[-1, 1]`` as ``2 round(n t)/n - 1``.  Only the rounding uses the STE,
    so the gradient still flows through tanh and the normalisation as in the paper.  On the integer
    grid this is ``(q - n/2) * 2/n``: scale ``2/n``, zero point ``n/2``.
    """
    n = 2 ** bits - 1
    t = torch.tanh(w)
    t = t / (2 * t.detach().abs().max().clamp_min(_MIN_SCALE)) + 0.5
    out = 2 * round_ste(t * n) / n - 1
    return out, QuantSpec(bits, 2.0 / n, n / 2.0)


# ----------------------------------------------------------------------------- BNN


class _SignSTE(torch.autograd.Function):
    """``sign(x)`` with 0 mapped to +1; gradient ``1_{|x| <= 1}`` when clipping (hard-tanh STE)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip: bool) -> torch.Tensor:
        ctx.clip = clip
        if clip:
            ctx.save_for_backward(x.abs() <= 1)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.clip:
            (inside,) = ctx.saved_tensors
            return grad * inside, None
        return grad, None


BINARY_SPEC = QuantSpec(1, 2.0, 0.5)
"""+-1 on the integer grid: ``q = 0 -> -1``, ``q = 1 -> +1``."""


def binarize(x: torch.Tensor, clip: bool = True) -> tuple[torch.Tensor, QuantSpec]:
    """Deterministic binarisation of Hubara et al. (2016): ``sign`` with ``sign(0) = +1``.

    ``clip=True`` cancels the gradient where ``|x| > 1`` (the paper's estimator for activations);
    weights use ``clip=False`` and are instead kept inside ``[-1, 1]`` after every optimizer step.
    """
    return _SignSTE.apply(x, bool(clip)), BINARY_SPEC


# ----------------------------------------------------------------------------- EMA observer


class EMAObserver:
    """Exponential moving average of a tensor's min and max (Jacob et al. 2018, section 3.1).

    The biased averages start at 0 (``biased = decay * biased + (1 - decay) * value``), as in NNI 2.0,
    and are bias-corrected as ``biased / (1 - decay**n)`` with ``n`` the number of updates this
    observer has seen. NNI 2.0 did *not* correct them (its ``update_ema`` returns the biased value),
    so its first training batch quantized outputs to about 1% of their range (measured:
    [-0.0009, 0.0057]) and the clipped straight-through gradient zeroed every weight gradient of that
    step; the correction is a deliberate improvement, the range TensorFlow's and Jacob et al.'s
    moving averages converge to without the warm-up.
    The state lives here, not in module buffers, so the model's ``state_dict`` keys never change.
    """

    def __init__(self, decay: float = 0.99) -> None:
        self.decay = float(decay)
        self.min_biased = 0.0
        self.max_biased = 0.0
        self.count = 0

    @property
    def observed(self) -> bool:
        """Whether any value has been seen (before that there is no usable range)."""
        return self.count > 0

    @property
    def min(self) -> float:
        """Bias-corrected running minimum."""
        return self.min_biased / (1 - self.decay ** self.count) if self.count else 0.0

    @property
    def max(self) -> float:
        """Bias-corrected running maximum."""
        return self.max_biased / (1 - self.decay ** self.count) if self.count else 0.0

    def update(self, x: torch.Tensor) -> None:
        """Fold the current tensor's min and max into the averages."""
        x = x.detach()
        self.count += 1
        self.min_biased = self.decay * self.min_biased + (1 - self.decay) * float(x.min())
        self.max_biased = self.decay * self.max_biased + (1 - self.decay) * float(x.max())

    def qparams(self, bits: int) -> tuple[float, float]:
        """Affine scale and zero point of the current bias-corrected range."""
        return affine_qparams(self.min, self.max, bits)

    def state_dict(self) -> dict[str, float]:
        """Plain numbers, for checkpoints and artifacts."""
        return {"decay": self.decay, "min_biased": self.min_biased, "max_biased": self.max_biased,
                "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.decay = float(state["decay"])
        self.min_biased = float(state["min_biased"])
        self.max_biased = float(state["max_biased"])
        self.count = int(state["count"])
