"""Calibration data for int8 deployment: what the model saw, recorded by a forward pre-hook.

A compressor keeps one :class:`CalibrationRecorder` on its model: the first sample (the example
input when the user gave none) and a bounded reservoir of real batches, which ONNX Runtime's static
quantization later uses for activation ranges.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator

import torch
from torch import nn

__all__ = ["CalibrationRecorder"]


class CalibrationRecorder:
    """Forward pre-hook on the root model keeping what it saw, with bounded memory.

    ``first``: one sample (batch 1) of the first positional input, the example input for measuring.
    ``batches``: a reservoir of up to ``max_batches`` inputs (each cut to ``max_rows`` samples and
    all together at most ``max_bytes``), uniformly sampled over every forward pass, so calibration
    sees late (fine-tuned) batches as well as early ones: a tuple of the positional tensors, or for a
    model called with keyword tensors only (``model(**batch)``, Hugging Face style) a dict of them.
    A keyword batch never becomes ``first``: it may hold training-only inputs (``labels``) that are
    not the model's deployed inputs; its users take the names they need (``ort_runtime.model_inputs``).
    Copies of the model (``deepcopy``, pickling) carry an inert recorder.
    """

    def __init__(self, model: nn.Module, max_batches: int = 16, max_rows: int = 32,
                 max_bytes: int = 8 * 2**20) -> None:
        self.first: Any = None
        self.batches: list[tuple[torch.Tensor, ...] | dict[str, torch.Tensor]] = []
        self.seen = 0
        self.paused = 0
        self.max_batches, self.max_rows, self.max_bytes = max_batches, max_rows, max_bytes
        self._rng = random.Random(0)
        self.handle: Any = model.register_forward_pre_hook(self, with_kwargs=True)

    @classmethod
    def attach(cls, model: nn.Module) -> "CalibrationRecorder":
        """The recorder already watching ``model`` (another compressor's, e.g. a pipeline's or a
        search pruner's outer one), else a new one: one hook and one reservoir per model."""
        for hook in model._forward_pre_hooks.values():
            if isinstance(hook, cls) and hook.handle is not None:
                return hook
        return cls(model)

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
        if self.paused:
            return
        if not inputs and kwargs:  # model(**batch): the keyword tensors, by name
            named = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
            if named and not any(v.is_meta for v in named.values()):
                self._keep(lambda: {k: v[:self.max_rows].detach().cpu().clone() for k, v in named.items()})
            return
        if not inputs or not all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in inputs):
            return
        if any(x.is_meta for x in inputs):  # a shape-only trace (dependency graph): no data to keep
            return
        if self.first is None:
            first = tuple(x[:1].detach().cpu().clone() for x in inputs)
            self.first = first[0] if len(first) == 1 else first
        self._keep(lambda: tuple(x[:self.max_rows].detach().cpu().clone() for x in inputs))

    def _keep(self, make: Callable[[], tuple[torch.Tensor, ...] | dict[str, torch.Tensor]]) -> None:
        """Reservoir sampling over every recorded forward pass, within ``max_bytes`` (a batch is
        copied only when it takes a slot)."""
        self.seen += 1
        slot = len(self.batches) if len(self.batches) < self.max_batches else self._rng.randrange(self.seen)
        if slot >= self.max_batches:
            return
        batch = make()
        tensors = batch.values() if isinstance(batch, dict) else batch
        size = sum(x.numel() * x.element_size() for x in tensors)
        if size * min(self.max_batches, len(self.batches) + 1) > self.max_bytes:
            return
        if slot < len(self.batches):
            self.batches[slot] = batch
        else:
            self.batches.append(batch)

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Forward passes inside (aup's own measurements) are not recorded."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {"first": None, "batches": [], "seen": 0, "paused": 1, "max_batches": 0, "max_rows": 0,
                "max_bytes": 0, "_rng": None, "handle": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> "CalibrationRecorder":
        clone = CalibrationRecorder.__new__(CalibrationRecorder)
        clone.__dict__.update(self.__getstate__())
        return clone
