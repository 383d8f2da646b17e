"""``auto_compress``: AutoCompress (Liu et al., AAAI 2020, arXiv 1907.03141), NNI 2.0's ``AutoCompressPruner``.

``num_iterations`` rounds, each on the model left by the previous one:

1. simulated annealing (:mod:`.simulated_annealing`) picks per-layer sparsities for this round's
   share of the target, ``1 - (1 - sparsity) ** (1 / num_iterations)`` (NNI 2.0's split: the rounds
   compound to the overall target on the weights they see);
2. ADMM (Zhang et al., ECCV 2018) trains the model towards those sparsities: ``admm_num_iterations``
   times, ``admm_training_epochs`` epochs of the user's ``trainer`` with the proximal gradient
   ``row * (W - Z + U)`` added through the ``callback``, then ``Z = proj(W + U)`` onto the sparsity
   set of ``base_algo`` and ``U += W - Z`` (NNI's own Adam, lr 1e-3, weight decay 5e-5);
3. the base criterion masks the trained weights;
4. the model is physically shrunk (``shrink_model`` with ``dummy_input``), so the next round
   searches the smaller network.

After ``compress()`` the model is already shrunk (``speedup_applied``); ``export_model`` saves it.
Cost: ``num_iterations x (SA evaluations + admm_num_iterations x admm_training_epochs epochs)``.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from aup.compression.torch.pruners._search import (
    SearchPruner, check_callable, check_number, is_structured, make_base_pruner, mask_with, progress, working_dir,
    write_json,
)
from aup.compression.torch.pruners.admm import admm_optimize
from aup.compression.torch.pruners.simulated_annealing import SimulatedAnnealingPruner

__all__ = ["AutoCompressPruner"]


# ----------------------------------------------------------------------------- pruner
class AutoCompressPruner(SearchPruner):
    """``AutoCompressPruner(model, config_list, trainer, evaluator, dummy_input, num_iterations=3,
    optimize_mode='maximize', base_algo='l1', start_temperature=100, stop_temperature=20,
    cool_down_rate=0.9, perturbation_magnitude=0.35, admm_num_iterations=30, admm_training_epochs=5,
    row=1e-4, experiment_data_dir=None, seed=None)``.

    ``trainer(model, optimizer, criterion, epoch, callback)`` trains one epoch (called by keyword,
    ``callback()`` after ``loss.backward()``); ``evaluator(model) -> float``; ``dummy_input`` drives
    the physical shrink. ``experiment_data_dir`` None (default) uses a temporary directory.
    """

    compressor_name: ClassVar[str] = "auto_compress"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], trainer: Callable[..., Any],
                 evaluator: Callable[[nn.Module], float], dummy_input: Any, num_iterations: int = 3,
                 optimize_mode: str = "maximize", base_algo: str = "l1", start_temperature: float = 100,
                 stop_temperature: float = 20, cool_down_rate: float = 0.9, perturbation_magnitude: float = 0.35,
                 admm_num_iterations: int = 30, admm_training_epochs: int = 5, row: float = 1e-4,
                 experiment_data_dir: str | None = None, seed: int | None = None) -> None:
        name = self.compressor_name
        if dummy_input is None:
            raise ValueError(f"{name}: dummy_input is required (an example input batch for the physical shrink)")
        super().__init__(model, config_list, base_algo=base_algo, optimize_mode=optimize_mode, dummy_input=dummy_input)
        self.trainer = check_callable(name, "trainer", trainer)
        self.evaluator = check_callable(name, "evaluator", evaluator)
        self.num_iterations = check_number(name, "num_iterations", num_iterations, 1, integer=True)
        self.admm_num_iterations = check_number(name, "admm_num_iterations", admm_num_iterations, 1, integer=True)
        self.admm_training_epochs = check_number(name, "admm_training_epochs", admm_training_epochs, 1, integer=True)
        self.row = float(check_number(name, "row", row, 0, low_open=True))
        self.sa_args = dict(optimize_mode=optimize_mode, base_algo=base_algo, start_temperature=start_temperature,
                            stop_temperature=stop_temperature, cool_down_rate=cool_down_rate,
                            perturbation_magnitude=perturbation_magnitude)
        SimulatedAnnealingPruner(model, config_list, evaluator, **self.sa_args)  # validates the SA arguments now
        self.seed = seed
        self._data_dir_arg = experiment_data_dir
        self.experiment_data_dir: str | None = None
        self.original_weights = sum(self.weight_counts.values())

    @property
    def round_sparsity(self) -> float:
        """Sparsity each round removes from the weights it sees; compounds to the target."""
        return 1 - (1 - self.target_sparsity) ** (1 / self.num_iterations)

    def current_weights(self) -> int:
        return sum(layer.module.weight.numel() for layer in self.layers.values())

    def sparsity(self) -> float:
        """Achieved sparsity: weights removed from the configured layers (physically) over the original."""
        return 1 - self.current_weights() / self.original_weights

    def compress(self) -> nn.Module:
        """Run the rounds; the model comes back physically shrunk."""
        if self.history:
            return self.model
        self.experiment_data_dir = working_dir(self._data_dir_arg, self.compressor_name)
        started = time.perf_counter()
        for index in range(self.num_iterations):
            sparsities = self._round(index)
            score = float(self.evaluator(self.model))
            self.history.append({"round": index + 1, "sparsities": sparsities, "score": score,
                                 "weights": self.current_weights(), "sparsity": self.sparsity()})
            write_json(os.path.join(self.experiment_data_dir, "auto_compress_history.json"), self.history)
            progress("auto_compress: round %d/%d, sparsity %.3f, score %.4f (%.1fs)", index + 1,
                     self.num_iterations, self.sparsity(), score, time.perf_counter() - started)
        torch.save(self.model.state_dict(), os.path.join(self.experiment_data_dir, "model_compressed.pth"))
        self.masks_calculated = True
        self.speedup_applied = is_structured(self.base_algo)  # element masks cannot be shrunk
        return self.model

    def _round(self, index: int) -> dict[str, float]:
        round_dir = os.path.join(self.experiment_data_dir or ".", f"round_{index + 1}")
        config = [{"sparsity": self.round_sparsity, "op_names": list(self.layers)}]
        seed = None if self.seed is None else self.seed + index
        sa = SimulatedAnnealingPruner(self.model, config, self.evaluator, experiment_data_dir=round_dir, seed=seed,
                                      **self.sa_args)
        sparsities = sa.search()
        modules = {n: layer.module for n, layer in self.layers.items()}
        active = {n: s for n, s in sparsities.items() if s > 0}
        admm_optimize(self.model, modules, active, self.trainer, num_iterations=self.admm_num_iterations,
                      training_epochs=self.admm_training_epochs, row=self.row, base_algo=self.base_algo)
        pruner = make_base_pruner(self.model, self.base_algo, list(self.layers), self.dummy_input)
        mask_with(pruner, sparsities)
        masks = pruner.masks.to_nni()
        pruner.masks.apply_all()
        pruner.masks.detach()
        torch.save(masks, os.path.join(round_dir, "mask.pth"))
        if is_structured(self.base_algo):
            from aup.compression.torch.shrink.core import shrink_model

            self.shrink_report = shrink_model(self.model, masks, self.dummy_input)
            self.speedup_masks = masks
        else:  # element-wise masks cannot shrink; keep them enforced for the next rounds
            self._keep_level_masks(masks)
        return sparsities

    def _keep_level_masks(self, masks: Mapping[str, Mapping[str, Any]]) -> None:
        """Element masks cannot shrink: keep this round's enforced on the model for the next rounds."""
        self.apply_sparsities({}, masks)
