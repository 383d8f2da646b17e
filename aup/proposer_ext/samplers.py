"""Auptimizer proposer names -> optuna samplers: the sampler builder of each registry row.

Which options each proposer takes, how they are checked and which builder a name uses are the
rows of :mod:`aup.proposer_ext.registry`; this module holds the builders themselves.

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
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from aup.proposer_ext.common import ProposerError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aup.proposer_ext.space import SearchSpace

logger = logging.getLogger(__name__)

EAS_REASON = (
    "Auptimizer's 'eas' was a hard-coded TensorFlow 1 demo of Efficient Architecture Search (fixed "
    "relative paths, 3 episodes x 3 batches, no search space) rather than a hyperparameter proposer; "
    "use 'tpe', 'gp' or 'bohb' instead"
)

_SPEARMINT_ENGINES = {"gpeichooser": "gp", "gpeioptchooser": "gp", "randomchooser": "random"}
SPEARMINT_ENGINES = tuple(_SPEARMINT_ENGINES)  # the values of spearmint's ``engine`` option
Options = dict[str, Any]


# ---- samplers: one builder per row of aup.proposer_ext.registry -------------------------------------
def _require(name: str, *packages: str) -> None:
    """Refuse with one line when an optional package an optuna sampler needs is missing."""
    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise ProposerError(f"proposer {name!r} needs the {package!r} package, which is not installed "
                                f"(optuna's sampler is built on it): pip install {package}")


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def build_random(key: str, options: Options, seed: int | None, n_obj: int,
                 space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    return _random(seed)


def _tpe(seed: int | None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, **kwargs)


def build_tpe(key: str, options: Options, seed: int | None, n_obj: int,
              space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    if options.get("engine", "tpe").lower() == "random":
        return _random(seed)
    kwargs: dict[str, Any] = {k: options[k] for k in ("n_startup_trials", "multivariate") if k in options}
    # multivariate TPE with group=True models conditional (compressor-specific) dimensions jointly.
    if kwargs.get("multivariate"):
        kwargs["group"] = True
    return _tpe(seed, **kwargs)


def build_gp(key: str, options: Options, seed: int | None, n_obj: int,
             space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    if key == "spearmint" and _SPEARMINT_ENGINES[options.get("engine", "GPEIChooser").lower()] == "random":
        return _random(seed)
    _require(key, "torch", "scipy")
    kwargs = {k: options[k] for k in ("n_startup_trials", "deterministic_objective") if k in options}
    return optuna.samplers.GPSampler(seed=seed, **kwargs)


def build_cmaes(key: str, options: Options, seed: int | None, n_obj: int,
                space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    _require(key, "cmaes")
    kwargs = {k: options[k] for k in ("sigma0", "n_startup_trials", "popsize", "restart_strategy") if k in options}
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **kwargs)


def build_qmc(key: str, options: Options, seed: int | None, n_obj: int,
              space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    _require(key, "scipy")
    cls = optuna.samplers.QMCSampler
    with warnings.catch_warnings():  # "experimental" since optuna 3.0; the choice is deliberate
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(seed=seed, qmc_type=options.get("qmc_type", "sobol"), scramble=options.get("scramble", True),
                   warn_independent_sampling=False)


def build_nsga2(key: str, options: Options, seed: int | None, n_obj: int,
                space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    kwargs = {k: options[k] for k in ("population_size", "mutation_prob", "crossover_prob", "swapping_prob")
              if k in options}
    return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)


def build_hyperband(key: str, options: Options, seed: int | None, n_obj: int,
                    space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    # "sequence" configurations are enqueued grid points: the sampler is then never consulted.
    if options.get("engine", "random").lower() == "tpe":
        return _tpe(seed)
    return _random(seed)


def build_bohb(key: str, options: Options, seed: int | None, n_obj: int,
               space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    n_dims = len(space) if space is not None else 1
    min_points = options.get("min_points_in_model") or n_dims + 1
    model = _tpe(seed, n_startup_trials=min_points,
                 n_ei_candidates=options.get("num_samples", 64))
    fraction = options.get("random_fraction", 1 / 3)
    if fraction <= 0:
        return model
    return RandomFractionSampler(model, fraction, seed)


def build_sequence(key: str, options: Options, seed: int | None, n_obj: int,
                   space: "SearchSpace | None") -> optuna.samplers.BaseSampler:
    # Grid points are enqueued by the proposer; this sampler only backs values outside them.
    return _random(seed)


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
