"""``HeadPrunedMultiheadAttention``: torch attention with fewer heads than ``embed_dim`` allows.

Why a class of our own: PyTorch's ``nn.MultiheadAttention`` requires ``num_heads * head_dim ==
embed_dim``, so once heads are sliced out the shrunk weights need a module that computes the same
attention over a narrower inner width.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HeadPrunedMultiheadAttention"]


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

