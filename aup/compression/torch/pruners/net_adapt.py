"""``net_adapt``: NetAdapt (Yang et al., ECCV 2018, arXiv 1804.03230), NNI 2.0's ``NetAdaptPruner``.

The resource is the number of weights of the configured layers (NNI's choice; the paper measures
latency). Each iteration removes ``sparsity_per_iteration * total`` more weights: for every layer on
its own, the candidate prunes just enough more of that layer (whole filters for l1/l2/fpgm, rounded
up, so the resource always drops by at least the step) with ``base_algo``, is short-term fine-tuned
as a copy and evaluated. The best candidate, with its fine-tuned weights, becomes the network of the
next iteration (already pruned units stay pruned). Layers that cannot lose that much without losing
every filter are skipped. The last step removes only what is left to reach the target
``config_list[0].sparsity``; the search stops there. Cost: ``#iterations x #layers`` fine-tunings.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from ._search import (
    SearchPruner, check_callable, check_number, is_better, layer_units, progress, prune_copy, units_to_sparsity,
    working_dir, write_json,
)

__all__ = ["NetAdaptPruner"]


class NetAdaptPruner(SearchPruner):
    """``NetAdaptPruner(model, config_list, short_term_fine_tuner, evaluator, optimize_mode='maximize',
    base_algo='l1', sparsity_per_iteration=0.05, experiment_data_dir=None)``.

    ``short_term_fine_tuner(model)`` trains a candidate briefly in place; ``evaluator(model) -> float``
    scores it. ``compress()`` leaves the user's model with the fine-tuned weights of the final
    network and its masks. ``history`` (also ``<experiment_data_dir>/net_adapt_history.json``) has one
    record per iteration; the current network and masks are saved there after every iteration.
    ``experiment_data_dir`` None (default) uses a fresh temporary directory instead of NNI's ``'./'``.
    """

    compressor_name: ClassVar[str] = "net_adapt"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 short_term_fine_tuner: Callable[[nn.Module], Any], evaluator: Callable[[nn.Module], float],
                 optimize_mode: str = "maximize", base_algo: str = "l1", sparsity_per_iteration: float = 0.05,
                 experiment_data_dir: str | None = None) -> None:
        super().__init__(model, config_list, base_algo=base_algo, optimize_mode=optimize_mode)
        name = self.compressor_name
        self.short_term_fine_tuner = check_callable(name, "short_term_fine_tuner", short_term_fine_tuner)
        self.evaluator = check_callable(name, "evaluator", evaluator)
        self.sparsity_per_iteration = float(check_number(name, "sparsity_per_iteration", sparsity_per_iteration,
                                                         0, 1, True, True))
        self._data_dir_arg = experiment_data_dir
        self.experiment_data_dir: str | None = None
        self._final_masks: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ resource bookkeeping
    def _units(self, model: nn.Module) -> dict[str, tuple[int, int]]:
        modules = dict(model.named_modules())
        return {n: layer_units(modules[n], self.base_algo) for n in self.layers}

    @staticmethod
    def _pruned_units(masks: Mapping[str, Mapping[str, Any]], name: str, n_units: int, structured: bool) -> int:
        mask = masks.get(name, {}).get("weight")
        if mask is None:
            return 0
        if structured:
            return int((mask.flatten(1).abs().sum(1) == 0).sum())
        return int((mask == 0).sum())

    def proposals(self, masks: Mapping[str, Mapping[str, Any]], delta: int) -> dict[str, dict[str, float]]:
        """Per layer, the sparsities that remove at least ``delta`` more weights from that layer alone."""
        structured = self.base_algo != "level"
        pruned = {n: self._pruned_units(masks, n, units[0], structured) for n, units in self._unit_sizes.items()}
        current = {n: units_to_sparsity(pruned[n], self._unit_sizes[n][0]) for n in self._unit_sizes}
        proposals = {}
        for name, (n_units, per_unit) in self._unit_sizes.items():
            more = math.ceil(delta / per_unit)
            if pruned[name] + more >= n_units:
                continue  # the layer cannot lose that much and keep a unit
            proposals[name] = {**current, name: units_to_sparsity(pruned[name] + more, n_units)}
        return proposals

    def remaining_weights(self, masks: Mapping[str, Mapping[str, Any]]) -> int:
        """Unpruned weights of the configured layers (the resource)."""
        total = 0
        for name, count in self.weight_counts.items():
            mask = masks.get(name, {}).get("weight")
            total += count if mask is None else int((mask != 0).sum())
        return total

    # ------------------------------------------------------------------ search
    def search(self) -> dict[str, float]:
        self.experiment_data_dir = working_dir(self._data_dir_arg, self.compressor_name)
        self._unit_sizes = self._units(self.model)
        total = sum(self.weight_counts.values())
        goal = total - int(round(total * self.target_sparsity))
        step = max(1, int(total * self.sparsity_per_iteration))
        current_model, masks = self.model, {}
        score = float(self.evaluator(current_model))
        remaining, iteration, started = total, 0, time.perf_counter()
        self.history.append({"iteration": 0, "remaining_weights": remaining, "score": score, "layer": None})
        progress("net_adapt: start, %d weights, target %d, score %.4f", total, goal, score)
        while remaining > goal:
            iteration += 1
            delta = min(step, remaining - goal)
            best = self._best_candidate(current_model, masks, delta)
            if best is None:
                progress("net_adapt: no layer can lose %d more weights; stopping at %d weights", delta, remaining)
                break
            layer, score, current_model, masks = best
            remaining = self.remaining_weights(masks)
            self.history.append({"iteration": iteration, "remaining_weights": remaining, "score": score,
                                 "layer": layer})
            self._save_iteration(current_model, masks)
            progress("net_adapt: iteration %d pruned %s, %d/%d weights left, score %.4f (%.1fs)", iteration, layer,
                     remaining, total, score, time.perf_counter() - started)
        self._final_model, self._final_masks = current_model, masks
        return {n: units_to_sparsity(self._pruned_units(masks, n, u[0], self.base_algo != "level"), u[0])
                for n, u in self._unit_sizes.items()}

    def _best_candidate(self, model: nn.Module, masks: Mapping[str, Mapping[str, Any]],
                        delta: int) -> tuple[str, float, nn.Module, dict[str, dict[str, Any]]] | None:
        best = None
        for layer, sparsities in self.proposals(masks, delta).items():
            clone, pruner = prune_copy(model, self.base_algo, sparsities, initial_masks=masks)
            self.short_term_fine_tuner(clone)
            pruner.masks.apply_all()
            score = float(self.evaluator(clone))
            if best is None or is_better(score, best[1], self.optimize_mode):
                best = (layer, score, clone, pruner)
        if best is None:
            return None
        layer, score, clone, pruner = best
        new_masks = pruner.masks.to_nni()
        pruner.masks.apply_all()
        pruner.masks.detach()  # weights keep their zeros; the next round re-attaches from new_masks
        return layer, score, clone, new_masks

    def _save_iteration(self, model: nn.Module, masks: Mapping[str, Any]) -> None:
        assert self.experiment_data_dir is not None
        torch.save(model.state_dict(), os.path.join(self.experiment_data_dir, "model_current.pth"))
        torch.save(dict(masks), os.path.join(self.experiment_data_dir, "mask_current.pth"))
        write_json(os.path.join(self.experiment_data_dir, "net_adapt_history.json"), self.history)

    def compress(self) -> nn.Module:
        """Run NetAdapt; the user's model gets the final network's fine-tuned weights and masks."""
        if self.masks_calculated:
            return self.model
        self.best_sparsities = self.search()
        if self._final_model is not self.model:
            self.model.load_state_dict(self._final_model.state_dict())
        self.apply_sparsities(self.best_sparsities, initial_masks=self._final_masks)
        write_json(os.path.join(self.experiment_data_dir or ".", "best_config_list.json"),
                   [{"sparsity": s, "op_names": [n]} for n, s in self.best_sparsities.items()])
        progress("net_adapt: done, sparsity %.3f over %d layers", self.sparsity(), len(self.layers))
        return self.model
