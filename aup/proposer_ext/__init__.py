"""Proposers built on optuna: search space, samplers, early-stopping pruners and the proposer loop.

See ``docs/architecture.md`` ("Runner <-> proposers"). Importing this package imports optuna.
"""
from __future__ import annotations

from typing import Any

import optuna

from aup.proposer_ext.common import WAIT, Proposal, ProposerError
from aup.proposer_ext.hyperband import (SuccessiveHalvingProposer, bohb_proposer, bohb_schedule,
                                        hyperband_proposer, hyperband_schedule, schedule_runs)
from aup.proposer_ext.proposers import INTERRUPTED_ATTR, GridProposer, Proposer, SamplerProposer
from aup.proposer_ext.early_stopping import BanditPruner, build_pruner, build_stop_policy, validate_early_stop
from aup.proposer_ext.pareto_halving import RUNG_ATTR, Decision, ParetoHalving
from aup.proposer_ext.samplers import (EAS_REASON, NEEDS_N_SAMPLES, PROPOSER_OPTIONS, PROPOSERS, build_sampler,
                                       check_options, validate_options)
from aup.proposer_ext.space import Dimension, SearchSpace


def build_proposer(name: str, options: dict[str, Any] | None, space: SearchSpace, study: optuna.Study,
                   n_samples: int | None, seed: int | None = None) -> Proposer:
    """The proposer for an experiment; the study should use ``build_sampler(name, ...)``'s sampler.

    Raises ProposerError (one line) for an unknown or unsupported proposer, bad options, a missing
    ``n_samples``, or several objectives with a single-objective proposer.
    """
    options = dict(options or {})
    key = check_options(name, options, n_samples=n_samples, n_objectives=len(study.directions))
    if key == "sequence":
        return GridProposer(space, study, None, seed, options)
    if key in ("hyperband", "bohb") and "config_id" in space.names:
        raise ProposerError(f"parameter_config: the name 'config_id' is reserved by the {key!r} proposer "
                            "(it identifies a configuration across budgets in the job config)")
    if key == "hyperband":
        return hyperband_proposer(space, study, n_samples, seed, options)
    if key == "bohb":
        return bohb_proposer(space, study, n_samples, seed, options)
    proposer = SamplerProposer(space, study, n_samples, seed, options)
    proposer.name = key
    return proposer


__all__ = [
    "Dimension", "SearchSpace", "Proposal", "WAIT", "ProposerError", "Proposer", "build_proposer",
    "build_sampler", "build_pruner", "build_stop_policy", "ParetoHalving", "Decision", "RUNG_ATTR", "validate_options", "validate_early_stop", "PROPOSER_OPTIONS", "PROPOSERS",
    "NEEDS_N_SAMPLES", "EAS_REASON", "INTERRUPTED_ATTR", "BanditPruner", "hyperband_schedule", "bohb_schedule",
    "schedule_runs", "SuccessiveHalvingProposer", "GridProposer", "SamplerProposer",
]
