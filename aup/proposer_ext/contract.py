"""The proposer contract: everything the runner calls on a proposer, written down once.

The runner (``aup.runner``) owns the optuna study and tells it how each trial ended; a proposer
decides what runs next and hears back through :meth:`ProposerContract.complete`. Every proposer the
runner can meet implements this base explicitly: the optuna-backed ones (``proposers.Proposer`` and
its subclasses) and wrappers such as the runner's shared-budget proposer (``aup.runner.join``), so
the runner never probes a proposer for a member it may lack.

Resume: a proposer keeps its state in the study (trials and their user attributes), never only in
memory, so a proposer built on a study that already holds trials continues where the previous one
stopped. A trial marked ``interrupted`` did not use up a slot; whether the proposer re-proposes such
a trial's configuration itself, or the runner should queue it again, is ``requeues_interrupted``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from aup.proposer_ext.common import Proposal, Wait

if TYPE_CHECKING:  # pragma: no cover - typing only
    from optuna.trial import TrialState

#: A finished trial's objective value(s) as the runner tells them (None: no usable value).
Value = float | list[float] | None


class ProposerContract(ABC):
    """What the runner needs from a proposer (see the module docstring for the resume rules)."""

    #: The proposer's registry name (``random``, ``tpe``, ``hyperband``...), shown in messages.
    name: str = "base"

    @property
    def requeues_interrupted(self) -> bool:
        """True when the proposer re-proposes an interrupted trial's configuration itself (its
        schedule lives in the trials: grid points, hyperband rungs), so the runner must not queue a
        copy that would be handed out in place of the proposer's own; False: the runner queues it."""
        return False

    @property
    @abstractmethod
    def total(self) -> int | None:
        """How many trials the proposer plans in all (finished ones included); None if unknown."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """True once nothing is left to propose and no proposed trial is still running."""

    @abstractmethod
    def propose(self) -> Proposal | Wait | None:
        """The next trial to run (asked on the study), ``WAIT`` until a running trial ends, or None
        when the proposer has nothing more to propose."""

    @abstractmethod
    def complete(self, trial_number: int, state: "TrialState", value: Value) -> None:
        """Hear how a proposed trial ended (COMPLETE with its value, PRUNED or FAIL with None)."""


__all__ = ["ProposerContract", "Value"]
