"""What a compressor plugin must provide, written down once: the contracts of every plugin kind.

The framework bases (``torch.pruners.base.Pruner``, ``torch.pruners.structured.FilterPruner``,
``torch.quantization.base.Quantizer``, ``tensorflow.base.KerasPruner``...) give everything else; a new
compressor is one class implementing the hook of its kind plus one catalog entry. The bases declare
these hooks abstract, so a class that forgets its hook fails when it is built, naming the hook, not
halfway through a trial; the Protocols below are the same contracts for type checkers and for code
that accepts any object of the kind (the contract suite, ``tests/compression/test_contract.py``,
checks every catalog entry against them). Torch-free and Keras-free at run time: the tensor types
are only named for type checkers.

Kinds and hooks:

- :class:`MaskCriterion` -- an element or channel criterion (``level``, ``slim``): ``calc_mask`` of
  one layer at one sparsity. Schedules and searches (``agp``, ``net_adapt``...) instead override
  ``calc_masks`` for all layers at once and lend their masks to a criterion; AMC overrides
  ``compute_masks`` (its agent's policy).
- :class:`FilterCriterion` -- a filter criterion (``l1_filter``, ``fpgm``...): one score per
  output filter; the base turns scores into NNI's structured masks.
- :class:`ActivationStatistic` -- an activation-based filter criterion (``apoz``, mean
  activation): the per-channel statistic of one batch.
- :class:`LayerwisePruner` -- a calibrated one-shot pruner (``wanda``, ``sparsegpt``): a new
  weight and mask of one layer from its input statistics.
- :class:`Pruner` -- what every torch pruner answers to schedules, the runner and the views.
- :class:`Quantizer` -- a torch quantizer: the fake-quantized weight and its integer grid, and the
  activations it quantizes.
- :class:`KerasPruner` -- a Keras pruner: a 0/1 mask of one kernel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - names for type checkers only
    import numpy as np
    import torch
    from torch import nn

__all__ = ["Compressor", "MaskCriterion", "FilterCriterion", "ActivationStatistic", "LayerwisePruner", "Pruner",
           "Quantizer", "KerasPruner", "HOOKS"]


@runtime_checkable
class Compressor(Protocol):
    """Every compressor of every framework: its catalog identity and NNI's ``compress``."""

    framework: ClassVar[str]
    compression_type: ClassVar[str]
    compressor_name: ClassVar[str]

    def compress(self) -> Any:
        """Attach the compression (masks, fake quantization) and return the model."""
        ...


@runtime_checkable
class MaskCriterion(Protocol):
    """Decides which elements or channels of one layer go at one sparsity."""

    def calc_mask(self, name: str, module: nn.Module, sparsity: float,
                  **context: Any) -> dict[str, torch.Tensor | None]:
        """``{"weight": mask, "bias": mask or None}`` pruning ``sparsity`` of ``module``."""
        ...


@runtime_checkable
class FilterCriterion(Protocol):
    """One importance score per output filter; the lowest-scored filters are pruned."""

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        """A 1-D tensor with one score per output filter of ``module``."""
        ...


@runtime_checkable
class ActivationStatistic(Protocol):
    """The per-channel statistic an activation criterion averages over its calibration batches."""

    def channel_statistic(self, activated: torch.Tensor) -> torch.Tensor:
        """Per-channel sum over batch and positions of one batch's activated output."""
        ...


@runtime_checkable
class LayerwisePruner(Protocol):
    """A calibrated one-shot pruner: one layer at a time, from the statistics of its inputs."""

    def prune_layer(self, weight: torch.Tensor, stats: Any,
                    sparsity: float | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(new weight [out, in], mask [out, in])``; ``sparsity`` may be an ``"n:m"`` pattern."""
        ...


@runtime_checkable
class Pruner(Compressor, Protocol):
    """What every torch pruner answers: which layers it can prune, at what sparsity, with what masks."""

    def check_module(self, name: str, module: nn.Module) -> str | None:
        """Why the pruner cannot prune ``module`` (None when it can): the config_list error's reason."""
        ...

    def layer_sparsities(self) -> dict[str, Any]:
        """Target sparsity per layer (a number, or an ``"n:m"`` pattern for one-shot pruners)."""
        ...

    def calc_masks(self, sparsities: dict[str, Any]) -> dict[str, dict[str, torch.Tensor | None]]:
        """Masks of several layers at once (per layer through ``calc_mask`` unless overridden)."""
        ...

    def statistics_ready(self) -> bool:
        """Whether the criterion has what it needs to rank (weight criteria: always)."""
        ...

    def reset_statistics(self) -> None:
        """Forget gathered statistics, so that the next masks rank on fresh batches."""
        ...


@runtime_checkable
class Quantizer(Compressor, Protocol):
    """A torch quantizer: fake quantization in training, an integer grid on export."""

    def quantize_weight(self, layer: Any, weight: torch.Tensor, *,
                        export: bool = False) -> tuple[torch.Tensor, Any]:
        """The fake-quantized weight and its ``QuantSpec``; ``export``: final value, no state change."""
        ...

    def quantize_activation(self, layer: Any, kind: str, x: torch.Tensor) -> torch.Tensor:
        """The fake-quantized input (``kind="input"``) or output of ``layer``."""
        ...

    def activation_spec(self, layer: Any, kind: str) -> dict[str, Any] | None:
        """The frozen spec of an activation quantization for export, or None."""
        ...

    def after_optimizer_step(self) -> None:
        """Run after each counted optimizer step (BNN clips its weights here)."""
        ...


@runtime_checkable
class KerasPruner(Compressor, Protocol):
    """A Keras pruner: a 0/1 array per kernel; the base keeps it in a constraint and exports it."""

    def check_layer(self, name: str, layer: Any) -> str | None:
        """Why the pruner cannot prune ``layer`` (None when it can)."""
        ...

    def calc_mask(self, name: str, weight: np.ndarray[Any, Any], sparsity: float) -> np.ndarray[Any, Any]:
        """A 0/1 array shaped like ``weight`` pruning ``sparsity`` of it."""
        ...


# The contract each kind of base holds its subclasses to: base class name -> the Protocol of its hook.
HOOKS: dict[str, type] = {
    "FilterPruner": FilterCriterion,
    "ActivationFilterPruner": ActivationStatistic,
    "OneShotPruner": LayerwisePruner,
    "Pruner": Pruner,
    "Quantizer": Quantizer,
    "KerasPruner": KerasPruner,
}
