"""One registry row per proposer: every fact aup knows about a proposer, and the code that reads them.

A :class:`ProposerRow` says what a proposer is called, which top-level experiment keys it takes
(its *options*) and how each is checked, whether it needs ``n_samples``, whether it optimises
several objectives, which Auptimizer keys it accepts and ignores (and why), whether it makes its
own schedule (grid points, brackets: then other runners cannot join it and allocation seeds are
refused), and the two builders: its optuna sampler and its proposer
(:class:`~aup.proposer_ext.contract.ProposerContract`). Validation (here), the experiment checks
(``aup.config``), preparation and joining (``aup.runner``) all read these rows, so adding a proposer
is one class and one row (docs/architecture.md, "Adding a proposer").

==================== ========= ======== ============ ===========================================
rows                 n_samples several  own schedule sampler (``samplers``) / proposer
==================== ========= ======== ============ ===========================================
random               needed    yes      no           RandomSampler / SamplerProposer
sequence             ignored   yes      yes          RandomSampler (never consulted) / GridProposer
hyperopt, tpe        needed    yes      no           TPESampler (``engine: random``) / SamplerProposer
spearmint, gp        needed    yes      no           GPSampler / SamplerProposer
hyperband            a cap     no       yes          Random/TPE / SuccessiveHalvingProposer
bohb                 a cap     no       yes          TPE mixed with random / SuccessiveHalvingProposer
cmaes                needed    no       no           CmaEsSampler / SamplerProposer
qmc                  needed    yes      no           QMCSampler / SamplerProposer
nsga2                needed    yes      no           NSGAIISampler / SamplerProposer
eas                  refused (``EAS_REASON``)
==================== ========= ======== ============ ===========================================
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeGuard

import optuna

from aup.errors import did_you_mean
from aup.numbers import is_finite_number
from aup.proposer_ext import samplers
from aup.proposer_ext.common import ProposerError
from aup.proposer_ext.contract import ProposerContract
from aup.proposer_ext.hyperband import bohb_proposer, hyperband_proposer
from aup.proposer_ext.proposers import GridProposer, SamplerProposer

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aup.proposer_ext.space import SearchSpace

logger = logging.getLogger(__name__)

Options = dict[str, Any]
#: (key, options, seed, number of objectives, search space) -> the study's optuna sampler.
SamplerBuilder = Callable[[str, Options, "int | None", int, "SearchSpace | None"], optuna.samplers.BaseSampler]
#: (search space, study, n_samples, seed, options) -> the proposer the runner drives.
ProposerBuilder = Callable[["SearchSpace", optuna.Study, "int | None", "int | None", Options], ProposerContract]
#: An option's check and what it expects ("an integer >= 0").
Rule = tuple[Callable[[Any], bool], str]


def _never(options: Options) -> bool:
    return False


@dataclass(frozen=True)
class ProposerRow:
    """Everything aup knows about one proposer (see the module docstring)."""

    name: str
    summary: str
    sampler: SamplerBuilder | None  # None only for a refused name
    proposer: ProposerBuilder | None
    options: frozenset[str] = frozenset()
    needs_n_samples: bool = True  # False: the proposer derives its number of trials (grid, schedule)
    several_objectives: bool = True  # False: single objective only
    own_schedule: bool = False  # grid points / brackets kept in the trials: not joinable, no allocation seeds
    ignored: Mapping[str, str] = field(default_factory=dict)  # accepted Auptimizer keys -> why they do nothing
    rules: Mapping[str, Rule] = field(default_factory=dict)  # checks of its own keys (over OPTION_RULES)
    engines: tuple[str, ...] = ()  # the lower-cased values ``engine`` accepts, when it is an option
    engine_expected: str | None = None  # how the error names them (default: "one of a, b")
    check: Callable[[Options], list[str]] | None = None  # problems that involve several options
    reserved: frozenset[str] = frozenset()  # parameter names the proposer writes into the job config
    uses_grid: Callable[[Options], bool] = _never  # lists the grid of the search space with these options
    refused: str | None = None  # a known name refused with this reason

    @property
    def single_objective(self) -> bool:
        return not self.several_objectives

    @property
    def joinable(self) -> bool:
        """Whether other runners can join a run (its state is all in the study: ``aup.runner.join``)."""
        return self.refused is None and not self.own_schedule


ROWS: dict[str, ProposerRow] = {}


def register_proposer(row: ProposerRow) -> ProposerRow:
    """Add (or replace) a proposer's row; returns it."""
    ROWS[row.name] = row
    return row


def unregister_proposer(name: str) -> None:
    """Remove a row (a test that registered a toy proposer puts the registry back)."""
    ROWS.pop(name, None)


def supported() -> tuple[str, ...]:
    return tuple(name for name, row in ROWS.items() if row.refused is None)


def proposer_options() -> dict[str, frozenset[str]]:
    """Every known proposer name -> the top-level experiment keys it takes (refused ones included)."""
    return {name: row.options for name, row in ROWS.items()}


def canonical_name(name: Any) -> str:
    """Lower-cased known proposer name, or a ProposerError listing the known ones."""
    known = supported()
    if not isinstance(name, str):
        raise ProposerError(f"proposer: expected a name ({', '.join(known)}), got {name!r}")
    key = name.strip().lower()
    row = ROWS.get(key)
    if row is not None and row.refused is not None:
        raise ProposerError(f"proposer {key!r} is not supported: {row.refused}")
    if row is None:
        raise ProposerError(f"proposer: unknown proposer {name!r}{did_you_mean(key, known)}; known: {', '.join(known)}")
    return key


def row_of(name: Any) -> ProposerRow:
    """The row of a known, supported proposer (ProposerError otherwise)."""
    return ROWS[canonical_name(name)]


# ---- validation ---------------------------------------------------------------------------------

def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


#: Type/range rule of each option key, shared by the proposers that take the key (a row may add its own).
OPTION_RULES: dict[str, Rule] = {
    "n_startup_trials": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "multivariate": (lambda v: isinstance(v, bool), "true or false"),
    "deterministic_objective": (lambda v: isinstance(v, bool), "true or false"),
    "max_iter": (lambda v: is_finite_number(v) and v >= 1, "a number >= 1 (maximum budget per configuration)"),
    "eta": (lambda v: is_finite_number(v) and v >= 2, "a number >= 2 (the halving rate)"),
    "skip_last": (lambda v: (isinstance(v, bool) or _int(v)) and v >= 0, "0 or 1 (skip each bracket's last rung)"),
    "n_iterations": (lambda v: _int(v) and v >= 1, "an integer >= 1 (number of successive-halving brackets)"),
    "min_budget": (lambda v: is_finite_number(v) and v > 0, "a number > 0"),
    "max_budget": (lambda v: is_finite_number(v) and v > 0, "a number > 0"),
    "min_points_in_model": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null"),
    "top_n_percent": (lambda v: is_finite_number(v) and 0 < v < 100, "a percentage between 0 and 100"),
    "num_samples": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "random_fraction": (lambda v: is_finite_number(v) and 0 <= v <= 1, "a fraction between 0 and 1"),
    "bandwidth_factor": (lambda v: is_finite_number(v) and v > 0, "a number > 0"),
    "min_bandwidth": (lambda v: is_finite_number(v) and v > 0, "a number > 0"),
    "sigma0": (lambda v: v is None or (is_finite_number(v) and v > 0), "a number > 0"),
    "popsize": (lambda v: v is None or (_int(v) and v >= 2), "an integer >= 2"),
    "restart_strategy": (lambda v: v in (None, "ipop", "bipop"), "'ipop', 'bipop' or null"),
    "qmc_type": (lambda v: v in ("sobol", "halton"), "'sobol' or 'halton'"),
    "scramble": (lambda v: isinstance(v, bool), "true or false"),
    "population_size": (lambda v: _int(v) and v >= 2, "an integer >= 2"),
    "mutation_prob": (lambda v: v is None or (is_finite_number(v) and 0 <= v <= 1), "a probability between 0 and 1"),
    "crossover_prob": (lambda v: is_finite_number(v) and 0 <= v <= 1, "a probability between 0 and 1"),
    "swapping_prob": (lambda v: is_finite_number(v) and 0 <= v <= 1, "a probability between 0 and 1"),
    "engine_config": (lambda v: isinstance(v, dict), "an object"),
    "grid_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "spearmint_dir": (lambda v: isinstance(v, str), "a path"),
}


def _option_problem(row: ProposerRow, key: str, value: Any) -> str | None:
    """Type/range problem of one option value, or None."""
    if key == "engine" and row.engines:
        if isinstance(value, str) and value.lower() in row.engines:
            return None
        expected = row.engine_expected or f"one of {', '.join(row.engines)}"
        return f"engine: expected {expected}, got {value!r}"
    rule = row.rules.get(key) or OPTION_RULES.get(key)
    if rule is None:
        return None
    ok, expected = rule
    return None if ok(value) else f"{key}: expected {expected}, got {value!r}"


def validate_options(name: str, options: Options, *, n_samples: Any = "unchecked",
                     n_objectives: int = 1) -> list[str]:
    """One-line problems (``key: what was expected``) with a proposer's options; empty when fine.

    ``n_samples`` and ``n_objectives`` are checked too when given (``n_samples`` is required by the
    rows that need it, several objectives are refused by single-objective rows).
    """
    try:
        row = row_of(name)
    except ProposerError as exc:
        return [str(exc)]
    key = row.name
    problems = []
    for option, value in options.items():
        if option not in row.options:
            problems.append(f"{option}: not an option of the {key!r} proposer"
                            f" (its options: {', '.join(sorted(row.options)) or 'none'})")
            continue
        problem = _option_problem(row, option, value)
        if problem:
            problems.append(problem)
    if row.check is not None:
        problems.extend(row.check(options))
    if n_samples != "unchecked" and row.needs_n_samples and n_samples is None:
        problems.append(f"n_samples: required by the {key!r} proposer (the number of trials to run)")
    if n_samples not in ("unchecked", None) and not (_int(n_samples) and n_samples >= 1):
        problems.append(f"n_samples: expected an integer >= 1, got {n_samples!r}")
    if n_objectives > 1 and row.single_objective:
        problems.append(f"proposer: {key!r} optimises a single objective; with {n_objectives} objectives "
                        "use 'tpe' (default), 'nsga2', 'random' or 'gp'")
    return problems


def check_options(name: str, options: Options, *, warn: bool = True, **kwargs: Any) -> str:
    """Validate and raise the first problem as a ProposerError; returns the canonical name.

    With ``warn``, Auptimizer keys that have no optuna counterpart are logged as ignored.
    """
    row = row_of(name)
    problems = validate_options(row.name, options, **kwargs)
    if problems:
        raise ProposerError(problems[0])
    for option, why in row.ignored.items():
        if warn and option in options:
            logger.warning("%s: ignored by the %r proposer (%s)", option, row.name, why)
    return row.name


# ---- building -----------------------------------------------------------------------------------
def build_sampler(name: str, options: Options | None, seed: int | None, n_objectives: int = 1, *,
                  space: "SearchSpace | None" = None) -> optuna.samplers.BaseSampler:
    """The optuna sampler behind proposer ``name`` (its row's ``sampler``).

    Constraints (feasibility, e.g. "model_bytes at most 25% of dense") need nothing here: since
    optuna 5 the runner calls ``trial.set_constraint(name, value)`` (feasible when <= 0) before
    ``study.tell``; TPE, NSGA-II and GP then prefer feasible trials and ``study.best_trials``
    keeps only feasible ones, whatever the sampler (``constraints_func`` is deprecated in optuna 5).
    ``space`` only refines defaults (BOHB's ``min_points_in_model`` = dimensions + 1).
    """
    options = dict(options or {})
    row = ROWS[check_options(name, options, warn=False, n_objectives=n_objectives)]
    assert row.sampler is not None  # only refused rows have none, and canonical_name refuses them
    return row.sampler(row.name, options, seed, n_objectives, space)


def build_proposer(name: str, options: Options | None, space: "SearchSpace", study: optuna.Study,
                   n_samples: int | None, seed: int | None = None) -> ProposerContract:
    """The proposer for an experiment; the study should use ``build_sampler(name, ...)``'s sampler.

    Raises ProposerError (one line) for an unknown or unsupported proposer, bad options, a missing
    ``n_samples``, several objectives with a single-objective proposer, or a parameter name the
    proposer reserves.
    """
    options = dict(options or {})
    row = ROWS[check_options(name, options, n_samples=n_samples, n_objectives=len(study.directions))]
    for reserved in sorted(row.reserved & set(space.names)):
        raise ProposerError(f"parameter_config: the name {reserved!r} is reserved by the {row.name!r} proposer "
                            "(it identifies a configuration across budgets in the job config)")
    assert row.proposer is not None
    proposer = row.proposer(space, study, n_samples, seed, options)
    proposer.name = row.name
    return proposer


# ---- the rows -----------------------------------------------------------------------------------
def _bohb_budgets(options: Options) -> list[str]:
    low, high = options.get("min_budget", 0.01), options.get("max_budget", 1)
    if is_finite_number(low) and is_finite_number(high) and low >= high:
        return [f"min_budget: expected min_budget < max_budget, got {low!r} >= {high!r}"]
    return []


MAX_ITER = 100_000  # hyperband's largest budget per configuration


def _hyperband_budget(options: Options) -> list[str]:
    """A budget too large to ever finish is refused before anything is built (with the number)."""
    max_iter = options.get("max_iter")
    if is_finite_number(max_iter) and max_iter > MAX_ITER:
        return [f"max_iter: expected at most {MAX_ITER:,} (the largest budget of one configuration), "
                f"got {max_iter:g}"]
    return []


def _sampled(space: "SearchSpace", study: optuna.Study, n_samples: int | None, seed: int | None,
             options: Options) -> ProposerContract:
    return SamplerProposer(space, study, n_samples, seed, options)


def _grid(space: "SearchSpace", study: optuna.Study, n_samples: int | None, seed: int | None,
          options: Options) -> ProposerContract:
    return GridProposer(space, study, None, seed, options)  # n_samples is ignored: every grid point once


_TPE_OPTIONS = frozenset({"engine", "n_startup_trials", "multivariate"})
_SPEARMINT_IGNORED = {
    "engine_config": "optuna's GPSampler fits its own kernel hyperparameters",
    "grid_size": "optuna's GPSampler optimises the acquisition function without a candidate grid",
    "spearmint_dir": "nothing is written to disk",
}
_BOHB_IGNORED = {
    "top_n_percent": "optuna's TPE splits good and bad runs by its own rule (its gamma option is deprecated)",
    "bandwidth_factor": "optuna's TPE sets its Parzen bandwidths by its own rule",
    "min_bandwidth": "optuna's TPE sets its Parzen bandwidths by its own rule",
}
_BANDIT_RESERVED = frozenset({"config_id"})

for _row in (
    ProposerRow("random", "uniform random sampling", samplers.build_random, _sampled),
    ProposerRow("sequence", "every grid point once (Auptimizer's sequence)", samplers.build_sequence, _grid,
                needs_n_samples=False, own_schedule=True, uses_grid=lambda options: True),
    ProposerRow("hyperopt", "TPE (Auptimizer's hyperopt)", samplers.build_tpe, _sampled, _TPE_OPTIONS,
                engines=("tpe", "random")),
    ProposerRow("tpe", "TPE, the default for several objectives", samplers.build_tpe, _sampled, _TPE_OPTIONS,
                engines=("tpe", "random")),
    ProposerRow("spearmint", "Gaussian process (Auptimizer's spearmint)", samplers.build_gp, _sampled,
                frozenset({"engine", "engine_config", "grid_size", "spearmint_dir", "n_startup_trials"}),
                ignored=_SPEARMINT_IGNORED, engines=samplers.SPEARMINT_ENGINES,
                engine_expected="one of GPEIChooser, GPEIOptChooser (optuna's GP) or RandomChooser"),
    ProposerRow("gp", "Gaussian process + expected improvement", samplers.build_gp, _sampled,
                frozenset({"n_startup_trials", "deterministic_objective"})),
    ProposerRow("hyperband", "successive halving over brackets", samplers.build_hyperband, hyperband_proposer,
                frozenset({"max_iter", "eta", "skip_last", "engine"}), needs_n_samples=False,
                several_objectives=False, own_schedule=True, engines=("random", "tpe", "sequence"),
                check=_hyperband_budget, reserved=_BANDIT_RESERVED,
                uses_grid=lambda options: str(options.get("engine", "")).lower() == "sequence"),
    ProposerRow("bohb", "hyperband brackets with TPE mixed with random", samplers.build_bohb, bohb_proposer,
                frozenset({"n_iterations", "min_budget", "max_budget", "eta", "min_points_in_model",
                           "top_n_percent", "num_samples", "random_fraction", "bandwidth_factor", "min_bandwidth"}),
                needs_n_samples=False, several_objectives=False, own_schedule=True, ignored=_BOHB_IGNORED,
                check=_bohb_budgets, reserved=_BANDIT_RESERVED),
    ProposerRow("cmaes", "CMA-ES", samplers.build_cmaes, _sampled,
                frozenset({"sigma0", "n_startup_trials", "popsize", "restart_strategy"}), several_objectives=False),
    ProposerRow("qmc", "quasi-Monte Carlo (Sobol or Halton)", samplers.build_qmc, _sampled,
                frozenset({"qmc_type", "scramble"})),
    ProposerRow("nsga2", "NSGA-II", samplers.build_nsga2, _sampled,
                frozenset({"population_size", "mutation_prob", "crossover_prob", "swapping_prob"})),
    ProposerRow("eas", "refused", None, None, refused=samplers.EAS_REASON),
):
    register_proposer(_row)


class _OptionsView(Mapping[str, frozenset[str]]):
    """``PROPOSER_OPTIONS``: every registered proposer's options, read from the registry rows."""

    def __getitem__(self, name: str) -> frozenset[str]:
        return proposer_options()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(proposer_options())

    def __len__(self) -> int:
        return len(proposer_options())


PROPOSER_OPTIONS: Mapping[str, frozenset[str]] = _OptionsView()


def needs_n_samples() -> frozenset[str]:
    """The registered proposers whose number of trials is ``n_samples``."""
    return frozenset(name for name, row in ROWS.items() if row.needs_n_samples and row.refused is None)


NEEDS_N_SAMPLES = needs_n_samples()  # the built-in ones (a live answer: needs_n_samples())


#: The built-in proposer names (``eas`` included: it is known, and refused with its reason).
PROPOSERS: tuple[str, ...] = tuple(ROWS)

__all__ = ["MAX_ITER", "NEEDS_N_SAMPLES", "OPTION_RULES", "PROPOSER_OPTIONS", "PROPOSERS", "ProposerBuilder",
           "ProposerRow", "ROWS", "Rule", "SamplerBuilder", "build_proposer", "build_sampler", "canonical_name", "check_options",
           "needs_n_samples", "proposer_options", "register_proposer", "row_of", "supported", "unregister_proposer",
           "validate_options"]
