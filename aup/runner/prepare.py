"""Preparation: everything built from an experiment before the database is touched.

``prepare`` builds the search space, the early-stopping pruner and the sampler, and dry-runs the
proposer on an in-memory study, so that every problem of the experiment is a one-line ConfigError
raised before the first trial and before anything is written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aup.config import LoadedExperiment
from aup.errors import ConfigError, Problem
from aup.runner.jobconfig import JobConfigBuilder, job_config_builder


@dataclass
class Prepared:
    """Everything built from the experiment before the database is touched."""

    loaded: LoadedExperiment
    builder: JobConfigBuilder
    pruner: Any
    sampler_factory: Callable[[], Any]  # a fresh sampler for the probe and for the real study


def prepare(loaded: LoadedExperiment, builder: JobConfigBuilder | None = None) -> Prepared:
    """Build search space, pruner and sampler, and dry-run the proposer on an in-memory study."""
    import optuna

    import aup.proposer_ext as ext

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress display reports trials
    exp = loaded.experiment
    source = loaded.path
    builder = builder or located(source, lambda: job_config_builder(exp))
    early_stop = exp.resource_args.early_stop
    if early_stop is not None and len(exp.objectives) > 1:
        raise ConfigError(f"{source}: resource_args.early_stop: early stopping needs a single objective "
                          f"(target has {len(exp.objectives)})")
    pruner = located(source, lambda: ext.build_pruner(early_stop), "resource_args.early_stop")
    proposer = exp.proposer.lower()
    options = exp.proposer_options

    def sampler_factory() -> Any:
        return ext.build_sampler(proposer, options, exp.random_seed, len(exp.objectives), space=builder.space)

    located(source, sampler_factory, "proposer")  # fail early on bad sampler options
    probe = optuna.create_study(directions=exp.directions, sampler=sampler_factory(), pruner=pruner)
    located(source, lambda: ext.build_proposer(proposer, options, builder.space, probe, exp.n_samples,
                                               exp.random_seed), "proposer")
    check_named_model(source, builder, loaded.workingdir)
    return Prepared(loaded, builder, pruner, sampler_factory)


def check_named_model(source: str, builder: JobConfigBuilder, workingdir: Path) -> None:
    """Op names/types of the compression section against the model it names (``"model": "module:callable"``)."""
    if getattr(builder, "model_ref", None) is None:
        return
    from aup.compression.model_check import check_model

    problems, warnings = check_model(builder, workingdir)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    for line in warnings:
        print(f"aup: warning: {source}: {line}", file=sys.stderr)


def located(source: str, make: Callable[[], Any], key: str | None = None) -> Any:
    """Call ``make``; a ValueError (the proposer API's "bad user input") becomes a one-line ConfigError.

    The proposer API names the key of each problem relative to its own section (``early_stop.warmup``);
    ``key`` is where that section sits in the experiment (``resource_args.early_stop``). Other
    exceptions are bugs and propagate (the CLI shows them as internal errors).
    """
    try:
        return make()
    except (ValueError, ConfigError) as exc:
        problems = getattr(exc, "problems", None) or [Problem.from_line(line.removeprefix(f"{source}: "))
                                                     for line in str(exc).splitlines() if line.strip()]
        if not problems:
            problems = [Problem("", type(exc).__name__)]
        if isinstance(exc, ValueError):
            problems = [_relocate(problem, key) for problem in problems]
        raise ConfigError(problems=problems, source=source) from None


def _relocate(problem: Problem, key: str | None) -> Problem:
    """Place a problem reported by a section's own code at ``key`` (its place in the experiment)."""
    if key is None or problem.key.startswith(key):
        return problem
    if not problem.key:  # a sentence that starts with the key's name reads well as it is
        return problem if problem.message.startswith(key) else Problem(key, problem.message)
    parent, _, last = key.rpartition(".")
    if parent and (problem.key == last or problem.key.startswith(last + ".")):
        return problem.under(parent)
    return problem
