"""The one-shot layer-wise algorithms of LLM compression, as pure tensor functions.

Every function takes one layer's weight ``W`` as ``[out, in]`` (a ``Linear``'s layout) and the
calibration statistics of its input, and returns a mask or a new weight; the compressors in
``pruners/wanda.py``, ``pruners/sparsegpt.py``, ``quantization/rtn.py`` and
``quantization/gptq.py`` drive them layer by layer (``layerwise.py``).

- Wanda (Sun et al., 2023): score ``|W_ij| * ||X_j||_2``, pruned per output row.
- SparseGPT (Frantar & Alistarh, 2023): optimal-brain-surgeon reconstruction with the calibration
  Hessian ``H = 2 X X^T`` (plus damping), columns processed left to right in blocks with lazy batch
  updates; the mask of each block is chosen by ``w^2 / [H^-1]_jj^2`` (the OBS saliency, using the
  Cholesky factor of ``H^-1`` as the paper's implementation does).
- GPTQ (Frantar et al., 2023): the same column sweep with the Cholesky factor of ``H^-1``,
  quantizing each column to its group's grid and spreading the error over the later columns;
  optional ``act_order`` (columns by decreasing ``H_jj``) with groups fixed in the original order
  (static groups), so the grid stays contiguous groups of input columns (what ``MatMulNBits`` stores).
- RTN: every group rounded to nearest on its own min/max (asymmetric) or max-abs (symmetric) grid.

``n:m`` patterns follow Zhou et al. (2021) and NVIDIA's sparse tensor cores: at most ``n`` non-zero
weights in every ``m`` consecutive weights of a row along the inputs (``"2:4"``: 50 %).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aup.compression.keyspec import parse_nm

__all__ = ["parse_nm", "magnitude_mask", "wanda_mask", "sparsegpt_prune", "Grid", "grid_for", "quantize_on_grid",
           "rtn_quantize", "gptq_quantize", "hessian_inverse_factor", "check_solver_options"]

def _keep_largest_per_row(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask (1 keep / 0 prune) pruning the ``int(sparsity * in)`` lowest scores of every row."""
    k = int(score.shape[1] * sparsity)
    mask = torch.ones_like(score)
    if k > 0:
        order = torch.argsort(score, dim=1, stable=True)
        mask.scatter_(1, order[:, :k], 0.0)
    return mask


def _keep_nm(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Mask keeping the ``n`` highest scores of every ``m`` consecutive columns of each row."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"an n:m pattern needs the input size ({cols}) to be a multiple of m={m}")
    grouped = score.reshape(rows, cols // m, m)
    mask = torch.zeros_like(grouped)
    mask.scatter_(2, torch.topk(grouped, n, dim=2).indices, 1.0)
    return mask.reshape(rows, cols)


def _select(score: torch.Tensor, sparsity: float | str) -> torch.Tensor:
    nm = parse_nm(sparsity)
    return _keep_nm(score, *nm) if nm else _keep_largest_per_row(score, float(sparsity))


def magnitude_mask(weight: torch.Tensor, sparsity: float | str) -> torch.Tensor:
    """``|W|`` compared per output row (Wanda's comparison group without the activations; the Wanda
    paper's own magnitude baseline compares a whole layer, aup's ``level`` pruner, except for n:m)."""
    return _select(weight.detach().abs().float(), sparsity)


def wanda_mask(weight: torch.Tensor, input_sq_norm: torch.Tensor, sparsity: float | str) -> torch.Tensor:
    """Wanda: ``|W_ij| * ||X_j||_2`` compared within each output row (or each n:m group of it).

    ``input_sq_norm[j]`` is the sum over calibration tokens of ``x_j^2``.
    """
    score = weight.detach().abs().float() * input_sq_norm.float().clamp_min(0).sqrt()[None, :]
    return _select(score, sparsity)


def check_solver_options(compressor: str, damp: Any, block_size: Any) -> None:
    """The options both OBS solvers (SparseGPT, GPTQ) take; a one-line ValueError naming ``compressor``."""
    if not (isinstance(damp, (int, float)) and 0 < damp < 1):
        raise ValueError(f"{compressor}: damp must be a number in (0, 1), got {damp!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{compressor}: block_size must be an integer >= 1, got {block_size!r}")


def hessian_inverse_factor(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, dead columns)``.

    Columns whose input was always zero (``H_jj = 0``) are "dead": their diagonal is set to 1 and
    their weight is irrelevant to the output. ``damp`` is the fraction of the mean diagonal added
    (the papers' 1 %); the damping grows tenfold until the factorisation succeeds.
    """
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    mean = float(torch.diag(h).mean())
    for attempt in range(6):
        damped = h + (damp * 10 ** attempt) * mean * torch.eye(h.shape[0], dtype=h.dtype)
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper, dead
    raise ValueError("the calibration Hessian is not positive definite even with damping")


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float | str, *, damp: float = 0.01,
                    block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT: ``(new weight, mask)`` with the mask's zeros and the others updated to compensate.

    Unstructured: in every block of ``block_size`` columns the ``round(sparsity * rows * cols)``
    weights of lowest ``w^2 / [U]_jj^2`` (``U`` the Cholesky factor of ``H^-1``) are pruned, chosen
    on the weights as updated by the earlier blocks (adaptive mask selection). n:m: the choice is made
    per group of ``m`` columns, when the sweep reaches it.
    """
    nm = parse_nm(sparsity)
    w = weight.detach().double().clone()
    rows, cols = w.shape
    if nm and cols % nm[1]:
        raise ValueError(f"an n:m pattern needs the input size ({cols}) to be a multiple of m={nm[1]}")
    if nm:
        block_size = max(nm[1], block_size // nm[1] * nm[1])
    u, dead = hessian_inverse_factor(hessian, damp)
    w[:, dead] = 0
    keep = torch.ones_like(w)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        w1, u1 = w[:, start:end].clone(), u[start:end, start:end]
        err = torch.zeros_like(w1)
        saliency_den = torch.diag(u1)[None, :] ** 2
        mask1 = torch.ones_like(w1)
        if not nm:
            score = (w1 ** 2 / saliency_den).flatten()
            k = int(round(float(sparsity) * score.numel()))
            if k:
                mask1.view(-1)[torch.argsort(score, stable=True)[:k]] = 0
        for i in range(end - start):
            if nm and i % nm[1] == 0:
                group = w1[:, i:i + nm[1]] ** 2 / saliency_den[:, i:i + nm[1]]
                mask1[:, i:i + nm[1]] = 0
                mask1[:, i:i + nm[1]].scatter_(1, torch.topk(group, nm[0], dim=1).indices, 1.0)
            col = w1[:, i]
            q = col * mask1[:, i]
            e = (col - q) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            w1[:, i] = q
            err[:, i] = e
        w[:, start:end] = w1
        keep[:, start:end] = mask1
        w[:, end:] -= err @ u[start:end, end:]
    return (w * keep).to(weight.dtype), keep.to(weight.dtype)


# ---------------------------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class Grid:
    """A group-wise integer grid: ``value = (q - zero) * scale`` for integer ``q`` in ``[0, 2**bits)``.

    ``scale``/``zero``: ``[out, n_groups]``; each group is ``group_size`` consecutive input columns.
    Symmetric grids have ``zero = 2**(bits-1)`` everywhere (GPTQ's and ``MatMulNBits``' default).
    """

    bits: int
    group_size: int
    scale: torch.Tensor
    zero: torch.Tensor
    symmetric: bool

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.group_size, dim=1)


def grid_for(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> Grid:
    """The min/max (asymmetric) or max-abs (symmetric) grid of every ``group_size`` columns of ``weight``.

    Symmetric: ``scale = 2 max|w| / (2^b - 1)`` and ``zero = 2^(b-1)`` (GPTQ's convention). Asymmetric: the
    range is widened to contain 0 and the zero point rounded to an integer code.
    """
    rows, cols = weight.shape
    if cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide the layer's input size {cols}")
    w = weight.detach().double().reshape(rows, cols // group_size, group_size)
    qmax = 2 ** bits - 1
    if symmetric:
        amax = w.abs().amax(dim=2)
        scale = 2 * amax / qmax
        zero = torch.full_like(scale, 2 ** (bits - 1))
    else:
        low, high = w.amin(dim=2).clamp(max=0), w.amax(dim=2).clamp(min=0)
        scale = (high - low) / qmax
        zero = torch.round(-low / torch.where(scale > 0, scale, torch.ones_like(scale))).clamp(0, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group: any scale
    return Grid(bits, group_size, scale, zero, symmetric)


def quantize_on_grid(weight: torch.Tensor, grid: Grid, columns: slice | None = None) -> torch.Tensor:
    """Round ``weight`` (all columns, or the ``columns`` slice of the layer) to nearest on ``grid``."""
    scale, zero = grid.expand(grid.scale), grid.expand(grid.zero)
    if columns is not None:
        scale, zero = scale[:, columns], zero[:, columns]
    q = torch.clamp(torch.round(weight.double() / scale + zero), 0, 2 ** grid.bits - 1)
    return ((q - zero) * scale).to(weight.dtype)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> tuple[torch.Tensor, Grid]:
    """Round to nearest, each group on its own grid."""
    grid = grid_for(weight, bits, group_size, symmetric)
    return quantize_on_grid(weight, grid), grid


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int, symmetric: bool, *,
                  damp: float = 0.01, act_order: bool = False, block_size: int = 128) -> tuple[torch.Tensor, Grid]:
    """GPTQ: ``(quantized weight on the returned grid, grid)``.

    Without ``act_order`` each group's grid is fitted when the sweep reaches its first column, on
    the weights as updated by the earlier columns (the paper's grouping); with it the columns are
    visited by decreasing ``H_jj`` and the grids are fitted up front on the original groups.
    Weights that are exactly zero on entry (a pruned model) stay zero, and the error of keeping them
    there is spread over the later columns like any rounding error (SparseGPT's joint
    sparsity + quantization); zero lies on every grid.
    """
    rows, cols = weight.shape
    if cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide the layer's input size {cols}")
    w = weight.detach().double().clone()
    keep = (w != 0).double()
    h = hessian.double()
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols)
    static = grid_for(w, bits, group_size, symmetric) if act_order else None
    u, dead = hessian_inverse_factor(h[perm][:, perm], damp)
    w = w[:, perm]
    w[:, dead] = 0
    block_size = max(group_size, block_size // group_size * group_size)
    scale = torch.zeros(rows, cols // group_size, dtype=torch.double)
    zero = torch.zeros_like(scale)
    if static is not None:
        scale, zero = static.scale.clone(), static.zero.clone()
    q_all = torch.zeros_like(w)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        w1, u1 = w[:, start:end].clone(), u[start:end, start:end]
        err = torch.zeros_like(w1)
        for i in range(end - start):
            column = start + i
            original = int(perm[column])
            group = original // group_size
            if static is None and column % group_size == 0:
                fitted = grid_for(w1[:, i:i + group_size], bits, group_size, symmetric)
                scale[:, group], zero[:, group] = fitted.scale[:, 0], fitted.zero[:, 0]
            s, z = scale[:, group], zero[:, group]
            col = w1[:, i]
            q = (torch.clamp(torch.round(col / s + z), 0, 2 ** bits - 1) - z) * s * keep[:, original]
            e = (col - q) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            q_all[:, column] = q
            err[:, i] = e
        w[:, end:] -= err @ u[start:end, end:]
    result = torch.empty_like(q_all)
    result[:, perm] = q_all
    return result.to(weight.dtype), Grid(bits, group_size, scale, zero, symmetric)
