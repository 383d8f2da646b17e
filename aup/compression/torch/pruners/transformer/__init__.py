"""``transformer``: structured pruning of whole attention heads and MLP hidden channels.

Why a dedicated pruner: filter pruners see one Linear at a time, but an attention head is a slice
of three projections (query, key, value rows) plus a slice of the output projection's columns, and
the model stays correct only if all of them go together.  Likewise an MLP hidden channel is one row
of the expanding layer(s) and one column of the contracting layer.  This package finds those groups
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

Layout: :mod:`.blocks` (discovery per model family), :mod:`.scoring` (criteria, which units go),
:mod:`.unit_masks` (removed indices enforced by hooks), :mod:`.attention` (the shrunk torch
attention), :mod:`.slicing` (physical shrink, verified) and :mod:`.pruner` (the compressor).
"""
from aup.compression.torch.pruners.transformer.attention import HeadPrunedMultiheadAttention
from aup.compression.torch.pruners.transformer.blocks import HeadBlock, MlpBlock, find_blocks
from aup.compression.torch.pruners.transformer.pruner import TransformerPruner, importance_table

__all__ = ["TransformerPruner", "HeadPrunedMultiheadAttention", "find_blocks", "HeadBlock", "MlpBlock",
           "importance_table"]
