"""Low-bit weights in an ONNX graph: com.microsoft ``MatMulNBits`` for MatMul/Gemm, UINT4 codes for
convolutions.

Why these two forms: they are what ONNX Runtime (verified on 1.32, CPU) runs with the weight stored
at fewer than 8 bits. ``MatMulNBits`` has CPU kernels for 2-, 4- and 8-bit block-quantized weights
(``bits`` 3, 5, 6, 7 are rejected; an 8-bit weight needs integer zero points); its ``B`` is the weight
in torch's ``[out, in]`` layout, block-quantized along ``in``. A convolution has no such operator, but
``DequantizeLinear`` of an ``INT4``/``UINT4`` initializer (opset 21) feeding a float ``Conv`` runs, so
the file stores 4 bits per weight and the convolution computes in float; aup writes the dequantization as
``Cast``/``Sub``/``Mul`` instead, which ORT folds at session start (see :func:`int4_weight_nodes`).

How a grid maps onto storage (``storage_bits``): a k-bit grid is stored in the smallest supported
width that holds its codes: MatMulNBits 2 bits for k <= 2, 4 bits for k in 3..4, 8 bits for 5..8;
a convolution always 4 bits for k <= 4. The stored codes are the grid's codes, so a 3-bit grid in
4-bit storage still has 8 levels. ``onnxruntime.quantization.MatMulNBitsQuantizer`` computes its own
grids (RTN, GPTQ, HQQ); this module writes a grid the caller already holds, so the deployed weights
equal the in-memory ones.

The module imports numpy and onnx only (no torch): tensors given as grids are converted with
``numpy.asarray``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WeightGrid", "rtn_grid", "per_row_grid", "grid_codes", "storage_bits",
           "matmul_nbits_nodes", "int4_weight_nodes", "fit_channel_scales", "MSFT_DOMAIN", "BLOCK_SIZES"]

MSFT_DOMAIN = "com.microsoft"
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits' block sizes with MLAS CPU kernels
_MATMUL_NBITS = (2, 4, 8)


@dataclass(frozen=True)
class WeightGrid:
    """A weight's integer grid: ``w[o, k] = (q[o, k] - zp[o, g]) * scales[o, g]`` with ``g = k // group_size``.

    ``q`` is an integer in ``[0, 2**bits)``. ``zero_points`` None means symmetric: ``zp = 2**(bits-1)``.
    ``scales``/``zero_points`` have shape ``[out, n_groups]`` with ``n_groups = ceil(in / group_size)``;
    a ``group_size`` of at least ``in`` is one group per row (per-channel or per-tensor grids).
    For a convolution ``in`` is ``in_channels * prod(kernel)`` (the weight flattened per output channel).
    """

    bits: int
    group_size: int
    scales: Any
    zero_points: Any | None = None
    symmetric: bool = True

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scales, zero_points)`` as float64 arrays ``[out, n_groups]`` (symmetric zero points filled in)."""
        scales = _numpy(self.scales).astype(np.float64)
        if self.zero_points is None:
            return scales, np.full_like(scales, float(2 ** (self.bits - 1)))
        return scales, _numpy(self.zero_points).astype(np.float64).reshape(scales.shape)


def _numpy(value: Any) -> np.ndarray:
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach().cpu().numpy()
    return np.asarray(value)


def storage_bits(bits: int) -> int:
    """MatMulNBits width holding a ``bits``-bit grid (2, 4 or 8)."""
    return next(width for width in _MATMUL_NBITS if bits <= width)


def per_row_grid(bits: int, scale: Any, zero_point: Any, out_features: int, in_features: int) -> WeightGrid:
    """A grid with one scale/zero point per row (or one per tensor, broadcast): what aup's
    per-tensor quantizers (naive, qat, dorefa, bnn) hold."""
    scales = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1, 1), (out_features, 1)).copy()
    zps = np.broadcast_to(np.asarray(zero_point, np.float64).reshape(-1, 1), (out_features, 1)).copy()
    return WeightGrid(bits, max(in_features, 1), scales, zps, symmetric=False)


def rtn_grid(weight: Any, bits: int, group_size: int = 32) -> WeightGrid:
    """Symmetric round-to-nearest grid of a 2-D ``[out, in]`` weight, one scale per ``group_size`` inputs.

    Levels ``-(2**(bits-1)-1) .. 2**(bits-1)-1`` (a 1-bit ask gets ``{-1, 0, 1}``), scale ``max|w| / qmax``
    per group; used for a layer asked for k bits whose compressor holds no grid."""
    w = _numpy(weight).astype(np.float64)
    w = w.reshape(w.shape[0], -1)
    out, k = w.shape
    n_groups = -(-k // group_size)
    padded = np.zeros((out, n_groups * group_size))
    padded[:, :k] = w
    qmax = max(1, 2 ** (bits - 1) - 1)
    peak = np.abs(padded.reshape(out, n_groups, group_size)).max(-1)
    scales = np.where(peak > 0, peak / qmax, 1.0)
    return WeightGrid(max(bits, 2), group_size, scales, None, symmetric=True)


def grid_codes(weight: Any, grid: WeightGrid) -> np.ndarray:
    """Integer codes ``[out, in]`` of ``weight`` on ``grid`` (exact when the weight lies on it)."""
    w = _numpy(weight).astype(np.float64)
    w = w.reshape(w.shape[0], -1)
    scales, zps = grid.arrays()
    if scales.shape[0] != w.shape[0]:
        raise ValueError(f"WeightGrid: scales have {scales.shape[0]} rows, the weight {w.shape[0]}")
    index = np.minimum(np.arange(w.shape[1]) // grid.group_size, scales.shape[1] - 1)
    q = np.round(w / scales[:, index] + zps[:, index])
    return np.clip(q, 0, 2 ** grid.bits - 1).astype(np.int64)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian sub-byte packing along the last axis (element 0 in the low bits), uint8."""
    per = 8 // bits
    pad = (-values.shape[-1]) % per
    values = np.pad(values.astype(np.uint8), [(0, 0)] * (values.ndim - 1) + [(0, pad)])
    values = values.reshape(*values.shape[:-1], -1, per)
    out = np.zeros(values.shape[:-1], np.uint8)
    for j in range(per):
        out |= (values[..., j] << (bits * j)).astype(np.uint8)
    return out


def _blocked(grid: WeightGrid, k: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(block_size, scales, zero_points)`` in a block size MatMulNBits runs: a grid with one group per
    row is re-blocked (its scale repeated), a grouped one must already use a supported size."""
    scales, zps = grid.arrays()
    if grid.group_size in BLOCK_SIZES and scales.shape[1] == -(-k // grid.group_size):
        return grid.group_size, scales, zps
    if scales.shape[1] != 1:
        raise ValueError(f"WeightGrid: group_size {grid.group_size} is not one MatMulNBits runs "
                         f"({', '.join(map(str, BLOCK_SIZES))})")
    block = min(128, max(16, 1 << (max(k, 1) - 1).bit_length()))
    n_blocks = -(-k // block)
    return block, np.repeat(scales, n_blocks, 1), np.repeat(zps, n_blocks, 1)


def matmul_nbits_nodes(name: str, a_input: str, output: str, weight: Any, grid: WeightGrid,
                       bias_input: str | None = None) -> tuple[list[Any], list[Any], int]:
    """``(nodes, initializers, stored bits)`` computing ``output = a_input @ weight.T (+ bias)`` with the
    ``[out, in]`` ``weight`` stored as its ``grid`` codes in one ``MatMulNBits`` node.

    ``weight`` must lie on ``grid`` (its codes are recomputed from it). ``bias_input`` names an existing
    1-D ``[out]`` tensor (the node's optional bias input). Zero points are left out when they equal
    the operator's default (``2**(bits-1)`` of the storage width), stored as packed integers when
    integral, as floats otherwise (ORT allows float zero points at 2 and 4 bits only). Initializers
    are named ``<name>_q<bits>``, ``<name>_s``, ``<name>_zp``.
    """
    from onnx import helper, numpy_helper

    w = _numpy(weight).astype(np.float64)
    n, k = w.shape
    width = storage_bits(grid.bits)
    block, scales, zps = _blocked(grid, k)
    codes = grid_codes(w, WeightGrid(grid.bits, block, scales, zps, symmetric=False))
    n_blocks = scales.shape[1]
    padded = np.zeros((n, n_blocks * block), np.int64)
    padded[:, :k] = codes
    blob = _pack(padded.reshape(n, n_blocks, block), width)
    inits = [numpy_helper.from_array(blob, f"{name}_q{width}"),
             numpy_helper.from_array(scales.astype(np.float32).reshape(-1), f"{name}_s")]
    integral = np.allclose(zps, np.round(zps)) and zps.min() >= 0 and zps.max() < 2 ** width
    if integral and np.all(np.round(zps) == 2 ** (width - 1)):
        inputs = [a_input, inits[0].name, inits[1].name, ""]
    elif integral:
        inits.append(numpy_helper.from_array(_pack(np.round(zps).astype(np.int64), width).reshape(-1), f"{name}_zp"))
        inputs = [a_input] + [t.name for t in inits]
    elif width == 8:
        raise ValueError(f"{name}: an 8-bit MatMulNBits needs integer zero points in [0, 255]")
    else:
        inits.append(numpy_helper.from_array(zps.astype(np.float32).reshape(-1), f"{name}_zp"))
        inputs = [a_input] + [t.name for t in inits]
    if bias_input:
        inputs += [""] * (5 - len(inputs)) + [bias_input]
    while inputs and inputs[-1] == "":
        inputs.pop()
    nodes = [helper.make_node("MatMulNBits", inputs, [output], name=name, domain=MSFT_DOMAIN, K=k, N=n, bits=width,
                              block_size=block)]
    return nodes, inits, width


def int4_weight_nodes(name: str, output: str, weight: Any, bits: int, grid: WeightGrid | None = None,
                      grid_weight: Any | None = None) -> tuple[list[Any], list[Any], bool]:
    """``(nodes, initializers, exact)`` producing the float tensor ``output`` (a conv weight ``[out, ...]``)
    from UINT4 codes with one scale and zero point per output channel: ``(Cast(q) - zp) * scale``.

    Why not ``DequantizeLinear``: ORT 1.32 runs an int4 ``DequantizeLinear -> Conv`` on CPU, but keeps the
    dequantization in every run and cannot prepack the convolution's weight (measured 3.2x slower than
    the fp32 convolution on a 128-channel 3x3 layer); ``Cast``/``Sub``/``Mul`` of initializers are
    constant-folded when the session starts, so the file stores 4 bits per weight and the convolution
    runs at fp32 speed (opset 21 for the UINT4 ``Cast``).

    With a one-group-per-row ``grid`` (aup's quantizers) and the in-memory weight ``grid_weight`` lying
    on it, the codes are the grid's and each channel's scale is
    fitted to ``weight`` (so a BatchNorm that ORT's pre-processing folded into the weight only rescales
    channels): ``exact`` is True. Otherwise a symmetric per-channel round-to-nearest grid at ``bits``
    (levels within +-(2**(bits-1)-1), at least +-1).
    """
    from onnx import TensorProto, helper, numpy_helper

    w = _numpy(weight).astype(np.float64)
    flat = w.reshape(w.shape[0], -1)
    codes, scales, zps = _grid_channels(flat, grid, grid_weight)
    exact = codes is not None
    if codes is None:
        qmax = max(1, 2 ** (min(bits, 4) - 1) - 1)
        peak = np.abs(flat).max(1)
        scales = np.where(peak > 0, peak / qmax, 1.0)
        zps = np.full(flat.shape[0], 8.0)
        codes = np.clip(np.round(flat / scales[:, None]) + 8, 8 - qmax, 8 + qmax).astype(np.int64)
    shape = [len(scales)] + [1] * (w.ndim - 1)
    zero = np.asarray(zps, np.float64)
    inits = [helper.make_tensor(f"{name}_q4", TensorProto.UINT4, list(w.shape), _pack(codes.reshape(-1), 4).tobytes(),
                                raw=True),
             numpy_helper.from_array(np.asarray(scales, np.float32).reshape(shape), f"{name}_s"),
             numpy_helper.from_array(np.asarray(zero[0] if np.all(zero == zero[0]) else zero.reshape(shape), np.float32),
                                     f"{name}_zp")]
    nodes = [helper.make_node("Cast", [inits[0].name], [f"{name}_f"], to=TensorProto.FLOAT, name=f"{name}_cast"),
             helper.make_node("Sub", [f"{name}_f", inits[2].name], [f"{name}_c"], name=f"{name}_sub"),
             helper.make_node("Mul", [f"{name}_c", inits[1].name], [output], name=f"{name}_mul")]
    return nodes, inits, exact


def _grid_channels(flat: np.ndarray, grid: WeightGrid | None, grid_weight: Any | None
                   ) -> tuple[Any, Any, Any]:
    """``(codes, per-channel scales, zero points)`` reproducing ``flat`` on ``grid``'s codes, or Nones."""
    if grid is None or grid_weight is None or grid.bits > 4:
        return None, None, None
    scales, zps = grid.arrays()
    if scales.shape[0] != flat.shape[0] or not (np.allclose(scales, scales[:, :1]) and np.allclose(zps, zps[:, :1])):
        return None, None, None
    zp = zps[:, 0]  # any real zero point: the graph subtracts it in float (DoReFa's sits between two codes)
    source = _numpy(grid_weight).astype(np.float64).reshape(flat.shape[0], -1)
    if source.shape != flat.shape:
        return None, None, None
    codes = grid_codes(source, WeightGrid(grid.bits, source.shape[1], scales[:, :1], zps[:, :1], symmetric=False))
    fitted = fit_channel_scales(flat, codes, zp)
    return (codes, fitted, zp) if fitted is not None else (None, None, None)


def fit_channel_scales(flat: np.ndarray, codes: np.ndarray, zps: np.ndarray) -> np.ndarray | None:
    """Per-channel scales ``s`` with ``flat ~= (codes - zp) * s`` (least squares), or None when the weight
    is not a per-channel rescaling of those codes (relative error above 1e-4)."""
    centred = codes.astype(np.float64) - zps[:, None]
    norm = (centred * centred).sum(1)
    scales = np.where(norm > 0, (flat * centred).sum(1) / np.where(norm > 0, norm, 1.0), 1.0)
    error = np.abs(centred * scales[:, None] - flat).max()
    return scales if error <= 1e-4 * max(np.abs(flat).max(), 1e-12) else None
