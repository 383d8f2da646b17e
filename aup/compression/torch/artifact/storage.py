"""Tensor encodings for the compressed-model artifact: packed k-bit integers and sparse storage.

Why: a quantized or pruned model saved as a float32 state_dict is exactly as large as the dense
model (NNI issues 3273, 4053), so "compressed" sizes would be fiction.  Here the bytes on disk
follow the compression:

- ``bits`` given: ``q = round(t / scale + zero_point)`` clamped to ``[0, 2**bits)``, packed densely
  into uint8 (two 4-bit codes per byte, eight 1-bit codes per byte, any width 1..16 bit-packed),
  with ``scale`` / ``zero_point`` per tensor, per output channel (dim 0), or per group of consecutive
  columns of a 2-D weight (``[rows, n_groups]``, the weight-only LLM quantizers; with ``group_axis=0``
  the groups run down the rows of a weight stored transposed, ``[in, out]`` like GPT-2's ``Conv1D``,
  and ``scale`` is ``[out, n_groups]``).  Decoding gives
  ``(q - zero_point) * scale`` (computed in float64, like the quantizers' export), so a tensor
  already on the quantization grid round-trips bit for bit.
- zeros (unstructured pruning): a 1-bit-per-element bitmap plus the non-zero values (or codes),
  chosen only when it is smaller than the dense form and decodes exactly.
- otherwise the tensor itself (dense, its own dtype).

Each encoding is a plain dict of small tensors and numbers, so ``torch.save`` writes it compactly.
"""
from __future__ import annotations

import math

from typing import Any

import torch

__all__ = ["encode_tensor", "decode_tensor", "pack_bits", "unpack_bits", "encoded_nbytes"]

_FORMAT = 1


# ----------------------------------------------------------------------------- bit packing


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integers ``< 2**bits`` (any shape) into a flat uint8 tensor, LSB first."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    flat = q.reshape(-1).to(torch.int32)
    if bits == 8:
        return flat.to(torch.uint8)
    if bits == 16:
        return flat.to(torch.int16).view(torch.uint8) if flat.numel() else torch.zeros(0, dtype=torch.uint8)
    if 8 % bits == 0:  # 1, 2, 4: whole codes per byte
        per = 8 // bits
        pad = (-flat.numel()) % per
        grouped = torch.nn.functional.pad(flat, (0, pad)).view(-1, per)
        shifts = torch.arange(per, dtype=torch.int32) * bits
        return (grouped << shifts).sum(1).to(torch.uint8)
    # other widths: expand to single bits and regroup by 8
    shifts = torch.arange(bits, dtype=torch.int32)
    bitstream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)
    pad = (-bitstream.numel()) % 8
    bytes_ = torch.nn.functional.pad(bitstream, (0, pad)).view(-1, 8)
    return (bytes_ << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``numel`` integers (int64, flat)."""
    data = packed.reshape(-1)
    if bits == 8:
        return data[:numel].to(torch.int64)
    if bits == 16:
        return data.view(torch.int16).to(torch.int64)[:numel] & 0xFFFF
    data = data.to(torch.int32)
    if 8 % bits == 0:
        per = 8 // bits
        shifts = torch.arange(per, dtype=torch.int32) * bits
        return ((data.unsqueeze(1) >> shifts) & (2 ** bits - 1)).reshape(-1)[:numel].to(torch.int64)
    bitstream = ((data.unsqueeze(1) >> torch.arange(8, dtype=torch.int32)) & 1).reshape(-1)[:numel * bits]
    weights = (1 << torch.arange(bits, dtype=torch.int64))
    return (bitstream.view(numel, bits).to(torch.int64) * weights).sum(1)


# ----------------------------------------------------------------------------- encode / decode


def encode_tensor(t: torch.Tensor, *, bits: int | None = None, scale: Any = None, zero_point: Any = None,
                  group_axis: int = 1) -> dict:
    """Encode one tensor in the smallest exact form (see the module docstring).

    ``scale`` / ``zero_point``: numbers (per tensor), 1-D sequences/tensors of length ``t.shape[0]``
    (per output channel), or 2-D ``[out, n_groups]`` (group-wise; ``group_axis`` 1 when ``t`` is
    ``[out, in]``, 0 when it is stored ``[in, out]``).  ``zero_point`` defaults to 0.
    """
    t = t.detach().cpu()
    if group_axis not in (0, 1):
        raise ValueError(f"encode_tensor: group_axis must be 0 or 1, got {group_axis!r}")
    if bits is not None:
        if scale is None:
            raise ValueError("encode_tensor: bits given without scale")
        return _encode_quantized(t, int(bits), scale, 0.0 if zero_point is None else zero_point, group_axis)
    return _encode_float(t)


def decode_tensor(d: dict) -> torch.Tensor:
    """The tensor an :func:`encode_tensor` dict stands for.

    Every declared size (shape, element count, bit width, non-zero count, per-channel parameters) is
    checked against the stored tensors before anything is allocated: a file cannot ask for more
    memory than a small multiple of its own size (issue 21: a 15 kB file declaring a
    268435456 x 8 tensor).  Violations are ``ValueError``.
    """
    kind = d.get("enc")
    shape, numel = _declared_shape(d.get("shape"))
    if kind == "dense":
        data = _stored(d, "data")
        if data.numel() != numel:
            raise ValueError(f"dense tensor declares shape {list(shape)} but stores {data.numel()} elements")
        return data.clone().reshape(shape)
    if kind == "sparse":
        values = _stored(d, "values")
        nz = _bitmap(d, numel)
        _expect(values.numel() == int(nz.sum()), f"sparse tensor stores {values.numel()} values for "
                                                 f"{int(nz.sum())} non-zeros in its bitmap")
        out = torch.zeros(numel, dtype=values.dtype)
        out[nz] = values.reshape(-1)
        return out.reshape(shape)
    if kind in ("quant", "sparse_quant"):
        bits = d.get("bits")
        _expect(isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 16,
                f"bit width {bits!r} is not in 1..16")
        dtype = getattr(torch, str(d.get("dtype")), None)
        _expect(isinstance(dtype, torch.dtype) and dtype.is_floating_point, f"dtype {d.get('dtype')!r} is not a "
                                                                             f"floating-point dtype")
        scale, zp = _broadcast_params(d, shape)
        if kind == "quant":
            _check_codes(d, bits, numel)
            q = unpack_bits(d["codes"], bits, numel).reshape(shape)
            return ((q.double() - zp) * scale).to(dtype)
        nz = _bitmap(d, numel)
        nnz = int(nz.sum())
        _check_codes(d, bits, nnz)
        q = torch.zeros(numel, dtype=torch.int64)
        q[nz] = unpack_bits(d["codes"], bits, nnz)
        values = ((q.reshape(shape).double() - zp) * scale).to(dtype).reshape(-1)
        out = torch.zeros(numel, dtype=dtype)
        out[nz] = values[nz]
        return out.reshape(shape)
    raise ValueError(f"unknown tensor encoding {kind!r}")


def encoded_nbytes(d: dict) -> int:
    """Bytes of tensor payload in an encoding (excluding pickling overhead)."""
    return sum(v.numel() * v.element_size() for v in d.values() if isinstance(v, torch.Tensor))


# ----------------------------------------------------------------------------- helpers


def _encode_float(t: torch.Tensor) -> dict:
    dense = {"enc": "dense", "v": _FORMAT, "shape": list(t.shape), "data": t.contiguous().clone()}
    if not t.is_floating_point() or t.numel() < 64:
        return dense
    nz = t.reshape(-1) != 0
    nnz = int(nz.sum())
    sparse_bytes = (t.numel() + 7) // 8 + nnz * t.element_size()
    if sparse_bytes >= t.numel() * t.element_size():
        return dense
    return {"enc": "sparse", "v": _FORMAT, "shape": list(t.shape), "bitmap": pack_bits(nz, 1),
            "values": t.reshape(-1)[nz].clone()}


def _encode_quantized(t: torch.Tensor, bits: int, scale: Any, zero_point: Any, group_axis: int = 1) -> dict:
    if not 1 <= bits <= 16:
        raise ValueError(f"encode_tensor: bits must be in 1..16, got {bits}")
    shape = tuple(t.shape)
    if _is_matrix(scale):
        return _finish_quantized(t, bits, _group_params(shape, scale, zero_point, group_axis))
    per_channel = _is_vector(scale) or _is_vector(zero_point)
    scale_t = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
    zp_t = torch.as_tensor(zero_point, dtype=torch.float64).reshape(-1)
    if per_channel and (t.dim() == 0 or max(scale_t.numel(), zp_t.numel()) != shape[0]):
        raise ValueError(f"encode_tensor: per-channel scale/zero_point need {shape[0] if shape else 1} values")
    base = {"v": _FORMAT, "shape": list(shape), "bits": bits, "dtype": str(t.dtype).replace("torch.", ""),
            "per_channel": per_channel,
            "scale": scale_t if per_channel else float(scale_t[0]),
            "zero_point": zp_t if per_channel else float(zp_t[0])}
    return _finish_quantized(t, bits, base)


def _group_params(shape: tuple[int, ...], scale: Any, zero_point: Any, group_axis: int = 1) -> dict:
    """Group-wise grid of a 2-D weight: ``scale``/``zero_point`` ``[out, n_groups]``, each group being
    ``in / n_groups`` consecutive inputs (weight-only LLM quantizers: RTN, GPTQ); the inputs are the
    columns (``group_axis=1``, ``[out, in]``) or the rows (``group_axis=0``, a transposed weight)."""
    scale_t = torch.as_tensor(scale, dtype=torch.float64)
    zp_t = torch.as_tensor(zero_point, dtype=torch.float64).expand_as(scale_t).clone()
    out, inputs = (shape if group_axis == 1 else shape[::-1]) if len(shape) == 2 else (-1, -1)
    if len(shape) != 2 or scale_t.shape[0] != out or inputs % scale_t.shape[1]:
        raise ValueError(f"encode_tensor: group-wise scale {tuple(scale_t.shape)} does not fit a weight of "
                         f"shape {shape}" + (" stored [in, out]" if group_axis == 0 else ""))
    axis = {} if group_axis == 1 else {"group_axis": 0}  # files written before it existed stay readable
    return {"v": _FORMAT, "shape": list(shape), "bits": None, "dtype": None, "per_channel": True,
            "group_size": inputs // scale_t.shape[1], **axis, "scale": scale_t, "zero_point": zp_t}


def _finish_quantized(t: torch.Tensor, bits: int, base: dict) -> dict:
    shape = tuple(t.shape)
    base = {**base, "bits": bits, "dtype": str(t.dtype).replace("torch.", "")}
    scale_b, zp_b = _broadcast_params(base, shape)
    q = torch.round(t.double() / scale_b + zp_b).clamp_(0, 2 ** bits - 1).to(torch.int64)
    dense = {"enc": "quant", **base, "codes": pack_bits(q, bits)}
    nz = t != 0  # pruned zeros are stored exactly, whether or not 0 lies on the grid
    nnz = int(nz.sum())
    sparse_bytes = (t.numel() + 7) // 8 + (nnz * bits + 7) // 8
    if sparse_bytes >= (t.numel() * bits + 7) // 8:
        return dense
    return {"enc": "sparse_quant", **base, "bitmap": pack_bits(nz.reshape(-1), 1),
            "codes": pack_bits(q.reshape(-1)[nz.reshape(-1)], bits)}


def _is_vector(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() >= 1
    return isinstance(x, (list, tuple))


_MAX_DIMS = 64


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _declared_shape(shape: Any) -> tuple[tuple[int, ...], int]:
    """``(shape, element count)`` of a declared shape, in Python integers (no overflow, no allocation)."""
    ok = isinstance(shape, (list, tuple)) and len(shape) <= _MAX_DIMS and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    _expect(ok, f"malformed tensor shape {str(shape)[:80]}")
    numel = 1
    for n in shape:
        numel *= n
    return tuple(shape), numel


def _stored(d: dict, field: str) -> torch.Tensor:
    item = d.get(field)
    _expect(isinstance(item, torch.Tensor), f"tensor field {field!r} is missing")
    return item


def _check_codes(d: dict, bits: int, count: int) -> None:
    """The packed codes hold exactly ``count`` codes of ``bits`` bits (what :func:`pack_bits` writes)."""
    codes = _stored(d, "codes")
    _expect(codes.dtype == torch.uint8, f"codes must be uint8, not {codes.dtype}")
    expected = 2 * count if bits == 16 else count if bits == 8 else (count * bits + 7) // 8 if 8 % bits else \
        (count + 8 // bits - 1) // (8 // bits)
    _expect(codes.numel() == expected, f"{count} codes of {bits} bits need {expected} bytes, "
                                       f"the file stores {codes.numel()}")


def _is_matrix(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 2


def _broadcast_params(d: dict, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point shaped to broadcast over ``shape`` (one per tensor or per output channel)."""
    channels = shape[0] if shape else 1
    group = d.get("group_size")
    _expect(group is None or (isinstance(group, int) and not isinstance(group, bool) and group > 0),
            f"group_size {str(group)[:40]} is not a positive integer")
    for field in ("scale", "zero_point"):
        value = d.get(field)
        if isinstance(value, torch.Tensor):  # one per tensor, per output channel, or per group of a row
            allowed = (1, channels) if not group else (math.prod(shape) // group,)
            _expect(value.numel() in allowed, f"{field} has {value.numel()} values for {channels} channels")
        else:
            _expect(not group and isinstance(value, (int, float)) and not isinstance(value, bool),
                    f"{field} is not a number")
    scale = torch.as_tensor(d["scale"], dtype=torch.float64)
    zp = torch.as_tensor(d["zero_point"], dtype=torch.float64)
    if group:  # [out, n_groups], each group `group` consecutive inputs (columns, or rows when transposed)
        axis = d.get("group_axis", 1)
        _expect(axis in (0, 1) and not isinstance(axis, bool), f"group_axis {str(axis)[:40]} is not 0 or 1")
        if len(shape) != 2 or scale.shape != zp.shape or scale.numel() * int(group) != shape[0] * shape[1]:
            raise ValueError("group-wise scale/zero_point do not fit the tensor's shape")
        out = shape[0] if axis == 1 else shape[1]
        scale_b = scale.reshape(out, -1).repeat_interleave(int(group), dim=1)
        zp_b = zp.reshape(out, -1).repeat_interleave(int(group), dim=1)
        return (scale_b, zp_b) if axis == 1 else (scale_b.t(), zp_b.t())
    if d.get("per_channel"):
        view = (-1,) + (1,) * (len(shape) - 1)
        scale = scale.reshape(view) if scale.numel() > 1 else scale.reshape(())
        zp = zp.reshape(view) if zp.numel() > 1 else zp.reshape(())
    return scale, zp


def _bitmap(d: dict, numel: int) -> torch.Tensor:
    """The non-zero positions, after checking the bitmap has one bit per declared element."""
    bitmap = _stored(d, "bitmap")
    _expect(bitmap.dtype == torch.uint8 and bitmap.numel() == (numel + 7) // 8,
            f"a bitmap of {(numel + 7) // 8} bytes is declared, the file stores {bitmap.numel()}")
    return unpack_bits(bitmap, 1, numel).bool()
