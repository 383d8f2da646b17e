"""``admm``: weight pruning as constrained optimisation with ADMM (Zhang et al., ECCV 2018).

Pruning asks for weights W that minimise the loss subject to "at most a fraction (1 - s) of each
layer survives" (for filter pruning: of each layer's filters). ADMM splits this into a copy Z that
carries the constraint and a scaled dual U, and alternates:

1. W-step: train ``loss(W) + rho/2 * ||W - Z + U||^2`` for ``training_epochs`` with the user's
   ``trainer``. As in NNI 2.0, the penalty is applied by the ``callback`` the trainer calls between
   ``loss.backward()`` and ``optimizer.step()``: one gradient step of size 1 on the penalty,
   ``W <- W - rho * (W - Z + U)``, so ``row`` means the same thing whatever optimizer is used.
2. Z-step: ``Z = projection(W + U)`` onto the sparsity set of the base algorithm (keep the largest
   elements for ``level``; the best-scored whole filters for ``l1``/``l2``/``fpgm``).
3. U-step: ``U += W - Z``.

After ``num_iterations`` rounds W is close to a sparse point, and the base algorithm's masks at the
configured sparsity prune it with little loss. NNI 2.0 trains with its own
``Adam(lr=1e-3, weight_decay=5e-5)`` and ``CrossEntropyLoss``; so do we (``criterion`` may be
given). NNI initialised Z with the *same tensor* as W (so the first round had no penalty); Z^0 is a
copy of W^0 here, as in the paper. The defaults (30 x 5 epochs) are expensive: examples use less.

The loop is :func:`admm_optimize`, reusable on any set of layers (AutoCompress calls it).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from aup.compression.torch.analysis import WEIGHT_ALGOS, base_pruner_class, progress
from aup.compression.torch.pruners.base import Pruner
from aup.compression.torch.pruners.schedule import CriterionSchedule

__all__ = ["ADMMPruner", "ADMMResult", "admm_optimize", "make_projection"]

logger = logging.getLogger(__name__)

Trainer = Callable[..., Any]
Projection = Callable[[str, torch.Tensor, float], torch.Tensor]


@dataclass
class ADMMResult:
    """State after :func:`admm_optimize`: the auxiliary and dual variables and per-round residuals.

    ``primal_residuals[k]`` is ``||W - Z|| / ||W||`` over all layers after round k (how far the
    trained weights still are from the sparse set); ``dual_residuals[k]`` is ``||Z_k - Z_{k-1}|| / ||W||``.
    """

    Z: dict[str, torch.Tensor]
    U: dict[str, torch.Tensor]
    primal_residuals: list[float] = field(default_factory=list)
    dual_residuals: list[float] = field(default_factory=list)


def _with_weight(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    """A shallow stand-in of ``module`` whose ``weight`` is ``weight`` (for scoring a tensor with a
    criterion written for modules); the real module, its hooks and its parameters are untouched."""
    proxy = copy.copy(module)
    proxy._parameters = dict(module._parameters)  # type: ignore[assignment]
    proxy._parameters["weight"] = nn.Parameter(weight.detach().clone(), requires_grad=False)
    return proxy


def make_projection(model: nn.Module, sparsities: Mapping[str, float], base_algo: str = "l1") -> Projection:
    """Euclidean projection onto the base algorithm's sparsity set: the tensor times its base mask.

    ``level`` keeps the largest-magnitude elements; ``l1``/``l2``/``fpgm`` keep whole filters by their
    criterion (the projection onto "at most k filters" keeps the filters of largest norm).
    """
    cls = base_pruner_class(base_algo, WEIGHT_ALGOS)
    criterion = cls(model, [{"sparsity": 0.5, "op_names": [name]} for name in sparsities])

    def project(name: str, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        proxy = _with_weight(criterion.layers[name].module, weight)
        mask = criterion.calc_mask(name, proxy, float(sparsity)).get("weight")
        return weight.detach().clone() if mask is None else weight.detach() * mask.to(weight)

    return project


def admm_optimize(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    sparsities: Mapping[str, float],
    trainer: Trainer,
    criterion: Callable[..., torch.Tensor] | None = None,
    num_iterations: int = 30,
    training_epochs: int = 5,
    row: float = 1e-4,
    base_algo: str | Projection = "l1",
    optimizer: torch.optim.Optimizer | None = None,
) -> ADMMResult:
    """Run the ADMM loop on ``layers`` (name -> module) towards ``sparsities``; returns Z, U, residuals.

    ``trainer(model, optimizer=, criterion=, epoch=, callback=)`` trains one epoch and calls
    ``callback()`` between ``loss.backward()`` and ``optimizer.step()``. ``base_algo`` is a name
    (level, l1, l2, fpgm) or a projection ``f(name, tensor, sparsity) -> tensor``.
    """
    _check_admm_args(trainer, num_iterations, training_epochs, row)
    project = base_algo if callable(base_algo) else make_projection(model, sparsities, base_algo)
    weights = {name: layers[name].weight for name in sparsities}
    Z = {name: w.detach().clone() for name, w in weights.items()}
    U = {name: torch.zeros_like(w.detach()) for name, w in weights.items()}
    result = ADMMResult(Z, U)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5)
    criterion = criterion or nn.CrossEntropyLoss()

    @torch.no_grad()
    def callback() -> None:
        for name, w in weights.items():
            w.sub_(row * (w - Z[name] + U[name]))

    with progress("ADMM", num_iterations * training_epochs) as advance:
        for k in range(num_iterations):
            for epoch in range(training_epochs):
                trainer(model, optimizer=optimizer, criterion=criterion, epoch=epoch, callback=callback)
                advance(note=f"iteration {k + 1}/{num_iterations}")
            _admm_update(weights, sparsities, project, result)
            logger.info("ADMM iteration %d/%d: ||W-Z||/||W|| = %.4g", k + 1, num_iterations, result.primal_residuals[-1])
    return result


@torch.no_grad()
def _admm_update(weights: Mapping[str, torch.Tensor], sparsities: Mapping[str, float],
                 project: Projection, result: ADMMResult) -> None:
    """Z-step and U-step for every layer, and the round's residuals."""
    primal = dual = norm = 0.0
    for name, w in weights.items():
        w = w.detach()
        z_new = project(name, w + result.U[name], sparsities[name]).to(w)
        dual += float((z_new - result.Z[name]).pow(2).sum())
        result.Z[name] = z_new
        result.U[name] = result.U[name] + w - z_new
        primal += float((w - z_new).pow(2).sum())
        norm += float(w.pow(2).sum())
    scale = max(norm, 1e-12) ** 0.5
    result.primal_residuals.append(primal ** 0.5 / scale)
    result.dual_residuals.append(dual ** 0.5 / scale)


def _check_admm_args(trainer: Any, num_iterations: Any, training_epochs: Any, row: Any) -> None:
    if not callable(trainer):
        raise ValueError("admm: trainer is required: a function trainer(model, optimizer, criterion, epoch, callback) "
                         f"that trains one epoch and calls callback() before optimizer.step(); got {trainer!r}")
    for key, value in (("num_iterations", num_iterations), ("training_epochs", training_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"admm: {key} must be an integer >= 1, got {value!r}")
    if isinstance(row, bool) or not isinstance(row, (int, float)) or not row > 0:
        raise ValueError(f"admm: row (the ADMM penalty rho) must be a number > 0, got {row!r}")


class ADMMPruner(CriterionSchedule):
    """``ADMMPruner(model, config_list, trainer, num_iterations=30, training_epochs=5, row=1e-4,
    base_algo='l1', criterion=None)``.

    ``compress()`` runs the ADMM optimisation (trains the model), then prunes with ``base_algo`` at the
    configured per-layer sparsities. ``l1``/``l2``/``fpgm`` prune whole Conv2d filters (shrinkable by
    ``apply_speedup``); ``level`` prunes elements of any weighted layer. ``self.admm`` keeps the
    :class:`ADMMResult` (residual history).
    """

    compressor_name: ClassVar[str] = "admm"

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        trainer: Trainer | None = None,
        num_iterations: int = 30,
        training_epochs: int = 5,
        row: float = 1e-4,
        base_algo: str = "l1",
        criterion: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        _check_admm_args(trainer, num_iterations, training_epochs, row)
        super().__init__(model, config_list, base_pruner_class(base_algo, WEIGHT_ALGOS)(model, config_list))
        self.trainer = trainer
        self.num_iterations = num_iterations
        self.training_epochs = training_epochs
        self.row = float(row)
        self.base_algo = base_algo
        self.criterion = criterion
        self.admm: ADMMResult | None = None

    def compress(self) -> nn.Module:
        """ADMM-train the model, then apply the base algorithm's masks. Returns the model."""
        if self.masks_calculated:
            return self.model
        sparsities = self.layer_sparsities()
        layers = {name: layer.module for name, layer in self.layers.items()}
        self.admm = admm_optimize(
            self.model, layers, sparsities, self.trainer, self.criterion, self.num_iterations,
            self.training_epochs, self.row, self.base_algo,
        )
        self._attach_masks()
        self.prune_to(sparsities)  # the criterion's full rule (e.g. filters + their BatchNorm)
        self.masks_calculated = True
        return self.model
