"""Small shared types of the proposer package: the error class, a proposal, and the WAIT marker."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aup.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna


class ProposerError(ConfigError, ValueError):
    """A proposer or search-space problem in the user's experiment, as one line naming the key.

    It is a ``ValueError`` (the proposer API's contract) and a ``ConfigError`` so that the CLI prints
    it as one line with exit status 2 without any special case.
    """


class Wait:
    """Marker returned by ``Proposer.propose`` when nothing can start until a running trial ends."""

    _instance: "Wait | None" = None

    def __new__(cls) -> "Wait":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "WAIT"

    def __bool__(self) -> bool:
        # ``if proposal:`` must not treat WAIT as a proposal.
        return False


WAIT = Wait()


@dataclass
class Proposal:
    """One trial to run: the asked optuna trial, its concrete parameters, its budget and extra keys.

    ``budget`` becomes the job config's ``n_iterations`` (hyperband/bohb); ``extras`` are further
    bookkeeping keys for the job config (e.g. hyperband's ``config_id``).
    """

    trial: "optuna.trial.Trial"
    params: dict[str, Any]
    budget: int | float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.trial.number
