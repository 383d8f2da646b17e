"""The runner's written contracts with its execution resources: a trial attempt and the resource.

An *execution resource* (``"resource"`` in the experiment: ``cpu``/``gpu`` run local processes,
``ray`` runs Ray tasks) is opened once per run and starts each trial *attempt*. The runner's loop
(``aup.runner.experiment``) only ever calls the members written here, so a new resource is one
class implementing :class:`ExecutionResource` (and an attempt class implementing
:class:`TrialAttempt`, usually on ``attempt_output.AttemptOutput``) plus one row in
``aup.resources`` (docs/architecture.md, "Adding an execution resource").

Resume: a runner killed with SIGKILL leaves attempts running. Every attempt's processes carry the
attempt's process key in their environment (``AUP_PROCESS_KEY``, recorded on the trial before the
attempt starts); on resume the runner hands the resource each interrupted trial's :class:`Leftover`
and the resource ends those processes wherever it runs them (``end_leftovers``). The base ends
them on this host, which is where a local resource runs them; a cluster ends them on its nodes too.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from aup.runner.orphans import kill_orphans

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aup.runner.attempt_output import AttemptOutcome

#: One reported result: a value, or one value per objective.
Result = float | list[float]


@runtime_checkable
class TrialAttempt(Protocol):
    """One attempt of one trial, as the runner drives it.

    Built by :meth:`ExecutionResource.attempt` with the arguments listed there, then ``start()``;
    the runner calls ``poll()`` and ``new_results()`` until ``poll()`` returns an exit code, then
    ``outcome()`` once. ``terminate``/``kill``/``stop`` end it early (Ctrl-C, timeout, pruning).
    """

    started: float  # time.time() when it started
    killed_reason: str | None  # why the runner ended it, if it did

    @property
    def exit_fd(self) -> int | None:
        """A descriptor that turns readable when the attempt ends (the runner sleeps on it), or None."""
        ...

    def start(self) -> None:
        """Start the attempt; files of an earlier attempt at the same paths are discarded first."""
        ...

    def poll(self) -> int | None:
        """The exit code once the attempt has ended, else None (also enforces the timeout)."""
        ...

    def new_results(self) -> list[Result]:
        """Results reported since the last call (intermediate ones drive early stopping)."""
        ...

    def unreported(self) -> list[Result]:
        """Results not yet handed out by ``new_results`` (after ``outcome``: the last ones)."""
        ...

    def metrics_so_far(self) -> dict[str, Any]:
        """Metrics reported up to the last ``new_results`` call."""
        ...

    def outcome(self) -> "AttemptOutcome":
        """After the end: every result and metric, and the one-line reason if the attempt is unusable."""
        ...

    def terminate(self) -> None:
        """Ask the attempt (and everything it started) to stop."""
        ...

    def kill(self, reason: str | None = None) -> None:
        """End the attempt at once; ``reason`` becomes its failure reason unless one is set."""
        ...

    def stop(self, reason: str, grace: float = 3.0) -> int:
        """Terminate, wait up to ``grace`` seconds, kill; returns the exit code."""
        ...


@dataclass(frozen=True)
class Leftover:
    """An attempt a killed runner left running: what finds its processes again on resume."""

    job_config_path: str | None  # on the command line of trials recorded before process keys existed
    process_key: str | None  # AUP_PROCESS_KEY in the environment of the attempt and its children


class ExecutionResource(ABC):
    """Where a run's attempts execute; opened once per run with the loaded experiment."""

    @abstractmethod
    def __init__(self, loaded: Any) -> None:
        """Open the resource for the run of ``loaded`` (an ``aup.config.LoadedExperiment``), e.g.
        connect to a cluster; a problem is a one-line ``UserError``."""

    @abstractmethod
    def attempt(self, *, command: list[str], workingdir: Path, env: dict[str, str], log_path: Path,
                channel_path: Path, timeout: float | None, log_limit: int | None) -> TrialAttempt:
        """A new, not yet started attempt running ``command`` (the script and the job config path)
        in ``workingdir`` with ``env``; its output goes to ``log_path`` and its result channel to
        ``channel_path`` on the runner's host."""

    def end_leftovers(self, leftovers: Sequence[Leftover]) -> int:
        """Resume after a killed runner: end the processes of these attempts wherever this resource
        runs them; returns how many were signalled. The base ends them on this host."""
        return sum(kill_orphans(item.job_config_path, item.process_key) for item in leftovers)


__all__ = ["ExecutionResource", "Leftover", "Result", "TrialAttempt"]
