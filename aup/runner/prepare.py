"""Preparation: everything built from an experiment before the database is touched.

``prepare`` builds the search space, the early-stopping pruner and the sampler, and dry-runs the
proposer on an in-memory study, so that every problem of the experiment is a one-line ConfigError
raised before the first trial and before anything is written.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aup.config import LoadedExperiment
from aup.errors import ConfigError, Problem
from aup.runner.jobconfig import JobConfigBuilder, check_builder, job_config_builder

MAX_GRID_POINTS = 100_000  # a grid is listed in memory before the first trial
MAX_TRIALS = 1_000_000  # trials a proposer's schedule may plan


@dataclass
class Prepared:
    """Everything built from the experiment before the database is touched."""

    loaded: LoadedExperiment
    builder: JobConfigBuilder
    pruner: Any
    sampler_factory: Callable[..., Any]  # (seed=experiment's) -> a fresh sampler for the probe and the study


def prepare(loaded: LoadedExperiment, builder: JobConfigBuilder | None = None) -> Prepared:
    """Build search space, pruner and sampler, and dry-run the proposer on an in-memory study."""
    import optuna

    import aup.proposer_ext as ext

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress display reports trials
    exp = loaded.experiment
    source = loaded.path
    builder = check_builder(builder) if builder is not None else located(source, lambda: job_config_builder(exp))
    early_stop = exp.resource_args.early_stop
    n_objectives = len(exp.objectives)
    pruner = located(source, lambda: ext.build_pruner(early_stop, n_objectives), "resource_args.early_stop")
    proposer = exp.proposer.lower()
    options = exp.proposer_options

    def sampler_factory(seed: int | None = exp.random_seed) -> Any:
        return ext.build_sampler(proposer, options, seed, len(exp.objectives), space=builder.space)

    located(source, sampler_factory, "proposer")  # fail early on bad sampler options
    _check_grid(source, proposer, options, builder.space)
    probe = optuna.create_study(directions=exp.directions, sampler=sampler_factory(), pruner=pruner)
    built = located(source, lambda: ext.build_proposer(proposer, options, builder.space, probe, exp.n_samples,
                                                       exp.random_seed), "proposer")
    total = built.total
    if isinstance(total, int) and total > MAX_TRIALS:
        raise ConfigError(problems=[Problem("proposer", f"the {proposer!r} schedule runs {total:,} trials "
                                                        f"(at most {MAX_TRIALS:,}); lower max_iter or set n_samples")],
                          source=source)
    check_named_model(source, builder, loaded.workingdir)
    return Prepared(loaded, builder, pruner, sampler_factory)


def check_named_model(source: str, builder: JobConfigBuilder, workingdir: Path) -> None:
    """Op names/types of the compression section against the model it names (``"model": "module:callable"``)."""
    if builder.model_ref is None:
        return
    from aup.compression.model_check import check_model

    problems, warnings = check_model(builder, workingdir)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    for line in warnings:
        print(f"aup: warning: {source}: {line}", file=sys.stderr)


def _check_grid(source: str, proposer: str, options: dict[str, Any], space: Any) -> None:
    """Refuse, before anything is built, a grid too large to ever finish (with the number).
    Called after the sampler was built, so ``proposer`` is a known, supported name."""
    from aup.proposer_ext.registry import row_of

    if not row_of(proposer).uses_grid(options):
        return
    sizes = [(dim.name, grid_count(dim)) for dim in space.dimensions]
    points = math.prod(count for _, count in sizes)
    if points > MAX_GRID_POINTS:
        detail = " x ".join(f"{name}: {count:,}" for name, count in sizes)
        raise ConfigError(problems=[Problem("parameter_config", f"the grid has up to {points:,} points ({detail}); "
                                            f"use a larger interval or a smaller n (at most {MAX_GRID_POINTS:,})")],
                          source=source)


def grid_count(dim: Any) -> int:
    """How many grid points a search dimension has, computed without listing them."""
    if dim.kind == "choice":
        return len(dim.choices or ())
    low, high = dim.low, dim.high
    if dim.kind == "int":
        if dim.interval is not None:
            step = max(1, int(dim.interval))
        elif dim.n is not None:
            step = max(1, (int(high) - int(low)) // (dim.n - 1))
        else:
            step = 1
        return len(range(int(low), int(high) + 1, step))
    if dim.interval is None and dim.n is not None:
        return int(dim.n)
    step = float(dim.interval if dim.interval is not None else 1)
    return math.floor((float(high) - float(low) + 0.1 * step) / step) + 1


def located(source: str, make: Callable[[], Any], key: str | None = None) -> Any:
    """Call ``make``; a ValueError (the proposer API's "bad user input") becomes a one-line ConfigError.

    The proposer API names the key of each problem relative to its own section (``early_stop.warmup``);
    ``key`` is where that section sits in the experiment (``resource_args.early_stop``). Other
    exceptions are bugs and propagate (the CLI shows them as internal errors).
    """
    try:
        return make()
    except (ValueError, ConfigError) as exc:
        problems = (exc.problems if isinstance(exc, ConfigError) else []) or [Problem.from_line(line.removeprefix(f"{source}: "))
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
