"""Scoring heads and MLP channels, and choosing which of them go.

Criteria: ``"l1"`` (sum of |w| over the unit's slices), ``"l2"`` (Euclidean norm of the same) and
``"taylor"`` (first-order Taylor: the accumulated ``(w * dL/dw)^2`` of the unit's slices).
Grouped-query attention loses query heads in equal numbers from every key/value group, so the
``q head -> kv head`` mapping stays right.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from aup.compression.torch.pruners.transformer.blocks import HeadBlock, MlpBlock, Piece

__all__ = ["CRITERIA", "unit_importance", "removed_units"]

CRITERIA = ("l1", "l2", "taylor")


@torch.no_grad()
def unit_importance(block: HeadBlock | MlpBlock, criterion: str, param_of: Callable[[Piece], torch.Tensor],
                    taylor: Mapping[tuple[str, str], torch.Tensor], pieces: list[Piece] | None = None
                    ) -> torch.Tensor:
    """One score per head / hidden channel of ``block`` (higher = keep)."""
    total = torch.zeros(block.units, dtype=torch.float64)
    for piece in pieces if pieces is not None else block.producers + block.consumers:
        if criterion == "taylor":
            value = taylor.get((piece.module, piece.key))
            if value is None:
                raise ValueError("transformer: taylor importance needs statistics_batch_num optimizer steps first")
            part = value.narrow(piece.dim, piece.offset, piece.size * block.units)
            part = part.unflatten(piece.dim, (block.units, piece.size))
            other = tuple(d for d in range(part.dim()) if d != piece.dim)
            total += part.sum(dim=other).cpu()
            continue
        part = param_of(piece).detach().narrow(piece.dim, piece.offset, piece.size * block.units)
        # one score per unit over the unit's rows (dim 0) or columns (dim 1), without a |w| copy
        part = part.unflatten(piece.dim, (block.units, piece.size))
        other = tuple(d for d in range(part.dim()) if d != piece.dim)
        norm = torch.linalg.vector_norm(part, ord=1 if criterion == "l1" else 2, dim=other)
        total += (norm if criterion == "l1" else norm.square()).double().cpu()
    return total.sqrt() if criterion == "l2" else total


def removed_units(block: HeadBlock | MlpBlock, score: torch.Tensor, sparsity: float) -> list[int]:
    """The lowest-scored ``floor(sparsity * units)`` units (at least one always stays)."""
    if isinstance(block, HeadBlock) and block.num_kv_heads < block.num_heads:
        group = block.num_heads // block.num_kv_heads
        per_group = min(int(math.floor(sparsity * group + 1e-9)), group - 1)
        removed = []
        for g in range(block.num_kv_heads):
            local = score[g * group:(g + 1) * group]
            removed += [g * group + int(i) for i in torch.argsort(local, stable=True)[:per_group]]
        return sorted(removed)
    count = min(int(math.floor(sparsity * block.units + 1e-9)), block.units - 1)
    return sorted(int(i) for i in torch.argsort(score, stable=True)[:count])
