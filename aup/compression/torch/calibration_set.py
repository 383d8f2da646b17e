"""Where a one-shot compressor's calibration batches come from (Wanda, SparseGPT, GPTQ).

In order: the ``calibration`` argument (an explicit set of batches); else the batches the trial's
model already ran on, kept by aup's :class:`~aup.compression.torch.deploy.calibration.CalibrationRecorder`
(at least ``n_calibration_batches`` of them); else the ``dummy_input``. Without any, the compressor
waits: it computes once the model has seen enough batches (at ``step()`` / an optimizer step, or at
export). A batch is a tensor, a tuple of positional tensors, or a dict of keyword tensors
(``model(**batch)``, Hugging Face style).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from torch import nn

__all__ = ["CalibrationSource", "eval_mode"]


class CalibrationSource:
    """The calibration batches of one compressor (module docstring)."""

    def __init__(self, calibration: Sequence[Any] | None, n_batches: int, recorder: Any, dummy_input: Any) -> None:
        if calibration is not None and not isinstance(calibration, (list, tuple)):
            calibration = list(calibration)  # a DataLoader or generator: read once
        if calibration is not None and not calibration:
            raise ValueError("calibration: expected a non-empty list of batches")
        if not isinstance(n_batches, int) or n_batches < 1:
            raise ValueError(f"n_calibration_batches: expected an integer >= 1, got {n_batches!r}")
        self.explicit = list(calibration) if calibration is not None else None
        self.n_batches = n_batches
        self.recorder = recorder
        self.dummy_input = dummy_input

    def batches(self) -> list[Any] | None:
        """The batches to calibrate on now, or None when there are none yet."""
        if self.explicit is not None:
            return self.explicit
        seen = list(getattr(self.recorder, "batches", []) or [])
        seen = [b[0] if isinstance(b, tuple) and len(b) == 1 else b for b in seen]
        if len(seen) >= self.n_batches:
            return seen
        if self.dummy_input is not None:
            return seen + [self.dummy_input]
        return None

    def ready(self) -> bool:
        return self.batches() is not None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Calibration passes run without dropout; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
