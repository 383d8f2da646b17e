"""Auptimizer proposer names -> optuna samplers, with their options and validation.

Each Auptimizer proposer is mapped onto a maintained optuna sampler instead of the vendored
hyperopt/Spearmint/HpBandSter code Auptimizer shipped:

============== ============================================ =========================================
proposer       optuna sampler                               notes
============== ============================================ =========================================
random         RandomSampler                                Auptimizer seeded numpy's global RNG
sequence       RandomSampler (never consulted)              grid points are enqueued by the proposer
hyperopt, tpe  TPESampler (``engine: random`` -> Random)    default for several objectives
spearmint, gp  GPSampler (needs torch and scipy)            GP + (log) expected improvement
hyperband      Random/TPE for new configurations            schedule in :mod:`.hyperband`
bohb           TPE, mixed with random by random_fraction    schedule in :mod:`.hyperband`
cmaes          CmaEsSampler (needs the ``cmaes`` package)   single objective only
qmc            QMCSampler (Sobol or Halton, needs scipy)
nsga2          NSGAIISampler                                first generation (50) is random
eas            refused                                      see ``EAS_REASON``
============== ============================================ =========================================

Seeded samplers make a run reproducible: the same seed and the same results give the same trials.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from aup.errors import did_you_mean
from aup.proposer_ext.common import ProposerError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aup.proposer_ext.space import SearchSpace

logger = logging.getLogger(__name__)

EAS_REASON = (
    "Auptimizer's 'eas' was a hard-coded TensorFlow 1 demo of Efficient Architecture Search (fixed "
    "relative paths, 3 episodes x 3 batches, no search space) rather than a hyperparameter proposer; "
    "use 'tpe', 'gp' or 'bohb' instead"
)

# Proposer-specific top-level experiment keys (the common ones, n_samples and random_seed, are the
# runner's). Auptimizer's legacy keys that have no optuna counterpart are accepted and ignored with
# a warning so that existing experiment files still run.
PROPOSER_OPTIONS: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "sequence": frozenset(),
    "hyperopt": frozenset({"engine", "n_startup_trials", "multivariate"}),
    "tpe": frozenset({"engine", "n_startup_trials", "multivariate"}),
    "spearmint": frozenset({"engine", "engine_config", "grid_size", "spearmint_dir", "n_startup_trials"}),
    "gp": frozenset({"n_startup_trials", "deterministic_objective"}),
    "hyperband": frozenset({"max_iter", "eta", "skip_last", "engine"}),
    "bohb": frozenset({"n_iterations", "min_budget", "max_budget", "eta", "min_points_in_model",
                       "top_n_percent", "num_samples", "random_fraction", "bandwidth_factor",
                       "min_bandwidth"}),
    "cmaes": frozenset({"sigma0", "n_startup_trials", "popsize", "restart_strategy"}),
    "qmc": frozenset({"qmc_type", "scramble"}),
    "nsga2": frozenset({"population_size", "mutation_prob", "crossover_prob", "swapping_prob"}),
    "eas": frozenset(),
}
PROPOSERS: tuple[str, ...] = tuple(PROPOSER_OPTIONS)
SUPPORTED = tuple(name for name in PROPOSERS if name != "eas")
# Proposers whose number of trials is n_samples (sequence/hyperband/bohb derive theirs).
NEEDS_N_SAMPLES = frozenset({"random", "hyperopt", "tpe", "spearmint", "gp", "cmaes", "qmc", "nsga2"})
SINGLE_OBJECTIVE = frozenset({"cmaes", "hyperband", "bohb"})
_IGNORED = {
    "spearmint": {
        "engine_config": "optuna's GPSampler fits its own kernel hyperparameters",
        "grid_size": "optuna's GPSampler optimises the acquisition function without a candidate grid",
        "spearmint_dir": "nothing is written to disk",
    },
    "bohb": {
        "top_n_percent": "optuna's TPE splits good and bad runs by its own rule (its gamma option is deprecated)",
        "bandwidth_factor": "optuna's TPE sets its Parzen bandwidths by its own rule",
        "min_bandwidth": "optuna's TPE sets its Parzen bandwidths by its own rule",
    },
}
_SPEARMINT_ENGINES = {"gpeichooser": "gp", "gpeioptchooser": "gp", "randomchooser": "random"}


def canonical_name(name: Any) -> str:
    """Lower-cased known proposer name, or a ProposerError listing the known ones."""
    if not isinstance(name, str):
        raise ProposerError(f"proposer: expected a name ({', '.join(SUPPORTED)}), got {name!r}")
    key = name.strip().lower()
    if key == "eas":
        raise ProposerError(f"proposer 'eas' is not supported: {EAS_REASON}")
    if key not in PROPOSER_OPTIONS:
        raise ProposerError(f"proposer: unknown proposer {name!r}{did_you_mean(key, SUPPORTED)}; known: {', '.join(SUPPORTED)}")
    return key


# ---- validation ---------------------------------------------------------------------------------
def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(key: str, value: Any) -> str | None:
    """Type/range problem of one option value, or None (one rule per key, shared by proposers)."""
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
        "n_startup_trials": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
        "multivariate": (lambda v: isinstance(v, bool), "true or false"),
        "deterministic_objective": (lambda v: isinstance(v, bool), "true or false"),
        "max_iter": (lambda v: _num(v) and v >= 1, "a number >= 1 (maximum budget per configuration)"),
        "eta": (lambda v: _num(v) and v >= 2, "a number >= 2 (the halving rate)"),
        "skip_last": (lambda v: (isinstance(v, bool) or _int(v)) and v >= 0, "0 or 1 (skip each bracket's last rung)"),
        "n_iterations": (lambda v: _int(v) and v >= 1, "an integer >= 1 (number of successive-halving brackets)"),
        "min_budget": (lambda v: _num(v) and v > 0, "a number > 0"),
        "max_budget": (lambda v: _num(v) and v > 0, "a number > 0"),
        "min_points_in_model": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null"),
        "top_n_percent": (lambda v: _num(v) and 0 < v < 100, "a percentage between 0 and 100"),
        "num_samples": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "random_fraction": (lambda v: _num(v) and 0 <= v <= 1, "a fraction between 0 and 1"),
        "bandwidth_factor": (lambda v: _num(v) and v > 0, "a number > 0"),
        "min_bandwidth": (lambda v: _num(v) and v > 0, "a number > 0"),
        "sigma0": (lambda v: v is None or (_num(v) and v > 0), "a number > 0"),
        "popsize": (lambda v: v is None or (_int(v) and v >= 2), "an integer >= 2"),
        "restart_strategy": (lambda v: v in (None, "ipop", "bipop"), "'ipop', 'bipop' or null"),
        "qmc_type": (lambda v: v in ("sobol", "halton"), "'sobol' or 'halton'"),
        "scramble": (lambda v: isinstance(v, bool), "true or false"),
        "population_size": (lambda v: _int(v) and v >= 2, "an integer >= 2"),
        "mutation_prob": (lambda v: v is None or (_num(v) and 0 <= v <= 1), "a probability between 0 and 1"),
        "crossover_prob": (lambda v: _num(v) and 0 <= v <= 1, "a probability between 0 and 1"),
        "swapping_prob": (lambda v: _num(v) and 0 <= v <= 1, "a probability between 0 and 1"),
        "engine_config": (lambda v: isinstance(v, dict), "an object"),
        "grid_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "spearmint_dir": (lambda v: isinstance(v, str), "a path"),
    }
    if key not in rules:
        return None
    ok, expected = rules[key]
    return None if ok(value) else f"{key}: expected {expected}, got {value!r}"


_ENGINES = {
    "hyperopt": ("tpe", "random"),
    "tpe": ("tpe", "random"),
    "hyperband": ("random", "tpe", "sequence"),
}


def _engine_problem(name: str, engine: Any) -> str | None:
    if name == "spearmint":
        if not isinstance(engine, str) or engine.lower() not in _SPEARMINT_ENGINES:
            return (f"engine: expected one of GPEIChooser, GPEIOptChooser (optuna's GP) or RandomChooser, "
                    f"got {engine!r}")
        return None
    allowed = _ENGINES[name]
    if not isinstance(engine, str) or engine.lower() not in allowed:
        return f"engine: expected one of {', '.join(allowed)}, got {engine!r}"
    return None


def validate_options(name: str, options: dict[str, Any], *, n_samples: Any = "unchecked",
                     n_objectives: int = 1) -> list[str]:
    """One-line problems (``key: what was expected``) with a proposer's options; empty when fine.

    ``n_samples`` and ``n_objectives`` are checked too when given (``n_samples`` is required by the
    sampling proposers, several objectives are refused by cmaes/hyperband/bohb).
    """
    try:
        key = canonical_name(name)
    except ProposerError as exc:
        return [str(exc)]
    problems = []
    allowed = PROPOSER_OPTIONS[key]
    for option, value in options.items():
        if option not in allowed:
            problems.append(f"{option}: not an option of the {key!r} proposer"
                            f" (its options: {', '.join(sorted(allowed)) or 'none'})")
            continue
        problem = _engine_problem(key, value) if option == "engine" else _check(option, value)
        if problem:
            problems.append(problem)
    if key == "bohb":
        low, high = options.get("min_budget", 0.01), options.get("max_budget", 1)
        if _num(low) and _num(high) and low >= high:
            problems.append(f"min_budget: expected min_budget < max_budget, got {low!r} >= {high!r}")
    if n_samples != "unchecked" and key in NEEDS_N_SAMPLES and n_samples is None:
        problems.append(f"n_samples: required by the {key!r} proposer (the number of trials to run)")
    if n_samples not in ("unchecked", None) and not (_int(n_samples) and n_samples >= 1):
        problems.append(f"n_samples: expected an integer >= 1, got {n_samples!r}")
    if n_objectives > 1 and key in SINGLE_OBJECTIVE:
        problems.append(f"proposer: {key!r} optimises a single objective; with {n_objectives} objectives "
                        "use 'tpe' (default), 'nsga2', 'random' or 'gp'")
    return problems


def check_options(name: str, options: dict[str, Any], *, warn: bool = True, **kwargs: Any) -> str:
    """Validate and raise the first problem as a ProposerError; returns the canonical name.

    With ``warn``, Auptimizer keys that have no optuna counterpart are logged as ignored.
    """
    key = canonical_name(name)
    problems = validate_options(key, options, **kwargs)
    if problems:
        raise ProposerError(problems[0])
    for option, why in _IGNORED.get(key, {}).items():
        if warn and option in options:
            logger.warning("%s: ignored by the %r proposer (%s)", option, key, why)
    return key


# ---- samplers -----------------------------------------------------------------------------------
def _require(name: str, *packages: str) -> None:
    """Refuse with one line when an optional package an optuna sampler needs is missing."""
    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise ProposerError(f"proposer {name!r} needs the {package!r} package, which is not installed "
                                f"(optuna's sampler is built on it): pip install {package}")


def build_sampler(name: str, options: dict[str, Any] | None, seed: int | None, n_objectives: int = 1, *,
                  space: "SearchSpace | None" = None) -> optuna.samplers.BaseSampler:
    """The optuna sampler behind proposer ``name`` (see the module table).

    Constraints (feasibility, e.g. "model_bytes at most 25% of dense") need nothing here: since
    optuna 5 the runner calls ``trial.set_constraint(name, value)`` (feasible when <= 0) before
    ``study.tell``; TPE, NSGA-II and GP then prefer feasible trials and ``study.best_trials``
    keeps only feasible ones, whatever the sampler (``constraints_func`` is deprecated in optuna 5).
    ``space`` only refines defaults (BOHB's ``min_points_in_model`` = dimensions + 1).
    """
    options = dict(options or {})
    key = check_options(name, options, warn=False, n_objectives=n_objectives)
    builder = _BUILDERS[key]
    return builder(key, options, seed, n_objectives, space)


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _build_random(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    return _random(seed)


def _tpe(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, **kwargs)


def _build_tpe(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    if options.get("engine", "tpe").lower() == "random":
        return _random(seed)
    kwargs = {k: options[k] for k in ("n_startup_trials", "multivariate") if k in options}
    # multivariate TPE with group=True models conditional (compressor-specific) dimensions jointly.
    if kwargs.get("multivariate"):
        kwargs["group"] = True
    return _tpe(seed, **kwargs)


def _build_gp(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    if key == "spearmint" and _SPEARMINT_ENGINES[options.get("engine", "GPEIChooser").lower()] == "random":
        return _random(seed)
    _require(key, "torch", "scipy")
    kwargs = {k: options[k] for k in ("n_startup_trials", "deterministic_objective") if k in options}
    return optuna.samplers.GPSampler(seed=seed, **kwargs)


def _build_cmaes(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    _require(key, "cmaes")
    kwargs = {k: options[k] for k in ("sigma0", "n_startup_trials", "popsize", "restart_strategy") if k in options}
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **kwargs)


def _build_qmc(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    _require(key, "scipy")
    cls = optuna.samplers.QMCSampler
    with warnings.catch_warnings():  # "experimental" since optuna 3.0; the choice is deliberate
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(seed=seed, qmc_type=options.get("qmc_type", "sobol"), scramble=options.get("scramble", True),
                   warn_independent_sampling=False)


def _build_nsga2(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    kwargs = {k: options[k] for k in ("population_size", "mutation_prob", "crossover_prob", "swapping_prob")
              if k in options}
    return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)


def _build_hyperband(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    # "sequence" configurations are enqueued grid points: the sampler is then never consulted.
    if options.get("engine", "random").lower() == "tpe":
        return _tpe(seed)
    return _random(seed)


def _build_bohb(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    n_dims = len(space) if space is not None else 1
    min_points = options.get("min_points_in_model") or n_dims + 1
    model = _tpe(seed, n_startup_trials=min_points,
                 n_ei_candidates=options.get("num_samples", 64))
    fraction = options.get("random_fraction", 1 / 3)
    if fraction <= 0:
        return model
    return RandomFractionSampler(model, fraction, seed)


def _build_sequence(key, options, seed, n_obj, space):  # type: ignore[no-untyped-def]
    # Grid points are enqueued by the proposer; this sampler only backs values outside them.
    return _random(seed)


_BUILDERS: dict[str, Callable[..., Any]] = {
    "random": _build_random, "sequence": _build_sequence, "hyperopt": _build_tpe, "tpe": _build_tpe,
    "spearmint": _build_gp, "gp": _build_gp, "hyperband": _build_hyperband, "bohb": _build_bohb,
    "cmaes": _build_cmaes, "qmc": _build_qmc, "nsga2": _build_nsga2,
}


class RandomFractionSampler(optuna.samplers.BaseSampler):
    """BOHB's mix: each new trial is drawn at random with probability ``fraction``, else by the model.

    The choice is made once per trial (in ``before_trial``) from a seeded generator, so a seeded
    run draws the same mix; the model sees every finished trial (random ones included), as in BOHB.
    """

    def __init__(self, model: optuna.samplers.BaseSampler, fraction: float, seed: int | None) -> None:
        self._model = model
        self._fraction = fraction
        self._random_sampler = optuna.samplers.RandomSampler(seed=None if seed is None else seed + 1)
        self._rng = np.random.RandomState(seed)
        self._use_random: dict[int, bool] = {}

    def _pick(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        return self._random_sampler if self._use_random.get(trial.number) else self._model

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._use_random[trial.number] = bool(self._rng.random_sample() < self._fraction)
        self._model.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        if self._use_random.get(trial.number):
            return {}
        return self._model.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if self._use_random.get(trial.number) or not search_space:
            return {}
        return self._model.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._pick(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: Any, values: Any) -> None:
        self._use_random.pop(trial.number, None)
        self._model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._model.reseed_rng()
        self._random_sampler.reseed_rng()
        self._rng = np.random.RandomState()
