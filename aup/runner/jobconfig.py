"""What goes into a job config besides the runner's bookkeeping: the hook for compression.

A plain HPO experiment searches ``parameter_config`` and writes the sampled values as they are. A
compression experiment adds search dimensions (sparsity per layer, bits, pruner
choice) and turns the sampled values into concrete ``compression_framework`` / ``compression_type``
/ ``compressor`` / ``config_list`` keys. Both are a ``JobConfigBuilder``: the runner only needs the
search space to hand to the proposer and ``build(params)`` to write each job config.

Compression experiments get theirs from ``aup.compression.search_space.job_config_builder`` (torch-free).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aup.errors import ConfigError, Problem

if TYPE_CHECKING:
    from aup.config import Experiment

@runtime_checkable
class JobConfigBuilder(Protocol):
    """The search space of an experiment and how sampled params become job config keys."""

    space: Any  # aup.proposer_ext.SearchSpace

    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        """The job config keys for one trial (hyperparameters and, for compression, the concrete config)."""
        ...


class PlainJobConfigBuilder:
    """``parameter_config`` only: the job config holds the sampled values under their names."""

    def __init__(self, parameter_config: list[dict[str, Any]]) -> None:
        from aup.proposer_ext import SearchSpace

        self.space = SearchSpace.from_parameter_config(parameter_config)

    def build(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(params)


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

