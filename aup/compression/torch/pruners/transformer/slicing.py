"""Physical shrink: slice removed heads and channels out of the weights, verified against the masked model.

Why verified: slicing is wrong for every input if it is wrong at all, so the shrunk model's
outputs on a short probe must equal the masked model's; otherwise the model is restored.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from aup.compression.torch.shrink.module_state import restore_modules, snapshot_modules
from aup.compression.torch.pruners.transformer.attention import HeadPrunedMultiheadAttention
from aup.compression.torch.pruners.transformer.blocks import HeadBlock, MlpBlock, Piece, block_key, find_blocks, is_conv1d

__all__ = ["shrink_blocks", "shrink_verified", "VERIFY_TOKENS"]

Blocks = list[tuple[HeadBlock | MlpBlock, float]]


def shrink_blocks(model: nn.Module, blocks: Blocks, removed: Mapping[str, list[int]]) -> None:
    """Slice every block's removed units out of ``model`` (the pruned model or a copy with the same names)."""
    for block, _ in blocks:
        units = removed.get(block_key(block), [])
        if not units:
            continue
        modules = dict(model.named_modules())
        by_param: dict[tuple[str, str, int], list[Piece]] = {}
        for piece in block.producers + block.consumers:
            by_param.setdefault((piece.module, piece.key, piece.dim), []).append(piece)
        for (name, key_, dim), pieces in by_param.items():
            _slice_param(modules[name], key_, dim, pieces, units)
        for name, _, _ in by_param:
            _fix_shape_attrs(modules[name])
        if isinstance(block, HeadBlock):
            _set_head_count(model, block, block.units - len(units))
    _update_configs(model, blocks)


def shrink_verified(model: nn.Module, dummy_input: Any, blocks: Blocks, removed: Mapping[str, list[int]]) -> float:
    """Shrink ``model`` in place and return the max abs output difference on a probe of ``dummy_input``.

    Raises (model restored to its state before the call) if the outputs differ.
    """
    from aup.compression.torch.artifact.files import call_model, output_tensors

    probe = _verification_input(dummy_input)
    with torch.inference_mode():
        reference = [t.clone() for t in output_tensors(call_model(model, probe))]
    snapshot = snapshot_modules(model)
    try:
        shrink_blocks(model, blocks, removed)
        with torch.inference_mode():
            got = output_tensors(call_model(model, probe))
        diff = _max_diff(reference, got)
        if diff > 1e-4 * max(1.0, max((float(r.abs().max()) for r in reference if r.numel()), default=1.0)):
            raise ValueError(f"shrunk and masked outputs differ (max abs diff {diff:.3g})")
    except Exception:
        restore_modules(snapshot)
        raise
    return diff


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
    elif is_conv1d(module):
        module.nx, module.nf = weight.shape


def _max_diff(reference: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    if len(reference) != len(got) or any(r.shape != g.shape for r, g in zip(reference, got)):
        return float("inf")
    return max((float((r.float() - g.float()).abs().max()) for r, g in zip(reference, got) if r.numel()), default=0.0)

