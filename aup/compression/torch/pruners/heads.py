"""``transformer``: structured pruning of whole attention heads and MLP hidden channels.

Why a dedicated pruner: filter pruners see one Linear at a time, but an attention head is a slice
of three projections (query, key, value rows) plus a slice of the output projection's columns, and
the model stays correct only if all of them go together.  Likewise an MLP hidden channel is one row
of the expanding layer(s) and one column of the contracting layer.  This module finds those groups
from the attention and MLP modules it knows, scores each head / channel with the chosen criterion,
masks them (the masked model computes exactly what the shrunk one will), and ``apply_speedup``
slices the weights so the model is physically smaller and still runs its own ``forward``.

Modules handled (found by structure, so subclasses and look-alikes work too):

- ``torch.nn.MultiheadAttention`` (packed ``in_proj_weight``, ``out_proj``); after shrinking it is
  replaced by :class:`HeadPrunedMultiheadAttention` (same call signature; PyTorch's own class
  requires ``num_heads * head_dim == embed_dim``).  ``TransformerEncoderLayer`` MLPs (``linear1`` ->
  ``linear2``).
- Hugging Face BERT/ViT style (``query``/``key``/``value`` + the sibling ``output.dense``;
  ``intermediate.dense`` -> ``output.dense``), Llama style with grouped-query attention
  (``q_proj``/``k_proj``/``v_proj``/``o_proj``; gated ``gate_proj``/``up_proj`` -> ``down_proj``) and
  GPT-2 (packed ``c_attn``/``c_proj`` and ``c_fc``/``c_proj`` ``Conv1D``).  The attention modules'
  head counts and the shared ``config`` (``num_attention_heads``, ``intermediate_size``) are updated
  when every layer ends up with the same size.

Grouped-query attention: a key/value head serves ``G`` query heads.  Query heads are removed in
equal numbers from every key/value group (ranked within the group), so the ``q head -> kv head``
mapping ``h // G'`` stays right; key/value heads are kept.

Criteria (``criterion``): ``"l1"`` (sum of |w| over the head's / channel's slices), ``"l2"``
(Euclidean norm of the same) and ``"taylor"`` (first-order Taylor, sum of ``(w * dL/dw)^2`` over the
first ``statistics_batch_num`` optimizer steps; needs ``optimizer``).  Config keys:
``head_sparsity`` (fraction of heads removed per attention module) and ``mlp_sparsity`` (fraction
of hidden channels removed per MLP), selected by ``op_names`` / ``op_types`` of the attention
module or the MLP's parent module (``"default"``: all of them); at least one head and one channel
always stay.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Compressor, ignore_export_arguments
from ..config_list import match_module

__all__ = ["TransformerPruner", "HeadPrunedMultiheadAttention", "find_blocks", "HeadBlock", "MlpBlock"]

logger = logging.getLogger(__name__)

CRITERIA = ("l1", "l2", "taylor")


# ----------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class Piece:
    """A slice family of one parameter: unit ``u`` is ``narrow(dim, offset + u * size, size)``."""

    module: str
    key: str
    dim: int
    offset: int
    size: int


@dataclass
class HeadBlock:
    """One attention module: its heads' slices in the producing and consuming projections."""

    name: str
    style: str  # "torch_mha" | "qkv" | "gpt2"
    num_heads: int
    num_kv_heads: int
    head_dim: int
    producers: list[Piece] = field(default_factory=list)  # sliced per query head
    kv_producers: list[Piece] = field(default_factory=list)  # key/value slices (per kv head)
    consumers: list[Piece] = field(default_factory=list)

    @property
    def units(self) -> int:
        return self.num_heads


@dataclass
class MlpBlock:
    """One MLP: hidden channel ``c`` is row ``c`` of the producers and column ``c`` of the consumer."""

    name: str
    hidden: int
    producers: list[Piece] = field(default_factory=list)
    consumers: list[Piece] = field(default_factory=list)

    @property
    def units(self) -> int:
        return self.hidden


def _is_conv1d(module: Any) -> bool:
    """Hugging Face's GPT-2 ``Conv1D``: a Linear with the weight stored as (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(module.weight, nn.Parameter)


def _linear_pieces(prefix: str, module: nn.Module, offset: int, size: int, role: str) -> list[Piece]:
    """Slices of a Linear/Conv1D: its output units (``role="out"``) or input units (``"in"``)."""
    conv1d = _is_conv1d(module)
    if role == "out":
        pieces = [Piece(prefix, "weight", 1 if conv1d else 0, offset, size)]
        if getattr(module, "bias", None) is not None:
            pieces.append(Piece(prefix, "bias", 0, offset, size))
        return pieces
    return [Piece(prefix, "weight", 0 if conv1d else 1, offset, size)]


def _child(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _is_proj(module: Any) -> bool:
    return isinstance(module, nn.Linear) or _is_conv1d(module)


def _head_block(model: nn.Module, name: str, module: nn.Module) -> HeadBlock | None:
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim or module.in_proj_weight is None or module.bias_k is not None:
            return None
        e, h = module.embed_dim, module.num_heads
        d = e // h
        pieces = [Piece(name, "in_proj_weight", 0, i * e, d) for i in range(3)]
        if module.in_proj_bias is not None:
            pieces += [Piece(name, "in_proj_bias", 0, i * e, d) for i in range(3)]
        return HeadBlock(name, "torch_mha", h, h, d, pieces, [],
                         _linear_pieces(_join(name, "out_proj"), module.out_proj, 0, d, "in"))
    children = dict(module.named_children())
    if all(_is_proj(children.get(k)) for k in ("query", "key", "value")) and hasattr(module, "num_attention_heads"):
        parent_name = name.rpartition(".")[0]
        out = _child(model, _join(parent_name, "output", "dense"))
        if not _is_proj(out):
            return None
        h = int(module.num_attention_heads)
        d = children["query"].out_features // h
        producers = [p for k in ("query", "key", "value") for p in _linear_pieces(_join(name, k), children[k], 0, d, "out")]
        return HeadBlock(name, "qkv", h, h, d, producers, [],
                         _linear_pieces(_join(parent_name, "output", "dense"), out, 0, d, "in"))
    if all(_is_proj(children.get(k)) for k in ("q_proj", "k_proj", "v_proj", "o_proj")) and hasattr(module, "head_dim"):
        d = int(module.head_dim)
        h = children["q_proj"].out_features // d
        hkv = children["k_proj"].out_features // d
        q = _linear_pieces(_join(name, "q_proj"), children["q_proj"], 0, d, "out")
        kv = [p for k in ("k_proj", "v_proj") for p in _linear_pieces(_join(name, k), children[k], 0, d, "out")]
        o = _linear_pieces(_join(name, "o_proj"), children["o_proj"], 0, d, "in")
        if hkv == h:
            return HeadBlock(name, "qkv", h, h, d, q + kv, [], o)
        return HeadBlock(name, "qkv", h, hkv, d, q, kv, o)
    if _is_conv1d(children.get("c_attn")) and _is_conv1d(children.get("c_proj")) and hasattr(module, "split_size") \
            and not getattr(module, "is_cross_attention", False):
        h, d = int(module.num_heads), int(module.head_dim)
        e = int(module.split_size)
        producers = [p for i in range(3) for p in _linear_pieces(_join(name, "c_attn"), children["c_attn"], i * e, d, "out")]
        return HeadBlock(name, "gpt2", h, h, d, producers, [],
                         _linear_pieces(_join(name, "c_proj"), children["c_proj"], 0, d, "in"))
    return None


def _mlp_block(name: str, module: nn.Module) -> MlpBlock | None:
    children = dict(module.named_children())
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        ups, down = ["linear1"], "linear2"
    elif _is_proj(children.get("gate_proj")) and _is_proj(children.get("up_proj")) and _is_proj(children.get("down_proj")):
        ups, down = ["gate_proj", "up_proj"], "down_proj"
    elif _is_conv1d(children.get("c_fc")) and _is_conv1d(children.get("c_proj")):
        ups, down = ["c_fc"], "c_proj"
    elif isinstance(children.get("fc1"), nn.Linear) and isinstance(children.get("fc2"), nn.Linear) and \
            children["fc1"].out_features == children["fc2"].in_features:
        ups, down = ["fc1"], "fc2"
    elif _is_proj(getattr(children.get("intermediate"), "dense", None)) and \
            _is_proj(getattr(children.get("output"), "dense", None)):
        ups, down = ["intermediate.dense"], "output.dense"
    else:
        return None
    up_mods = [module.get_submodule(u) for u in ups]
    down_mod = module.get_submodule(down)
    hidden = up_mods[0].nf if _is_conv1d(up_mods[0]) else up_mods[0].out_features
    producers = [p for u, m in zip(ups, up_mods) for p in _linear_pieces(_join(name, u), m, 0, 1, "out")]
    return MlpBlock(name, hidden, producers, _linear_pieces(_join(name, down), down_mod, 0, 1, "in"))


def find_blocks(model: nn.Module) -> tuple[list[HeadBlock], list[MlpBlock]]:
    """Every attention module (heads) and MLP (hidden channels) this pruner knows in ``model``."""
    heads, mlps = [], []
    for name, module in model.named_modules():
        block = _head_block(model, name, module)
        if block is not None:
            heads.append(block)
        mlp = _mlp_block(name, module)
        if mlp is not None:
            mlps.append(mlp)
    return heads, mlps


# ----------------------------------------------------------------------------- shrunk torch attention


class HeadPrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with ``num_heads * head_dim`` smaller than ``embed_dim``.

    Same call signature and results as the module it replaces, minus the removed heads.  Attribute
    ``_qkv_same_embed_dim = False`` keeps ``TransformerEncoderLayer`` off its fused fast path (that
    kernel assumes full-width projections).
    """

    _qkv_same_embed_dim = False
    aup_op_types = ("MultiheadAttention",)  # config_list op_types: it still is the attention layer

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, bias: bool = True, dropout: float = 0.0,
                 batch_first: bool = False) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        lq, b, _ = query.shape
        lk = key.shape[0]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w_q, b_q).reshape(lq, b * self.num_heads, self.head_dim).transpose(0, 1)
        k = F.linear(key, w_k, b_k).reshape(lk, b * self.num_heads, self.head_dim).transpose(0, 1)
        v = F.linear(value, w_v, b_v).reshape(lk, b * self.num_heads, self.head_dim).transpose(0, 1)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(self.head_dim)
        scores = scores.view(b, self.num_heads, lq, lk)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=query.device).triu(1)
        if attn_mask is not None:
            scores = scores + _additive(attn_mask, scores.dtype).reshape(-1, self.num_heads, lq, lk)[:b] \
                if attn_mask.dim() == 3 else scores + _additive(attn_mask, scores.dtype)
        if key_padding_mask is not None:
            scores = scores + _additive(key_padding_mask, scores.dtype).view(b, 1, 1, lk)
        probs = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            probs = F.dropout(probs, p=self.dropout)
        out = torch.bmm(probs.reshape(b * self.num_heads, lq, lk), v)
        out = out.transpose(0, 1).reshape(lq, b, self.num_heads * self.head_dim)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = probs.mean(1) if average_attn_weights else probs
            if unbatched:
                weights = weights.squeeze(0)
        return out, weights


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = masked out) as 0/-inf; float masks are already additive."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


# ----------------------------------------------------------------------------- masks as removed indices


class _ZeroRows:
    """Forward pre-hook: zero the removed rows/columns of the module's parameters (one index_fill each)."""

    def __init__(self, slices: list[tuple[str, int, torch.Tensor]]) -> None:
        self.slices = slices

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        with torch.no_grad():
            for key, dim, rows in self.slices:
                param = module._parameters.get(key)
                if param is not None:
                    param.index_fill_(dim, rows.to(param.device), 0)


class _ZeroGrad:
    """Tensor hook: no gradient for removed rows/columns (so optimizers never move them)."""

    def __init__(self, dim: int, rows: torch.Tensor) -> None:
        self.dim, self.rows = dim, rows

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.index_fill(self.dim, self.rows.to(grad.device), 0)


class UnitMasks:
    """The pruner's masks as removed indices per parameter, enforced like :class:`..masking.MaskStore`.

    Why not full mask tensors: whole heads and channels are index sets, and on a BERT-base model
    materialising, copying and multiplying a float mask per projection cost more than the shrink
    itself.  Zeroing touches only the removed elements.  ``to_nni()`` builds NNI-format masks on
    request (mask file, metrics).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows: dict[tuple[str, str, int], torch.Tensor] = {}
        self.shapes: dict[tuple[str, str], torch.Size] = {}
        self._handles: list[Any] = []
        self._optimizer_handles: list[Any] = []
        self.on_optimizer = False

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def set(self, rows: dict[tuple[str, str, int], torch.Tensor]) -> None:
        """Replace the removed indices, (re)attach the hooks and zero the removed elements now."""
        self.detach_modules()
        self.rows = dict(rows)
        modules = dict(self.model.named_modules())
        per_module: dict[str, list[tuple[str, int, torch.Tensor]]] = {}
        for (name, key, dim), index in self.rows.items():
            param = modules[name]._parameters[key]
            self.shapes[(name, key)] = param.shape
            per_module.setdefault(name, []).append((key, dim, index))
            self._handles.append(param.register_hook(_ZeroGrad(dim, index)))
        for name, slices in per_module.items():
            self._handles.append(modules[name].register_forward_pre_hook(_ZeroRows(slices)))
        self.apply_all()

    @torch.no_grad()
    def apply_all(self) -> None:
        modules = dict(self.model.named_modules())
        for (name, key, dim), index in self.rows.items():
            param = modules.get(name)._parameters.get(key) if name in modules else None
            if param is not None and param.shape == self.shapes.get((name, key)):
                param.index_fill_(dim, index.to(param.device), 0)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-zero after each ``optimizer.step()`` (weight decay moves zeros)."""
        self._optimizer_handles.append(optimizer.register_step_post_hook(lambda *_: self.apply_all()))
        self.on_optimizer = True

    def detach_modules(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def detach(self) -> None:
        """Remove every hook (the removed elements stay zero)."""
        self.detach_modules()
        for handle in self._optimizer_handles:
            handle.remove()
        self._optimizer_handles.clear()

    def to_nni(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """``{module: {"weight": mask, "bias": mask or None, ...}}`` for the original shapes."""
        out: dict[str, dict[str, torch.Tensor | None]] = {}
        for (name, key, dim), index in self.rows.items():
            entry = out.setdefault(name, {"weight": None, "bias": None})
            mask = entry.get(key)
            if mask is None:
                mask = entry[key] = torch.ones(self.shapes[(name, key)])
            mask.index_fill_(dim, index, 0)
        return out


# ----------------------------------------------------------------------------- the pruner


class TransformerPruner(Compressor):
    """``TransformerPruner(model, config_list, criterion="l1", optimizer=None, statistics_batch_num=1,
    dummy_input=None)``: remove attention heads (``head_sparsity``) and MLP channels (``mlp_sparsity``)."""

    compression_type: ClassVar[str] = "pruning"
    compressor_name: ClassVar[str] = "transformer"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], criterion: str = "l1",
                 optimizer: torch.optim.Optimizer | None = None, statistics_batch_num: int = 1,
                 dummy_input: Any = None) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"transformer: criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        if criterion == "taylor" and optimizer is None:
            raise ValueError("transformer: criterion 'taylor' needs optimizer=<your optimizer> (the importance "
                             "comes from the gradients of your training steps)")
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)
        self.criterion = criterion
        self.statistics_batch_num = int(statistics_batch_num)
        heads, mlps = find_blocks(model)
        self.blocks: list[tuple[HeadBlock | MlpBlock, float]] = self._select(heads, mlps)
        self.modules = dict(model.named_modules())
        names = {p.module for block, _ in self.blocks for p in _pieces(block)}
        self.layers = {n: self.modules[n] for n in sorted(names)}
        self.dense_numel = {n: _weight_numel(m) for n, m in self.layers.items()}
        self.masks = UnitMasks(model)
        self.removed: dict[str, list[int]] = {}
        self.taylor: dict[tuple[str, str], torch.Tensor] = {}
        self.batches = 0
        self.masks_calculated = False
        self.shrink_report: dict[str, Any] | None = None
        self.speedup_masks: Any = None
        if optimizer is not None and criterion == "taylor":
            optimizer.register_step_pre_hook(lambda *_: self._gather_taylor())
            optimizer.register_step_post_hook(lambda *_: self._maybe_compute())

    # ------------------------------------------------------------------ selection
    def _select(self, heads: list[HeadBlock], mlps: list[MlpBlock]) -> list[tuple[HeadBlock | MlpBlock, float]]:
        selected: list[tuple[HeadBlock | MlpBlock, float]] = []
        for blocks, key in ((heads, "head_sparsity"), (mlps, "mlp_sparsity")):
            for block in blocks:
                module = self.model.get_submodule(block.name) if block.name else self.model
                entries = [_default_means_all(e) for e in self.config_list if key in e or e.get("exclude")]
                match = match_module(block.name, module, entries)
                if match is not None and float(match[1][key]) > 0:
                    selected.append((block, float(match[1][key])))
        if not selected and self.config_list:
            found = ", ".join(f"{b.name or '<model>'}" for b in heads + mlps) or "none"
            raise ValueError(f"config_list: no attention module or MLP matches any entry for 'transformer' (it prunes "
                             f"heads of MultiheadAttention / BERT / GPT-2 / Llama-style attention and MLP channels); "
                             f"found: {found}")
        return selected

    def compressed_module_names(self) -> list[str]:
        return list(self.layers)

    # ------------------------------------------------------------------ importance and masks
    def compress(self) -> nn.Module:
        """Compute the masks now (weight criteria) or after the Taylor batches; they stay enforced."""
        if self.optimizer is not None and not self.masks.on_optimizer:
            self.masks.attach_optimizer(self.optimizer)
        if self.criterion != "taylor":
            self.compute_masks()
        return self.model

    def _param(self, piece: Piece) -> torch.Tensor:
        return getattr(self.modules[piece.module], piece.key)

    @torch.no_grad()
    def _gather_taylor(self) -> None:
        if self.batches >= self.statistics_batch_num:
            return
        for block, _ in self.blocks:
            for piece in _pieces(block):
                param = self._param(piece)
                if param.grad is None:
                    return
        for block, _ in self.blocks:
            for piece in _pieces(block):
                param = self._param(piece)
                key = (piece.module, piece.key)
                contribution = (param.detach() * param.grad.detach()).pow(2).double()
                self.taylor[key] = self.taylor.get(key, 0) + contribution
        self.batches += 1

    def _maybe_compute(self) -> None:
        if not self.masks_calculated and self.batches >= self.statistics_batch_num:
            self.compute_masks()

    def step(self) -> None:
        """Without an ``optimizer``: re-apply the masks after each of your optimizer steps."""
        if not self.speedup_applied:
            self.masks.apply_all()

    @torch.no_grad()
    def unit_importance(self, block: HeadBlock | MlpBlock, pieces: list[Piece] | None = None) -> torch.Tensor:
        """One score per head / hidden channel of ``block`` (higher = keep)."""
        total = torch.zeros(block.units, dtype=torch.float64)
        for piece in pieces if pieces is not None else block.producers + block.consumers:
            if self.criterion == "taylor":
                value = self.taylor.get((piece.module, piece.key))
                if value is None:
                    raise ValueError("transformer: taylor importance needs statistics_batch_num optimizer steps first")
                part = value.narrow(piece.dim, piece.offset, piece.size * block.units)
                part = part.unflatten(piece.dim, (block.units, piece.size))
                other = tuple(d for d in range(part.dim()) if d != piece.dim)
                total += part.sum(dim=other).cpu()
                continue
            part = self._param(piece).detach().narrow(piece.dim, piece.offset, piece.size * block.units)
            # one score per unit over the unit's rows (dim 0) or columns (dim 1), without a |w| copy
            part = part.unflatten(piece.dim, (block.units, piece.size))
            other = tuple(d for d in range(part.dim()) if d != piece.dim)
            norm = torch.linalg.vector_norm(part, ord=1 if self.criterion == "l1" else 2, dim=other)
            total += (norm if self.criterion == "l1" else norm.square()).double().cpu()
        return total.sqrt() if self.criterion == "l2" else total

    def _removed_units(self, block: HeadBlock | MlpBlock, sparsity: float) -> list[int]:
        score = self.unit_importance(block)
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

    def compute_masks(self) -> None:
        """(Re)compute every block's removed units and zero them (``get_masks()`` gives NNI's format)."""
        if self.speedup_applied:
            return
        rows: dict[tuple[str, str, int], list[torch.Tensor]] = {}
        for block, sparsity in self.blocks:
            removed = self._removed_units(block, sparsity)
            self.removed[block.name + ("#heads" if isinstance(block, HeadBlock) else "#mlp")] = removed
            if not removed:
                continue
            units = torch.tensor(removed, dtype=torch.long)
            for piece in block.producers + block.consumers:
                index = (piece.offset + units[:, None] * piece.size + torch.arange(piece.size)).flatten()
                rows.setdefault((piece.module, piece.key, piece.dim), []).append(index)
        self.masks.set({key: torch.cat(parts) for key, parts in rows.items()})
        self.masks_calculated = True

    def get_masks(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """NNI-format masks (built on request: the pruner itself keeps only the removed indices)."""
        return {} if self.speedup_applied else self.masks.to_nni()

    # ------------------------------------------------------------------ metrics
    def sparsity(self) -> float:
        """Achieved fraction of removed or zero weights over the pruned projections' original sizes."""
        return float(self.extra_metrics()["sparsity"])

    def extra_metrics(self) -> dict[str, Any]:
        """Achieved ``sparsity`` over the pruned projections (removed + zero vs their dense size)."""
        per_layer = {}
        for name, dense in self.dense_numel.items():
            module = self.modules.get(name)
            kept = _weight_nonzero(module) if module is not None else 0
            per_layer[name] = round(1.0 - kept / dense, 6) if dense else 0.0
        dense = sum(self.dense_numel.values())
        pruned = sum(per_layer[n] * self.dense_numel[n] for n in per_layer)
        heads = {n.rpartition("#")[0]: len(r) for n, r in self.removed.items() if n.endswith("#heads")}
        return {"sparsity": pruned / dense if dense else 0.0, "layer_sparsity": per_layer, "heads_removed": heads}

    # ------------------------------------------------------------------ shrink
    def apply_speedup(self, dummy_input: Any) -> nn.Module:
        """Slice the removed heads and channels out of the weights; outputs equal the masked model's.

        Raises ValueError (model restored to its masked state) if the outputs differ.
        """
        if self.speedup_applied:
            return self.model
        if not self.masks_calculated:
            raise ValueError("transformer: apply_speedup before the masks were computed (call compress())")
        from ..artifact import call_with, output_tensors

        start = time.perf_counter()
        self.masks.apply_all()
        self.masks.detach()
        masks = self.masks.to_nni  # the mask file, if asked for, is built from the removed indices
        was_training = self.model.training
        self.model.eval()
        params_before = sum(p.numel() for p in self.model.parameters())
        probe = _verification_input(dummy_input)
        with torch.inference_mode():
            reference = [t.clone() for t in output_tensors(call_with(self.model, probe))]
        snapshot = _snapshot(self.model)
        try:
            self._shrink(self.model)
            with torch.inference_mode():
                got = output_tensors(call_with(self.model, probe))
            diff = _max_diff(reference, got)
            if diff > 1e-4 * max(1.0, max((float(r.abs().max()) for r in reference if r.numel()), default=1.0)):
                raise ValueError(f"shrunk and masked outputs differ (max abs diff {diff:.3g})")
        except Exception as exc:
            _restore(snapshot)
            self.model.train(was_training)
            raise ValueError(f"transformer apply_speedup failed, model restored to its masked state: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.model.train(was_training)
        self.modules = dict(self.model.named_modules())
        self.speedup_applied = True
        self.speedup_masks = masks
        self.dummy_input = dummy_input
        self.shrink_report = {"params_before": params_before,
                              "params_after": sum(p.numel() for p in self.model.parameters()),
                              "max_abs_diff": diff, "seconds": time.perf_counter() - start,
                              "removed": {k: len(v) for k, v in self.removed.items()}}
        logger.info("transformer: shrunk %d -> %d parameters in %.2fs", params_before,
                    self.shrink_report["params_after"], self.shrink_report["seconds"])
        self.report_metrics(example_input=dummy_input)
        return self.model

    def _shrink(self, model: nn.Module) -> None:
        """Slice every block's removed units out of ``model`` (this model or a copy with the same names)."""
        for block, _ in self.blocks:
            key = block.name + ("#heads" if isinstance(block, HeadBlock) else "#mlp")
            removed = self.removed.get(key, [])
            if not removed:
                continue
            modules = dict(model.named_modules())
            by_param: dict[tuple[str, str, int], list[Piece]] = {}
            for piece in block.producers + block.consumers:
                by_param.setdefault((piece.module, piece.key, piece.dim), []).append(piece)
            for (name, key_, dim), pieces in by_param.items():
                _slice_param(modules[name], key_, dim, pieces, removed)
            for name, _, _ in by_param:
                _fix_shape_attrs(modules[name])
            if isinstance(block, HeadBlock):
                _set_head_count(model, block, block.units - len(removed))
        _update_configs(model, self.blocks)

    # ------------------------------------------------------------------ export
    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """The model to deploy: already shrunk, or a shrunk clean copy of the masked model."""
        if self.speedup_applied or not self.masks_calculated:
            yield self.model, None, {}
            return
        from ..deploy import clean_copy

        self.masks.apply_all()
        clone = clean_copy(self.model)
        for module in clone.modules():
            for key, hook in list(module._forward_pre_hooks.items()):
                if isinstance(hook, _ZeroRows):
                    del module._forward_pre_hooks[key]
        self._shrink(clone)
        yield clone, None, {}

    def export_model(self, model_path: str, mask_path: str | None = None, folder_name: str = ".",
                     speedup: bool = False, dummy_input: Any = None, format: str | None = None,
                     **ignored: Any) -> str:
        """Write aup's artifact (shrunk with ``speedup``) or, with ``format="onnx"``, the deployable ONNX
        file of the shrunk model; optionally the NNI mask file."""
        from ..artifact import save_artifact

        ignore_export_arguments(ignored)
        os.makedirs(folder_name, exist_ok=True)
        example = self.example_input(dummy_input)
        if speedup and not self.speedup_applied and example is not None:
            self.apply_speedup(example)
        if not self.speedup_applied:
            self.masks.apply_all()
        masks = self.speedup_masks() if self.speedup_applied and self.speedup_masks else self.get_masks()
        if mask_path is not None:
            torch.save(masks, os.path.join(folder_name, mask_path))
        meta = {"compressor": self.compressor_name, "framework": self.framework,
                "compression_type": self.compression_type, "config_list": self.config_list,
                "speedup_applied": self.speedup_applied, "criterion": self.criterion}

        def write_packed(path: str) -> None:
            save_artifact(path, self.model, example_input=example, masks=None if self.speedup_applied else masks,
                          meta=meta)

        return self._export(model_path, folder_name, format, example, write_packed)


def _set_head_count(model: nn.Module, block: HeadBlock, heads: int) -> None:
    """Tell the attention module (or its replacement) how many heads it has now."""
    module = model.get_submodule(block.name)
    inner = heads * block.head_dim
    if block.style == "torch_mha":
        new = HeadPrunedMultiheadAttention(module.embed_dim, heads, block.head_dim,
                                           bias=module.in_proj_bias is not None, dropout=module.dropout,
                                           batch_first=module.batch_first)
        new.in_proj_weight, new.in_proj_bias, new.out_proj = module.in_proj_weight, module.in_proj_bias, module.out_proj
        new.train(module.training)
        parent_name, _, child = block.name.rpartition(".")
        if not block.name:
            raise ValueError("a bare MultiheadAttention model cannot be replaced in place; wrap it in a module")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    elif block.style == "gpt2":
        module.num_heads, module.split_size = heads, inner
    else:
        for attr, value in (("num_attention_heads", heads), ("all_head_size", inner), ("num_heads", heads)):
            if hasattr(module, attr):
                setattr(module, attr, value)
        if block.num_kv_heads < block.num_heads and hasattr(module, "num_key_value_groups"):
            module.num_key_value_groups = heads // block.num_kv_heads


def _update_configs(model: nn.Module, blocks: list[tuple[HeadBlock | MlpBlock, float]]) -> None:
    """Hugging Face configs: head count and MLP width, when every layer sharing the config agrees."""
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    if not configs:
        return
    heads_all, mlps_all = find_blocks(model)
    all_heads = {b.num_heads for b in heads_all}
    all_widths = {b.hidden for b in mlps_all}
    pruned_heads = any(isinstance(b, HeadBlock) for b, _ in blocks)
    pruned_mlps = any(isinstance(b, MlpBlock) for b, _ in blocks)
    for config in configs.values():
        if pruned_heads and len(all_heads) == 1 and hasattr(config, "num_attention_heads"):
            config.num_attention_heads = next(iter(all_heads))
        for attr in ("intermediate_size", "n_inner"):
            if pruned_mlps and len(all_widths) == 1 and getattr(config, attr, None) is not None:
                setattr(config, attr, next(iter(all_widths)))


# ----------------------------------------------------------------------------- helpers


_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
VERIFY_TOKENS = 16


def _verification_input(example: Any) -> Any:
    """The input the shrink is verified on: the example, cut to its first sample and, for token inputs
    (a dict of ``input_ids``/``attention_mask``/... of shape (batch, length)), its first
    ``VERIFY_TOKENS`` tokens.  Slicing a head or channel out is wrong for every input if it is wrong
    at all, so a short sequence checks it as strictly as a long one at a fraction of the cost."""
    if isinstance(example, torch.Tensor):
        return example[:1] if example.dim() else example
    if isinstance(example, Mapping):
        tokens = all(k in _TOKEN_INPUTS and isinstance(v, torch.Tensor) and v.dim() == 2 for k, v in example.items())
        cut = {k: v[:1] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in example.items()}
        return {k: v[:, :VERIFY_TOKENS] for k, v in cut.items()} if tokens else cut
    if isinstance(example, (tuple, list)):
        return type(example)(v[:1] if isinstance(v, torch.Tensor) and v.dim() else v for v in example)
    return example


def _default_means_all(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``op_types: ["default"]`` selects every attention module and MLP this pruner knows."""
    entry = dict(entry)
    if "default" in entry.get("op_types", ()):
        entry.pop("op_types")
    return entry


def _pieces(block: HeadBlock | MlpBlock) -> list[Piece]:
    return block.producers + block.consumers + list(getattr(block, "kv_producers", []))


def _weight_numel(module: nn.Module) -> int:
    return sum(p.numel() for k, p in module._parameters.items() if p is not None and "weight" in k)


def _weight_nonzero(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for k, p in module._parameters.items()
               if p is not None and "weight" in k)


def _slice_param(module: nn.Module, key: str, dim: int, pieces: list[Piece], removed: list[int]) -> None:
    """Drop the removed units of every piece of one parameter in a single index_select."""
    param = module._parameters[key]
    drop = torch.zeros(param.shape[dim], dtype=torch.bool)
    for piece in pieces:
        for unit in removed:
            drop[piece.offset + unit * piece.size:piece.offset + (unit + 1) * piece.size] = True
    keep = torch.nonzero(~drop).flatten().to(param.device)
    module._parameters[key] = nn.Parameter(param.detach().index_select(dim, keep),
                                           requires_grad=param.requires_grad)


def _fix_shape_attrs(module: nn.Module) -> None:
    weight = module._parameters.get("weight")
    if weight is None:
        return
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif _is_conv1d(module):
        module.nx, module.nf = weight.shape


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, dict, dict, dict]]:
    plain = (int, float, bool, type(None))
    return [(m, dict(m._parameters), dict(m._modules), {k: v for k, v in vars(m).items()
                                                       if not k.startswith("_") and isinstance(v, plain)})
            for m in model.modules()]


def _restore(snapshot: list[tuple[nn.Module, dict, dict, dict]]) -> None:
    for module, params, children, attrs in snapshot:
        module._parameters.clear()
        module._parameters.update(params)
        module._modules.clear()
        module._modules.update(children)
        for k, v in attrs.items():
            setattr(module, k, v)


def _max_diff(reference: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    if len(reference) != len(got) or any(r.shape != g.shape for r, g in zip(reference, got)):
        return float("inf")
    return max((float((r.float() - g.float()).abs().max()) for r, g in zip(reference, got) if r.numel()), default=0.0)


def importance_table(pruner: TransformerPruner) -> Mapping[str, list[float]]:
    """Per block, the current unit scores (for inspection and tests)."""
    return {block.name: pruner.unit_importance(block).tolist() for block, _ in pruner.blocks}
