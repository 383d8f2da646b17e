"""The training-loop calls every compressor answers, whatever its framework (NNI's lifecycle API).

Why a shared base: a trial script calls ``update_epoch`` / ``step`` / ``get_prune_iterations`` /
``prune_iteration_start`` the same way on a torch or a Keras compressor; one-shot compressors
answer them identically, and only schedules (AGP) and iterative pruners (lottery ticket) override
them.  Torch-free and Keras-free, so both framework bases can inherit it.
"""
from __future__ import annotations

import abc
from typing import Sequence

__all__ = ["TrainingLifecycle"]


class TrainingLifecycle(abc.ABC):
    """Defaults of a one-shot compressor: the epoch is remembered, nothing runs per step or round.

    An abstract base: the framework bases mark their plugin hooks abstract (the contracts of
    :mod:`aup.compression.contracts`), so a compressor missing its hook fails when it is built."""

    epoch: int = 0

    def update_epoch(self, epoch: int) -> None:
        """Tell epoch-scheduled compressors (AGP) that ``epoch`` has started."""
        self.epoch = int(epoch)

    def step(self) -> None:
        """Call after each optimizer step when no ``optimizer`` was given to the compressor (Keras
        re-applies its masks after every optimizer step itself)."""

    def get_prune_iterations(self) -> Sequence[int]:
        """Rounds of iterative pruning (lottery ticket); one-shot compressors have exactly one."""
        return [0]

    def prune_iteration_start(self) -> None:
        """Start the next pruning round (lottery ticket); nothing to do for one-shot compressors."""
