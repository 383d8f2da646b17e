"""``OneShotPruner``: the shared part of Wanda and SparseGPT (calibrated, layer by layer, no retraining).

Selection is NNI's ``config_list`` over ``Linear`` layers (and transformers' ``Conv1D``); each entry
gives ``sparsity``, a number in (0, 1) (that fraction of every selected layer, compared per output
row for Wanda, per block for SparseGPT) or an ``"n:m"`` string (at most n non-zero weights in every
m consecutive inputs of a row; ``"2:4"`` is 50 %). Calibration batches: see
:mod:`aup.compression.torch.calibration_set`. Layers are processed in the order they run, each on
inputs produced by the already-pruned layers before it (:mod:`aup.compression.torch.layerwise`).
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from aup.compression.torch.calibration_set import CalibrationSource, eval_mode
from aup.compression.torch.layerwise import InputStats, get_weight, linear_check, sequential, set_weight, weight_layout
from aup.compression.torch.obs import parse_nm
from aup.compression.torch.pruners.base import Pruner

__all__ = ["OneShotPruner"]


class OneShotPruner(Pruner):
    """Calibrated one-shot pruning; subclasses implement :meth:`prune_layer`."""

    needs_hessian: ClassVar[bool] = False
    fresh_masks: ClassVar[bool] = True

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, dummy_input: Any = None,
                 calibration: Sequence[Any] | None = None, n_calibration_batches: int = 8) -> None:
        for index, entry in enumerate(config_list):
            try:
                parse_nm(entry.get("sparsity"))
            except ValueError as exc:
                raise ValueError(f"config_list[{index}].sparsity: {exc}") from None
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)
        for name, layer in self.layers.items():  # refused before any layer is touched
            nm = parse_nm(layer.config.get("sparsity"))
            columns = get_weight(layer.module).shape[1]
            if nm and columns % nm[1]:
                raise ValueError(f"config_list[{layer.entry_index}].sparsity: {layer.config['sparsity']!r} needs the "
                                 f"input size of {name!r} ({columns}) to be a multiple of {nm[1]}")
        self.calibration = CalibrationSource(calibration, n_calibration_batches, self._recorder, dummy_input)
        self.calibrated_groups: list[list[str]] = []

    def check_module(self, name: str, module: nn.Module) -> str | None:
        return linear_check(name, module)

    def layer_sparsities(self) -> dict[str, Any]:  # type: ignore[override]
        """Per layer, the entry's ``sparsity``: a number, or an ``"n:m"`` pattern string."""
        return {name: layer.config["sparsity"] for name, layer in self.layers.items()}

    def statistics_ready(self) -> bool:
        return self.calibration.ready()

    @abc.abstractmethod
    def prune_layer(self, weight: torch.Tensor, stats: InputStats, sparsity: float | str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(new weight [out, in], mask [out, in])`` of one layer from its input statistics
        (contracts.LayerwisePruner)."""

    def calc_masks(self, sparsities: dict[str, Any]) -> dict[str, dict[str, torch.Tensor | None]]:
        batches = self.calibration.batches()
        if batches is None:
            raise ValueError(f"{self.compressor_name}: no calibration batches yet: pass calibration=[batches], "
                             "dummy_input=..., or run the model on data first")
        masks: dict[str, dict[str, torch.Tensor | None]] = {}

        def process(name: str, module: nn.Module, stats: InputStats) -> None:
            current = self.masks.masks.get(name, {}).get("weight")
            weight = get_weight(module)
            if current is not None:  # a schedule raising the sparsity keeps what was pruned before
                weight = weight * weight_layout(module, current.to(weight))
            new, mask = self.prune_layer(weight, stats, sparsities[name])
            set_weight(module, new * mask)
            masks[name] = {"weight": weight_layout(module, mask).to(module.weight.dtype), "bias": None}

        with self._paused(), eval_mode(self.model):
            done = sequential(self.model, list(sparsities), batches, process, hessian=self.needs_hessian)
        self.calibrated_groups = done.groups
        return masks
