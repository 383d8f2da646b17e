"""Proposers built on optuna: search space, samplers, early-stopping pruners and the proposer loop.

See ``docs/architecture.md`` ("Runner <-> proposers"). Importing this package imports optuna.
"""
from __future__ import annotations

from aup.proposer_ext.common import WAIT, Proposal, ProposerError
from aup.proposer_ext.contract import ProposerContract
from aup.proposer_ext.hyperband import (SuccessiveHalvingProposer, bohb_schedule, hyperband_schedule,
                                        schedule_runs)
from aup.proposer_ext.proposers import INTERRUPTED_ATTR, GridProposer, Proposer, SamplerProposer
from aup.proposer_ext.early_stopping import BanditPruner, build_pruner, build_stop_policy, validate_early_stop
from aup.proposer_ext.pareto_halving import RUNG_ATTR, Decision, ParetoHalving
from aup.proposer_ext.registry import (NEEDS_N_SAMPLES, PROPOSER_OPTIONS, PROPOSERS, ProposerRow, build_proposer,
                                       build_sampler, check_options, needs_n_samples, proposer_options,
                                       register_proposer, row_of, unregister_proposer, validate_options)
from aup.proposer_ext.samplers import EAS_REASON
from aup.proposer_ext.space import Dimension, SearchSpace

__all__ = [
    "Dimension", "SearchSpace", "Proposal", "WAIT", "ProposerError", "Proposer", "ProposerContract", "ProposerRow",
    "build_proposer", "build_sampler", "build_pruner", "build_stop_policy", "ParetoHalving", "Decision", "RUNG_ATTR",
    "validate_options", "validate_early_stop", "check_options", "PROPOSER_OPTIONS", "PROPOSERS", "proposer_options",
    "NEEDS_N_SAMPLES", "needs_n_samples", "register_proposer", "unregister_proposer", "row_of", "EAS_REASON",
    "INTERRUPTED_ATTR", "BanditPruner", "hyperband_schedule", "bohb_schedule", "schedule_runs",
    "SuccessiveHalvingProposer", "GridProposer", "SamplerProposer",
]
