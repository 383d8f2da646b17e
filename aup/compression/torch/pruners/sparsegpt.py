"""``sparsegpt``: one-shot pruning with reconstruction (Frantar & Alistarh, ICML 2023).

For each layer the calibration Hessian ``H = 2 X X^T / tokens`` (plus ``damp`` x its mean diagonal)
gives the Cholesky factor of ``H^-1``; columns are swept left to right in blocks of ``block_size``
with lazy batch updates: each pruned weight's error is spread over the not-yet-processed weights of
its row (optimal brain surgeon), and the mask of every block is chosen by ``w^2 / [H^-1]_jj^2`` on
the weights as updated so far (the paper's adaptive mask selection); ``"n:m"`` chooses per group
of m columns. The kept weights change, so the layer's output error is lower than a mask alone
gives (Wanda, magnitude) at the same sparsity. Algorithm: :func:`aup.compression.torch.obs.sparsegpt_prune`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from aup.compression.torch.layerwise import InputStats
from aup.compression.torch.obs import check_solver_options, sparsegpt_prune
from aup.compression.torch.pruners.one_shot import OneShotPruner

__all__ = ["SparseGPTPruner"]


class SparseGPTPruner(OneShotPruner):
    """``SparseGPTPruner(model, config_list, optimizer=None, dummy_input=None, calibration=None,
    n_calibration_batches=8, damp=0.01, block_size=128)``."""

    compressor_name: ClassVar[str] = "sparsegpt"
    needs_hessian: ClassVar[bool] = True

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, dummy_input: Any = None,
                 calibration: Sequence[Any] | None = None, n_calibration_batches: int = 8,
                 damp: float = 0.01, block_size: int = 128) -> None:
        check_solver_options(self.compressor_name, damp, block_size)
        super().__init__(model, config_list, optimizer, dummy_input, calibration, n_calibration_batches)
        self.damp, self.block_size = float(damp), block_size

    def prune_layer(self, weight: torch.Tensor, stats: InputStats, sparsity: float | str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        return sparsegpt_prune(weight, stats.hessian_matrix(), sparsity, damp=self.damp, block_size=self.block_size)
