"""``net_adapt``: NetAdapt (Yang et al., ECCV 2018, arXiv 1804.03230), NNI 2.0's ``NetAdaptPruner``.

The paper adapts a network to a resource budget (it measures latency) by removing a fixed amount
of resource per iteration: every layer alone proposes a pruned network, each proposal is
short-term fine-tuned and evaluated, and the best one becomes the next network. NNI 2.0 measures
the resource in weights, and so does aup. Two rules, chosen with ``resource``:

``resource="nni"`` (default), NNI 2.0's rule:

- the step is ``int(sparsity_per_iteration * W)`` weights, ``W`` = the weights of *all* Conv2d and
  Linear layers of the model (configured or not);
- a layer's proposal raises its sparsity by ``step / related``, where ``related`` is the layer's own
  weights (times ``1 - s_prev``, the sparsity NNI gave the previous Conv2d/Linear in module order) plus
  the remaining weights of the next Conv2d/Linear, whose input channels the layer's filters feed;
  the base criterion then prunes ``int(sparsity * filters)`` whole filters (rounding down, so a
  proposal may remove less than the step);
- a layer whose proposal would reach sparsity 1 is skipped; every other layer is evaluated once per
  iteration (``#iterations x #layers`` fine-tunings and evaluations);
- the search stops on the *nominal* progress: after ``ceil(target / sparsity_per_iteration)``
  iterations (``config_list[0].sparsity`` is the target), whatever the masks achieved. When no layer
  can take a step, NNI halves the nominal step but keeps the weight step, which can loop forever;
  aup halves both and stops once the weight step is below one weight.

``resource="configured_layers"``, aup's rule before it followed NNI: the resource is the configured
layers' own weights; each proposal prunes enough whole filters (rounded up) to remove at least the
step from that layer alone, and the search stops when the achieved masks reach the target, the last
step removing only what is left. It reaches the target sparsity over the configured layers exactly
(NNI's rule, counting the next layer's weights, prunes fewer filters per step and stops on nominal
progress: at target 0.5, step 0.1 on a three-conv net it left 2,192 of 3,832 weights after channel
removal where this rule left 712).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from aup.compression.torch.masking import pruned_channels
from aup.compression.torch.pruners._search import (
    SearchPruner, check_callable, check_choice, check_number, is_better, is_structured, layer_units, progress, prune_copy,
    units_to_sparsity, working_dir, write_json,
)

__all__ = ["NetAdaptPruner", "RESOURCES"]

RESOURCES = ("nni", "configured_layers")
_PRUNABLE_TYPES = ("Conv2d", "Linear")  # NNI 2.0 compares the class name exactly


class NetAdaptPruner(SearchPruner):
    """``NetAdaptPruner(model, config_list, short_term_fine_tuner, evaluator, optimize_mode='maximize',
    base_algo='l1', sparsity_per_iteration=0.05, experiment_data_dir=None, resource='nni')``.

    ``short_term_fine_tuner(model)`` trains a candidate briefly in place; ``evaluator(model) -> float``
    scores it. ``compress()`` leaves the user's model with the fine-tuned weights of the final
    network and its masks. ``resource`` picks the step rule (module docstring). ``history`` (also ``<experiment_data_dir>/net_adapt_history.json``) has one
    record per iteration; the current network and masks are saved there after every iteration.
    ``experiment_data_dir`` None (default) uses a fresh temporary directory instead of NNI's ``'./'``.
    """

    compressor_name: ClassVar[str] = "net_adapt"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 short_term_fine_tuner: Callable[[nn.Module], Any], evaluator: Callable[[nn.Module], float],
                 optimize_mode: str = "maximize", base_algo: str = "l1", sparsity_per_iteration: float = 0.05,
                 experiment_data_dir: str | None = None, resource: str = "nni") -> None:
        super().__init__(model, config_list, base_algo=base_algo, optimize_mode=optimize_mode)
        name = self.compressor_name
        self.resource = check_choice(name, "resource", resource, RESOURCES)
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
            return int(pruned_channels(mask).sum())
        return int((mask == 0).sum())

    def proposals(self, masks: Mapping[str, Mapping[str, Any]], delta: int) -> dict[str, dict[str, float]]:
        """Per layer, the sparsities that remove at least ``delta`` more weights from that layer alone."""
        structured = is_structured(self.base_algo)
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
        if self.resource == "nni":
            return self._search_nni()
        return self._search_configured()

    # ------------------------------------------------------------------ NNI 2.0's rule
    def prunable_ops(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Every Conv2d and Linear of the model in module order (NNI's resource and neighbours)."""
        return [(n, m) for n, m in model.named_modules() if n and type(m).__name__ in _PRUNABLE_TYPES]

    def related_weights(self, name: str, ops: list[tuple[str, nn.Module]], generated: Mapping[str, float],
                        masks: Mapping[str, Mapping[str, Any]]) -> float:
        """NNI's denominator: this layer's weights (less the previous op's sparsity) plus the next op's remaining."""
        names = [n for n, _ in ops]
        index = names.index(name)
        module = ops[index][1]
        related = float(module.weight.numel())
        if index > 0 and generated.get(names[index - 1]):
            related *= 1 - generated[names[index - 1]]
        if index + 1 < len(ops):
            following, next_module = ops[index + 1]
            mask = masks.get(following, {}).get("weight") if following in self.layers else None
            related += float(mask.sum()) if mask is not None else next_module.weight.numel()
        return related

    def proposals_nni(self, model: nn.Module, generated: Mapping[str, float],
                      masks: Mapping[str, Mapping[str, Any]], delta: int) -> dict[str, dict[str, float]]:
        """Per configured layer, NNI's generated config with that layer raised by ``delta / related``."""
        ops = self.prunable_ops(model)
        modules = dict(model.named_modules())
        proposals = {}
        for name in self.layers:
            numel = modules[name].weight.numel()
            mask = masks.get(name, {}).get("weight")
            current = 1 - (float(mask.sum()) / numel if mask is not None else 1.0)
            target = current + delta / self.related_weights(name, ops, generated, masks)
            if target >= 1:
                continue  # NNI: the layer has not enough weights left to prune
            proposals[name] = {**generated, name: target}
        return proposals

    def _search_nni(self) -> dict[str, float]:
        total = sum(m.weight.numel() for _, m in self.prunable_ops(self.model))
        step = self.sparsity_per_iteration
        delta = int(total * step)
        current_model, masks, generated = self.model, {}, {}
        nominal, iteration, started = 0.0, 0, time.perf_counter()
        self.history.append({"iteration": 0, "remaining_weights": self.remaining_weights(masks), "score": None,
                             "layer": None, "nominal_sparsity": 0.0, "evaluations": 0})
        progress("net_adapt: start, %d Conv2d/Linear weights, step %d weights, target %.3f", total, delta,
                 self.target_sparsity)
        while nominal < self.target_sparsity:
            proposals = self.proposals_nni(current_model, generated, masks, delta)
            best = self._best_of(current_model, proposals, {})
            if best is None:
                step, delta = step / 2, delta // 2
                progress("net_adapt: no layer can take the step; halving it to %.4f (%d weights)", step, delta)
                if delta < 1:
                    break
                continue
            iteration += 1
            layer, score, current_model, masks = best
            generated[layer] = proposals[layer][layer]
            nominal += step
            self.history.append({"iteration": iteration, "remaining_weights": self.remaining_weights(masks),
                                 "score": score, "layer": layer, "layer_sparsity": generated[layer],
                                 "nominal_sparsity": nominal, "evaluations": len(proposals)})
            self._save_iteration(current_model, masks)
            progress("net_adapt: iteration %d pruned %s to %.3f, nominal sparsity %.3f, score %.4f (%.1fs)",
                     iteration, layer, generated[layer], nominal, score, time.perf_counter() - started)
        self._final_model, self._final_masks = current_model, masks
        return dict(generated)

    # ------------------------------------------------------------------ aup's configured-layers rule
    def _search_configured(self) -> dict[str, float]:
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
        return {n: units_to_sparsity(self._pruned_units(masks, n, u[0], is_structured(self.base_algo)), u[0])
                for n, u in self._unit_sizes.items()}

    def _best_candidate(self, model: nn.Module, masks: Mapping[str, Mapping[str, Any]],
                        delta: int) -> tuple[str, float, nn.Module, dict[str, dict[str, Any]]] | None:
        return self._best_of(model, self.proposals(masks, delta), masks)

    def _best_of(self, model: nn.Module, proposals: Mapping[str, Mapping[str, float]],
                 masks: Mapping[str, Mapping[str, Any]]) -> tuple[str, float, nn.Module, dict[str, dict[str, Any]]] | None:
        """Prune a copy per proposal, short-term fine-tune and evaluate it; the best (first on ties) wins."""
        best = None
        for layer, sparsities in proposals.items():
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
