"""What goes into a job config besides the runner's bookkeeping: the hook for compression.

A plain HPO experiment searches ``parameter_config`` and writes the sampled values as they are. A
compression experiment adds search dimensions (sparsity per layer, bits, pruner
choice) and turns the sampled values into concrete ``compression_framework`` / ``compression_type``
/ ``compressor`` / ``config_list`` keys. Both are a ``JobConfigBuilder``: the runner only needs the
search space to hand to the proposer and ``build(params)`` to write each job config.

Compression experiments get theirs from ``aup.compression.search_space.job_config_builder`` (torch-free).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aup.errors import ConfigError, Problem

if TYPE_CHECKING:
    from aup.config import Experiment
    from aup.compression.allocation import Allocation
    from aup.proposer_ext.space import SearchSpace

#: Seed-mode allocation stages: per stage its allocation and ``(dimension, layer, low, high)`` of each
#: searched per-layer sparsity (``aup.runner.seeding`` queues the seeded trials from it).
Plan = list[tuple["Allocation", list[tuple[str, str, float, float]]]]

@runtime_checkable
class JobConfigBuilder(Protocol):
    """The search space of an experiment and how sampled params become job config keys.

    Every member here is one the runner uses; a builder without compression answers them with
    "nothing" (no model named, no user entry, no seeds) rather than lacking them."""

    @property
    def space(self) -> "SearchSpace":
        """The search space handed to the proposer."""
        ...

    @property
    def model_ref(self) -> str | None:
        """The model the experiment names (``"module:callable"``), checked against the compression
        section before the first trial; None when it names none."""
        ...

    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        """The job config keys for one trial (hyperparameters and, for compression, the concrete config)."""
        ...

    def user_entry(self, compressor: str, index: int, stage_index: int | None = None) -> str | None:
        """Where in the user's experiment a config_list entry came from (for a one-line error when
        it does not fit the model); None when unknown."""
        ...

    def allocation_seeds(self) -> "Plan":
        """The seed-mode per-layer allocation stages (``aup.runner.seeding``); empty for none."""
        ...


class BaseJobConfigBuilder(ABC):
    """A builder without compression facts: subclass it and write ``build`` (set ``self.space``);
    the other members of :class:`JobConfigBuilder` answer "nothing"."""

    space: "SearchSpace"
    model_ref: str | None = None  # no compression section: no model to check

    @abstractmethod
    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        """The job config keys for one trial."""

    def user_entry(self, compressor: str, index: int, stage_index: int | None = None) -> str | None:
        return None

    def allocation_seeds(self) -> "Plan":
        return []


class PlainJobConfigBuilder(BaseJobConfigBuilder):
    """``parameter_config`` only: the job config holds the sampled values under their names."""

    def __init__(self, parameter_config: list[dict[str, Any]]) -> None:
        from aup.proposer_ext import SearchSpace

        self.space = SearchSpace.from_parameter_config(parameter_config)

    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(params)


def check_builder(builder: object) -> JobConfigBuilder:
    """``builder`` if it has every member of the contract, else a TypeError naming the missing ones
    (a builder handed to ``run_experiment`` is checked once here, never probed afterwards)."""
    missing = [name for name in ("space", "model_ref", "build", "user_entry", "allocation_seeds")
               if not hasattr(builder, name)]
    if missing:
        raise TypeError(f"{type(builder).__name__} is not a JobConfigBuilder: it lacks {', '.join(missing)} "
                        "(subclass aup.runner.jobconfig.BaseJobConfigBuilder for the defaults)")
    assert isinstance(builder, JobConfigBuilder)
    return builder


def job_config_builder(experiment: "Experiment") -> JobConfigBuilder:
    """The builder for ``experiment``; a bad search space is a ConfigError naming ``parameter_config``."""
    if experiment.compression is not None:
        from aup.compression.search_space import job_config_builder as compression_job_config_builder

        try:
            return compression_job_config_builder(experiment)
        except ValueError as exc:
            raise ConfigError(f"compression: {exc}") from None
    try:
        return PlainJobConfigBuilder(experiment.parameter_dicts)
    except ValueError as exc:
        problem = Problem.from_line(str(exc))
        if not problem.key.startswith("parameter_config"):
            problem = Problem("parameter_config", str(exc))
        raise ConfigError(problems=[problem]) from None

