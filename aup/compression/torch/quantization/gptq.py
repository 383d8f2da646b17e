"""``gptq``: weight-only quantization with second-order error compensation (Frantar et al., ICLR 2023).

Layers are quantized in the order they run, each calibrated on the outputs of the already-quantized
layers before it (:mod:`aup.compression.torch.layerwise`). Per layer, the calibration Hessian
``H = 2 X X^T / tokens`` (plus ``damp`` x its mean diagonal) gives the upper Cholesky factor of
``H^-1``; columns are quantized left to right (or by decreasing ``H_jj`` with ``act_order``) in
blocks with lazy batch updates, each column's rounding error spread over the columns not yet
quantized. The result lies on a group-wise grid (:mod:`.weight_only`) that the deployment writer
ships as is. Until calibration batches exist the weights are rounded to nearest (RTN) on their own
grid; calibration: :mod:`aup.compression.torch.calibration_set`.
"""
from __future__ import annotations

import warnings
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from aup.compression.torch.calibration_set import CalibrationSource, eval_mode
from aup.compression.torch.layerwise import InputStats, get_weight, sequential, set_weight
from aup.compression.torch.obs import Grid, check_solver_options, gptq_quantize
from aup.compression.torch.quantization.base import QuantLayer
from aup.compression.torch.quantization.weight_only import WeightOnlyQuantizer

__all__ = ["GPTQQuantizer"]


class GPTQQuantizer(WeightOnlyQuantizer):
    """``GPTQQuantizer(model, config_list, optimizer=None, dummy_input=None, calibration=None,
    n_calibration_batches=8, damp=0.01, block_size=128)``; entries may set ``act_order``."""

    compressor_name: ClassVar[str] = "gptq"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, dummy_input: Any = None,
                 calibration: Sequence[Any] | None = None, n_calibration_batches: int = 8,
                 damp: float = 0.01, block_size: int = 128) -> None:
        check_solver_options(self.compressor_name, damp, block_size)
        super().__init__(model, config_list, optimizer, dummy_input)
        self.calibration = CalibrationSource(calibration, n_calibration_batches, self._recorder, dummy_input)
        self.damp, self.block_size = float(damp), block_size
        self.fitted: dict[str, Grid] = {}
        self.calibrated_groups: list[list[str]] = []

    def grid_of(self, layer: QuantLayer, weight: torch.Tensor) -> Grid:
        return self.fitted.get(layer.name) or super().grid_of(layer, weight)

    @property
    def calibrated(self) -> bool:
        return bool(self.fitted)

    def calibrate(self) -> None:
        """Run GPTQ on every selected layer, in order (needs calibration batches)."""
        batches = self.calibration.batches()
        if batches is None:
            raise ValueError("gptq: no calibration batches yet: pass calibration=[batches], dummy_input=..., or run "
                             "the model on data first")
        by_name = {layer.name: layer for layer in self.layers}

        def process(name: str, module: nn.Module, stats: InputStats) -> None:
            layer = by_name[name]
            quantized, grid = gptq_quantize(
                get_weight(module), stats.hessian_matrix(), layer.bits["weight"], self.group_sizes[name],
                self.symmetric(layer), damp=self.damp, act_order=bool(layer.config.get("act_order", False)),
                block_size=self.block_size)
            set_weight(module, quantized)
            self.fitted[name] = grid

        with self._paused(), eval_mode(self.model):
            self.calibrated_groups = sequential(self.model, list(by_name), batches, process, hessian=True).groups

    def _calibrate_when_ready(self) -> None:
        if not self.calibrated and self.calibration.ready():
            self.calibrate()

    def compress(self) -> nn.Module:
        """Calibrate now when batches exist (else at the first step after the model saw enough), then attach."""
        self._calibrate_when_ready()
        return super().compress()

    def after_optimizer_step(self) -> None:
        self._calibrate_when_ready()

    def step(self) -> None:
        super().step()
        if self._step_hook is not None:
            self._calibrate_when_ready()

    def export_model(self, model_path: str, *args: Any, **kwargs: Any) -> str:
        self._calibrate_when_ready()
        if not self.calibrated:
            warnings.warn("gptq: never calibrated (no batches); exporting round-to-nearest weights", stacklevel=2)
        return super().export_model(model_path, *args, **kwargs)
