"""The transformer pruner's former module path, kept because artifacts saved before the
:mod:`aup.compression.torch.pruners.transformer` package record their shrunk attention class as
``aup.compression.torch.pruners.heads:HeadPrunedMultiheadAttention``."""
from aup.compression.torch.pruners.transformer import HeadBlock, HeadPrunedMultiheadAttention, MlpBlock, TransformerPruner, find_blocks

__all__ = ["TransformerPruner", "HeadPrunedMultiheadAttention", "find_blocks", "HeadBlock", "MlpBlock"]
