"""``simulated_annealing``: search per-layer sparsities by simulated annealing (as in AutoCompress,
Liu et al., AAAI 2020, arXiv 1907.03141; NNI 2.0's ``SimulatedAnnealingPruner``).

The state is the vector of per-layer sparsities whose weighted mean is the overall target
(``config_list[0].sparsity``). NNI's rule ties each sparsity to the layer size: sorted sparsities go
to layers sorted by weight count, so larger layers are pruned more, then the vector is rescaled to
meet the target. Each temperature perturbs the current vector by uniform noise of half-width
``perturbation_magnitude * T / T_start`` (large moves while hot, small when cool), prunes a copy
with ``base_algo``, scores it with ``evaluator`` and accepts it if better, or if worse with the
Metropolis probability ``exp(-|delta| / T)``. ``T`` starts at ``start_temperature`` and is multiplied
by ``cool_down_rate`` until it is no longer above ``stop_temperature``. No fine-tuning happens inside
the search. As in NNI, scores are compared on their own scale, so with accuracies in [0, 1] and T
around 100 nearly every move is accepted: lower the temperatures to make the search greedier.

The default ``schedule="nni"`` is NNI 2.0's: the start vector is not evaluated (the first candidate
is accepted against -inf), and at each temperature rejected perturbations are retried until one is
accepted, so the number of evaluator calls depends on the scores (NNI loops without a bound; aup
stops after ``max_tries_per_temperature`` tries and cools down, so an evaluator that makes every
move lose cannot hang the search). ``schedule="one_per_temperature"`` evaluates the start vector and
then exactly one candidate per temperature (``1 + n_steps`` calls, a fixed budget).

``compress()`` returns, as NNI does, a pruned *copy* of the model with the masks attached (the
copy becomes ``bound_model`` / ``model``, so ``apply_speedup`` and ``export_model`` act on it); the
model you passed is left untouched. Use ``model = pruner.compress()``, or ``in_place=True`` to mask
the model you passed instead.
"""
from __future__ import annotations

import copy
import math
import os
import time
from typing import Any, Callable, ClassVar

import numpy as np
from torch import nn

from aup.compression.torch.pruners._search import (
    SearchPruner, check_callable, check_choice, check_number, is_better, metropolis_accept, progress, prune_copy,
    working_dir, write_json,
)

__all__ = ["SimulatedAnnealingPruner", "rescale_sparsities", "perturb_sparsities", "SCHEDULES"]

_MAX_TRIES = 1000
SCHEDULES = ("nni", "one_per_temperature")


def rescale_sparsities(values: np.ndarray, counts: dict[str, int], target: float) -> dict[str, float]:
    """Give sorted ``values`` to layers sorted by size and scale them so the overall sparsity is ``target``."""
    names = sorted(counts, key=lambda n: (counts[n], n))
    ordered = np.sort(np.clip(np.asarray(values, dtype=float), 0.0, None))
    weights = np.array([counts[n] for n in names], dtype=float)
    pruned = float((ordered * weights).sum())
    if pruned <= 0:
        ordered = np.full(len(names), 1.0)
        pruned = float(weights.sum())
    scaled = ordered * (target * weights.sum() / pruned)
    return {name: float(s) for name, s in zip(names, scaled)}


def _valid(sparsities: dict[str, float]) -> bool:
    return all(0.0 <= s < 1.0 for s in sparsities.values())


def perturb_sparsities(current: dict[str, float], counts: dict[str, int], target: float, magnitude: float,
                       rng: np.random.Generator) -> dict[str, float]:
    """A valid neighbour of ``current``: uniform noise in [-magnitude, magnitude], rescaled to ``target``."""
    names = list(counts)
    base = np.array([current[n] for n in names])
    for _ in range(_MAX_TRIES):
        candidate = rescale_sparsities(base + rng.uniform(-magnitude, magnitude, len(names)), counts, target)
        if _valid(candidate):
            return candidate
    return {n: target for n in names}


def initial_sparsities(counts: dict[str, int], target: float, rng: np.random.Generator) -> dict[str, float]:
    """NNI's start: random sparsities, sorted by layer size and rescaled to the target."""
    for _ in range(_MAX_TRIES):
        candidate = rescale_sparsities(rng.uniform(0, 1, len(counts)), counts, target)
        if _valid(candidate):
            return candidate
    return {n: target for n in counts}


class SimulatedAnnealingPruner(SearchPruner):
    """``SimulatedAnnealingPruner(model, config_list, evaluator, optimize_mode='maximize', base_algo='l1',
    start_temperature=100, stop_temperature=20, cool_down_rate=0.9, perturbation_magnitude=0.35,
    experiment_data_dir=None, seed=None, schedule='nni', max_tries_per_temperature=100, in_place=False)``.

    ``evaluator(model) -> float`` scores a pruned copy (e.g. validation accuracy). ``compress()`` runs
    the search and returns a pruned copy at the best per-layer sparsities found (``best_sparsities``),
    or masks the given model with ``in_place=True``; ``history`` and
    ``<experiment_data_dir>/search_history.json`` hold every evaluation. ``experiment_data_dir``
    None (the default) uses a fresh temporary directory instead of NNI's ``'./'``.
    """

    compressor_name: ClassVar[str] = "simulated_annealing"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Callable[[nn.Module], float],
                 optimize_mode: str = "maximize", base_algo: str = "l1", start_temperature: float = 100,
                 stop_temperature: float = 20, cool_down_rate: float = 0.9, perturbation_magnitude: float = 0.35,
                 experiment_data_dir: str | None = None, seed: int | None = None, schedule: str = "nni",
                 max_tries_per_temperature: int = 100, in_place: bool = False) -> None:
        super().__init__(model, config_list, base_algo=base_algo, optimize_mode=optimize_mode)
        name = self.compressor_name
        self.evaluator = check_callable(name, "evaluator", evaluator)
        self.schedule = check_choice(name, "schedule", schedule, SCHEDULES)
        self.max_tries = check_number(name, "max_tries_per_temperature", max_tries_per_temperature, 1, integer=True)
        self.in_place = bool(in_place)
        self.start_temperature = float(check_number(name, "start_temperature", start_temperature, 0, low_open=True))
        self.stop_temperature = float(check_number(name, "stop_temperature", stop_temperature, 0, low_open=True))
        if self.stop_temperature >= self.start_temperature:
            raise ValueError(f"{name}: stop_temperature must be below start_temperature "
                             f"({self.start_temperature}), got {stop_temperature!r}")
        self.cool_down_rate = float(check_number(name, "cool_down_rate", cool_down_rate, 0, 1, True, True))
        self.perturbation_magnitude = float(check_number(name, "perturbation_magnitude", perturbation_magnitude,
                                                         0, low_open=True))
        self._data_dir_arg = experiment_data_dir
        self.experiment_data_dir: str | None = None
        self.rng = np.random.default_rng(seed)
        self.accept_rng: Any = None  # None: self.rng; tests inject a stub to pin the Metropolis draw

    @property
    def n_steps(self) -> int:
        """Temperature steps of one search."""
        ratio = self.stop_temperature / self.start_temperature
        return max(1, math.ceil(math.log(ratio) / math.log(self.cool_down_rate) - 1e-9))

    def score(self, sparsities: dict[str, float], model: nn.Module | None = None) -> float:
        """Evaluator score of the model pruned at ``sparsities`` (a pruned copy, the model is untouched)."""
        clone, _ = prune_copy(model or self.model, self.base_algo, sparsities)
        return float(self.evaluator(clone))

    def search(self) -> dict[str, float]:
        self.experiment_data_dir = working_dir(self._data_dir_arg, self.compressor_name)
        return self.anneal(self.model, self.target_sparsity)

    def anneal(self, model: nn.Module, target: float) -> dict[str, float]:
        """Simulated annealing over per-layer sparsities of ``model`` at overall ``target``."""
        counts = {n: dict(model.named_modules())[n].weight.numel() for n in self.layers}
        accept_rng = self.accept_rng if self.accept_rng is not None else self.rng
        current = initial_sparsities(counts, target, self.rng)
        worst = -math.inf if self.optimize_mode == "maximize" else math.inf
        current_score, best, best_score = worst, dict(current), worst
        if self.schedule == "one_per_temperature":
            current_score = best_score = self.score(current, model)
            self.history.append({"step": 0, "temperature": self.start_temperature, "sparsities": current,
                                 "score": current_score, "accepted": True, "best_score": best_score})
        tries = 1 if self.schedule == "one_per_temperature" else self.max_tries
        temperature, step, started = self.start_temperature, 0, time.perf_counter()
        while temperature > self.stop_temperature:
            step += 1
            magnitude = self.perturbation_magnitude * temperature / self.start_temperature
            for _ in range(tries):
                candidate = perturb_sparsities(current, counts, target, magnitude, self.rng)
                score = self.score(candidate, model)
                better = is_better(score, current_score, self.optimize_mode)
                accepted = better or metropolis_accept(abs(score - current_score), temperature, accept_rng)
                if accepted:
                    current, current_score = candidate, score
                    if is_better(score, best_score, self.optimize_mode):
                        best, best_score = dict(candidate), score
                self.history.append({"step": step, "temperature": temperature, "sparsities": candidate,
                                     "score": score, "accepted": accepted, "best_score": best_score})
                progress("simulated_annealing: step %d/%d T=%.2f score=%.4f %s best=%.4f (%.1fs)", step,
                         self.n_steps, temperature, score, "accepted" if accepted else "rejected", best_score,
                         time.perf_counter() - started)
                if accepted:
                    break
            temperature *= self.cool_down_rate
        self._save(best, best_score)
        return best

    def compress(self) -> nn.Module:
        """Search, then return a pruned copy at the best sparsities (NNI) or mask the model (``in_place``)."""
        if self.masks_calculated:
            return self.model
        self.best_sparsities = self.search()
        if not self.in_place:
            self.rebind(copy.deepcopy(self.model))
            progress("simulated_annealing: compress() returns a pruned copy (as NNI 2.0); the model passed in "
                     "is unchanged (in_place=True masks it instead)")
        self.apply_sparsities(self.best_sparsities)
        progress("%s: done, sparsity %.3f over %d layers", self.compressor_name, self.sparsity(), len(self.layers))
        return self.model

    def _save(self, best: dict[str, float], best_score: float) -> None:
        if self.experiment_data_dir is None:
            return
        write_json(os.path.join(self.experiment_data_dir, "search_history.json"), self.history)
        write_json(os.path.join(self.experiment_data_dir, "best_config_list.json"),
                   [{"sparsity": s, "op_names": [n]} for n, s in best.items()])
        write_json(os.path.join(self.experiment_data_dir, "best_score.json"), {"score": best_score})
