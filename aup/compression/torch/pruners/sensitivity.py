"""``sensitivity``: iterative pruning guided by per-layer sensitivity curves (NNI's SensitivityPruner).

Layers differ in how much pruning they tolerate. Each round:

1. :class:`~aup.compression.torch.analysis.SensitivityAnalysis` prunes every layer alone at
   sparsities 0.1 .. 0.9 (of its remaining weights) with the base algorithm and records the
   ``evaluator``'s accuracy (sweeps stop once accuracy drops by more than ``acc_drop_threshold``).
2. ``sparsity_proportion_calc(acc, threshold, curves) -> {layer: ratio}`` turns the curves into
   relative per-layer prune ratios; the default takes, per layer, the largest tested sparsity at
   which the accuracy stayed within the threshold (so robust layers get more).
3. The ratios are scaled so that this round prunes ``sparsity_per_iter`` of all the layers' weights
   (no single layer more than 95% of what it has left, NNI's cap) -- the last round only what is
   left to reach the target; when whole-filter rounding would prune nothing, the most robust layer
   loses exactly one filter -- the base algorithm prunes to the new cumulative sparsities, and the
   optional ``finetuner`` trains. So the result never passes the target by more than one filter of
   one layer (NNI pruned a full ``sparsity_per_iter`` every round and counted nominal sparsities, so
   its last round could overshoot by up to ``sparsity_per_iter``).

It stops when the overall sparsity (``config_list[0]["sparsity"]`` over the configured layers)
is reached, when the accuracy after a round falls more than ``acc_drop_threshold`` below the
unpruned accuracy (that round is undone: the result stays within the threshold, at a lower
sparsity, with a warning), or after ``max_iterations`` rounds. With ``checkpoint_dir`` each round's
weights, per-layer config and curves are written there (nowhere otherwise).

The seed's call: ``pruner.compress(eval_args=[model], finetune_args=[model])``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

import aup.compression.catalog as catalog
from aup.compression.torch.analysis import WEIGHT_ALGOS, SensitivityAnalysis, as_metric, base_pruner_class
from aup.compression.torch.masking import pruned_channels
from aup.compression.torch.pruners.schedule import CriterionSchedule

__all__ = ["SensitivityPruner", "max_prune_ratio", "MAX_PRUNE_RATIO_PER_ITER"]

logger = logging.getLogger(__name__)

MAX_PRUNE_RATIO_PER_ITER = 0.95
TOLERANCE = 1e-3  # overall sparsity this close to the target counts as reached (rounding to elements)
Curves = Mapping[str, Mapping[float, float]]


def max_prune_ratio(ori_acc: float, threshold: float, sensitivities: Curves) -> dict[str, float]:
    """Per layer, the sparsity at which its curve first falls below ``ori_acc - threshold``
    (NNI's default proportion; the largest tested sparsity when it never does)."""
    ratios: dict[str, float] = {}
    for layer, curve in sensitivities.items():
        last = 0.0
        for sparsity in sorted(curve):
            last = sparsity
            if curve[sparsity] + threshold < ori_acc:
                break
        ratios[layer] = last
    return ratios


class SensitivityPruner(CriterionSchedule):
    """``SensitivityPruner(model, config_list, evaluator, finetuner=None, base_algo='l1',
    sparsity_proportion_calc=None, sparsity_per_iter=0.1, acc_drop_threshold=0.05,
    checkpoint_dir=None, max_iterations=None)``.

    ``evaluator(*eval_args, **eval_kwargs)`` returns the validation accuracy; ``finetuner(*finetune_args,
    **finetune_kwargs)`` trains the model (optional). ``history`` lists each round's accuracies and
    sparsities; ``sensitivities`` holds the last curves.
    """

    compressor_name: ClassVar[str] = "sensitivity"

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        evaluator: Callable[..., Any] | None = None,
        finetuner: Callable[..., Any] | None = None,
        base_algo: str = "l1",
        sparsity_proportion_calc: Callable[[float, float, Curves], Mapping[str, float]] | None = None,
        sparsity_per_iter: float = 0.1,
        acc_drop_threshold: float = 0.05,
        checkpoint_dir: str | None = None,
        max_iterations: int | None = None,
    ) -> None:
        _check_args(evaluator, finetuner, sparsity_per_iter, acc_drop_threshold, max_iterations)
        super().__init__(model, config_list, base_pruner_class(base_algo, WEIGHT_ALGOS)(model, config_list))
        self.evaluator = evaluator
        self.finetuner = finetuner
        self.base_algo = base_algo
        self.sparsity_proportion_calc = sparsity_proportion_calc or max_prune_ratio
        self.sparsity_per_iter = float(sparsity_per_iter)
        self.acc_drop_threshold = float(acc_drop_threshold)
        self.checkpoint_dir = checkpoint_dir
        self.max_iterations = max_iterations
        self.target_sparsity = float(next(e["sparsity"] for e in config_list if "sparsity" in e))
        self.weight_count = {name: layer.module.weight.numel() for name, layer in self.layers.items()}
        self.weight_sum = sum(self.weight_count.values())
        self.already_pruned: dict[str, float] = {name: 0.0 for name in self.layers}
        self.analyzer = SensitivityAnalysis(model, evaluator, prune_type=base_algo,
                                            early_stop_mode="dropped", early_stop_value=self.acc_drop_threshold)
        self.sensitivities: dict[str, dict[float, float]] = {}
        self.ori_acc: float | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ bookkeeping
    def current_sparsity(self) -> float:
        """Achieved pruned fraction of the configured layers' weights (drives the loop).

        NNI counted the nominal sparsities; filter pruning rounds ``sparsity * filters`` down, so on
        small layers the nominal count overstated the result by up to one filter per layer per round.
        """
        pruned = sum(self.weight_count[n] * r for n, r in self.already_pruned.items())
        return pruned / self.weight_sum if self.weight_sum else 0.0

    def normalize(self, ratios: Mapping[str, float], target_pruned: float) -> dict[str, float]:
        """Scale relative ratios so that ``target_pruned`` of all weights go this round (cap 0.95)."""
        ratios = {n: float(r) for n, r in ratios.items() if n in self.layers}
        w_sum = sum(r * self.weight_count[n] * (1 - self.already_pruned[n]) for n, r in ratios.items())
        if w_sum <= 0:
            return {}
        scale = self.weight_sum * target_pruned / w_sum
        ratios = {n: r * scale for n, r in ratios.items()}
        largest = max(ratios.values(), default=0.0)
        if largest > MAX_PRUNE_RATIO_PER_ITER:
            ratios = {n: r * MAX_PRUNE_RATIO_PER_ITER / largest for n, r in ratios.items()}
        return ratios

    def cumulative_sparsities(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """New per-layer sparsities: ``ratio`` of what each layer has left, on top of what it lost."""
        new = {}
        for name, ratio in ratios.items():
            done = self.already_pruned[name]
            sparsity = done + (1 - done) * ratio
            if sparsity > done:
                new[name] = min(sparsity, 1.0)
        return new

    # ------------------------------------------------------------------ main loop
    def compress(
        self,
        eval_args: Sequence[Any] | None = None,
        eval_kwargs: Mapping[str, Any] | None = None,
        finetune_args: Sequence[Any] | None = None,
        finetune_kwargs: Mapping[str, Any] | None = None,
        resume_sensitivity: str | None = None,
    ) -> nn.Module:
        """Prune round by round until the target, the accuracy threshold or ``max_iterations``."""
        evaluate = _bind(self.evaluator, eval_args, eval_kwargs)
        finetune = _bind(self.finetuner, finetune_args, finetune_kwargs) if self.finetuner else None
        self._attach_masks()
        self.masks_calculated = True
        if self.ori_acc is None:
            self.ori_acc = as_metric(evaluate(), "evaluator")
        base_acc = self.ori_acc
        if resume_sensitivity:
            self.sensitivities = SensitivityAnalysis.load(resume_sensitivity)
        else:
            self.sensitivities = self._analyse(eval_args, eval_kwargs)
        if self.checkpoint_dir is not None:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        round_index = 0
        while self.current_sparsity() < self.target_sparsity - TOLERANCE:
            if self.max_iterations is not None and round_index >= self.max_iterations:
                logger.warning("sensitivity: stopped after max_iterations=%d rounds at sparsity %.3f",
                               self.max_iterations, self.current_sparsity())
                break
            round_index += 1
            proportion = self.sparsity_proportion_calc(base_acc, self.acc_drop_threshold, self.sensitivities)
            if not self._run_round(round_index, proportion, evaluate, finetune):
                break
            base_acc = self.history[-1]["finetuned_acc"]
            if self.current_sparsity() < self.target_sparsity - TOLERANCE:
                self.sensitivities = self._analyse(eval_args, eval_kwargs)
        logger.info("sensitivity: done, sparsity %.4f", self.current_sparsity())
        return self.model

    def _analyse(self, eval_args: Sequence[Any] | None, eval_kwargs: Mapping[str, Any] | None) -> dict[str, dict[float, float]]:
        self.analyzer.already_pruned.update(self.already_pruned)
        return dict(self.analyzer.analysis(val_args=eval_args, val_kwargs=eval_kwargs, specified_layers=list(self.layers)))

    def _prune_step(self, proportion: Mapping[str, float]) -> dict[str, float] | None:
        """Raise the masks by ``sparsity_per_iter`` of all weights (the last step: what is left) along
        ``proportion``. When rounding to whole filters/elements leaves the step with nothing to prune,
        the most robust layer (largest proportion) that can still lose one loses exactly one filter
        (element for ``level``), so the overall sparsity never passes the target by more than one
        filter of one layer. Returns the new sparsities, None if stuck."""
        step = min(self.sparsity_per_iter, self.target_sparsity - self.current_sparsity())
        before = self.current_sparsity()
        sparsities = self.cumulative_sparsities(self.normalize(proportion, step))
        if not sparsities:
            logger.error("sensitivity: no layer can be pruned further within acc_drop_threshold=%s",
                         self.acc_drop_threshold)
            return None
        self.prune_to(sparsities)
        achieved = self._achieved(sparsities)
        if self._gained(achieved) > 0:
            return achieved
        layer = self._most_robust_with_a_unit_left(proportion)
        if layer is None:
            logger.warning("sensitivity: a step of %.3f prunes nothing more and no layer can lose another "
                           "filter/element; stopping at sparsity %.4f", step, before)
            return None
        units, pruned = self._units(layer)
        self.prune_to({layer: (pruned + 1 + 1e-6) / units})
        return self._achieved({layer: 0.0})

    def _achieved(self, sparsities: Mapping[str, float]) -> dict[str, float]:
        return {name: _mask_sparsity(self.masks.masks[name]["weight"]) for name in sparsities}

    def _gained(self, achieved: Mapping[str, float]) -> float:
        return sum(self.weight_count[n] * (a - self.already_pruned[n]) for n, a in achieved.items())

    def _units(self, name: str) -> tuple[int, int]:
        """``(units, pruned units)`` of a layer: filters for filter criteria, elements for level."""
        mask = self.masks.masks[name]["weight"]
        if not catalog.base_entry(self.base_algo).structured or mask is None:
            size = self.layers[name].module.weight.numel()
            return size, 0 if mask is None else int((mask == 0).sum())
        return mask.shape[0], int(pruned_channels(mask).sum())

    def _most_robust_with_a_unit_left(self, proportion: Mapping[str, float]) -> str | None:
        candidates = [n for n in self.layers if proportion.get(n, 0) > 0 and self._units(n)[1] + 1 < self._units(n)[0]]
        return max(candidates, key=lambda n: (proportion[n], n), default=None)

    def _run_round(self, index: int, proportion: Mapping[str, float], evaluate: Callable[[], Any],
                   finetune: Callable[[], Any] | None) -> bool:
        """Prune, fine-tune, check the accuracy; False (and the round undone) when it fell too far."""
        saved_state = copy.deepcopy(self.model.state_dict())
        saved_masks = self.masks.to_nni()
        achieved = self._prune_step(proportion)
        if achieved is None:
            return False
        pruned_acc = as_metric(evaluate(), "evaluator")
        finetuned_acc = pruned_acc
        if finetune is not None:
            finetune()
            self.masks.apply_all()
            finetuned_acc = as_metric(evaluate(), "evaluator")
        assert self.ori_acc is not None
        if finetuned_acc < self.ori_acc - self.acc_drop_threshold:
            self.model.load_state_dict(saved_state)
            for name, mask in saved_masks.items():
                self.masks.set(name, weight=mask.get("weight"), bias=mask.get("bias"))
            warnings.warn(
                f"sensitivity: round {index} dropped the accuracy to {finetuned_acc:.4f} (unpruned "
                f"{self.ori_acc:.4f}, acc_drop_threshold {self.acc_drop_threshold}); undone, stopping at "
                f"sparsity {self.current_sparsity():.3f} instead of {self.target_sparsity}", stacklevel=3)
            return False
        self.already_pruned.update(achieved)
        record = {"round": index, "sparsities": dict(achieved), "pruned_acc": pruned_acc,
                  "finetuned_acc": finetuned_acc, "sparsity": self.current_sparsity()}
        self.history.append(record)
        logger.info("sensitivity: round %d sparsity %.4f acc %.4f -> %.4f", index, record["sparsity"],
                    pruned_acc, finetuned_acc)
        self._checkpoint(record)
        return True

    def _checkpoint(self, record: Mapping[str, Any]) -> None:
        if self.checkpoint_dir is None:
            return
        stem = os.path.join(self.checkpoint_dir, f"Iter_{record['round']}_finetune_acc_{record['finetuned_acc']:.5f}"
                                                 f"_sparsity_{record['sparsity']:.4f}")
        torch.save(self.model.state_dict(), f"{stem}.pth")
        with open(f"{stem}_pruner.json", "w", encoding="utf-8") as handle:
            json.dump([{"sparsity": s, "op_names": [n]} for n, s in record["sparsities"].items()], handle)
        self.analyzer.export(f"{stem}_sensitivity.csv")

def _mask_sparsity(mask: torch.Tensor | None) -> float:
    return 0.0 if mask is None else float((mask == 0).sum()) / max(mask.numel(), 1)


def _bind(func: Callable[..., Any] | None, args: Sequence[Any] | None,
          kwargs: Mapping[str, Any] | None) -> Callable[[], Any]:
    args, kwargs = list(args or []), dict(kwargs or {})
    assert func is not None
    return lambda: func(*args, **kwargs)


def _check_args(evaluator: Any, finetuner: Any, per_iter: Any, threshold: Any, max_iterations: Any) -> None:
    if not callable(evaluator):
        raise ValueError(f"sensitivity: evaluator is required: a function returning the validation accuracy, got {evaluator!r}")
    if finetuner is not None and not callable(finetuner):
        raise ValueError(f"sensitivity: finetuner must be a function (or None), got {finetuner!r}")
    if isinstance(per_iter, bool) or not isinstance(per_iter, (int, float)) or not 0 < per_iter <= 1:
        raise ValueError(f"sensitivity: sparsity_per_iter must be a number in (0, 1], got {per_iter!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise ValueError(f"sensitivity: acc_drop_threshold must be a number >= 0, got {threshold!r}")
    if max_iterations is not None and (isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
                                       or max_iterations < 1):
        raise ValueError(f"sensitivity: max_iterations must be an integer >= 1 or None, got {max_iterations!r}")
