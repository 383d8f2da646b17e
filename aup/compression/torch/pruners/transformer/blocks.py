"""Where a transformer's heads and MLP channels live: the attention and MLP blocks of each model family.

Why by structure: an attention head is a slice of the query/key/value rows plus a slice of the
output projection's columns, an MLP channel a row of the expanding layer(s) plus a column of the
contracting one.  A :class:`Piece` names one such slice family, so scoring, masking and slicing
never need to know which model family the block came from.  Modules are recognised by their
children and attributes (torch ``MultiheadAttention`` / ``TransformerEncoderLayer``, BERT/ViT
``query``/``key``/``value``, Llama ``q_proj``..``o_proj`` and gated MLPs, GPT-2 ``Conv1D``), so
subclasses and look-alikes work too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["Piece", "HeadBlock", "MlpBlock", "find_blocks", "block_key", "pieces_of", "is_conv1d"]


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



def is_conv1d(module: Any) -> bool:
    """Hugging Face's GPT-2 ``Conv1D``: a Linear with the weight stored as (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(module.weight, nn.Parameter)


def _linear_pieces(prefix: str, module: nn.Module, offset: int, size: int, role: str) -> list[Piece]:
    """Slices of a Linear/Conv1D: its output units (``role="out"``) or input units (``"in"``)."""
    conv1d = is_conv1d(module)
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
    return isinstance(module, nn.Linear) or is_conv1d(module)


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
    if is_conv1d(children.get("c_attn")) and is_conv1d(children.get("c_proj")) and hasattr(module, "split_size") \
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
    elif is_conv1d(children.get("c_fc")) and is_conv1d(children.get("c_proj")):
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
    hidden = up_mods[0].nf if is_conv1d(up_mods[0]) else up_mods[0].out_features
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


def block_key(block: HeadBlock | MlpBlock) -> str:
    """The key of a block's removed units (``<name>#heads`` or ``<name>#mlp``)."""
    return block.name + ("#heads" if isinstance(block, HeadBlock) else "#mlp")


def pieces_of(block: HeadBlock | MlpBlock) -> list[Piece]:
    """Every slice of the block, including grouped-query attention's key/value slices."""
    return block.producers + block.consumers + list(getattr(block, "kv_producers", []))
