"""Shrink time of a BERT-base-shaped encoder after removing 50% of the heads and 50% of the MLP channels.

docs/design.md's budget: the whole aup path (create_compressor + compress + apply_speedup) no slower than
torch-pruning doing the same pruning alone, measured in the same run.  The model is Hugging Face's
``BertModel`` built from a config (12 layers, hidden 768, 12 heads, MLP 3072, a 1,000-token
vocabulary; random weights, nothing downloads), called with ``input_ids`` and ``attention_mask`` of
batch 1 x 128 tokens.

- aup: ``transformer`` pruner, L1 per head and per MLP channel, ``head_sparsity`` 0.5 and
  ``mlp_sparsity`` 0.5 on every layer, then ``apply_speedup`` (which also checks that the shrunk
  outputs equal the masked ones).
- torch-pruning alone: ``MetaPruner`` with ``MagnitudeImportance(p=1)``, ``num_heads`` for every
  query/key/value layer, ``prune_num_heads=True``, ``head_pruning_ratio=0.5``,
  ``prune_head_dims=False``, 50% for every ``intermediate.dense`` and for the query/key/value layers
  (with ``prune_head_dims=False`` that ratio only enables the head ranking) and nothing else
  (``pruning_ratio=0``), then ``pruner.step()`` and the attention modules' head counts updated by
  hand as torch-pruning's Hugging Face example does.

Runs alternate between the two (fresh model each, not timed); reported: medians, the ratio
aup / torch-pruning, parameters and batch-1 latency (torch, median of 10) before and after.

Run:  python benchmarks/transformer_shrink.py [--runs 3] [--threads 2] [--layers 12]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


class Encoder(nn.Module):
    """``BertModel`` returning its last hidden state (a tensor, which both tools trace)."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=512)
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def build(layers: int) -> tuple[Encoder, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = Encoder(layers).eval()
    g = torch.Generator().manual_seed(1)
    inputs = {"input_ids": torch.randint(0, 1000, (1, 128), generator=g),
              "attention_mask": torch.ones(1, 128, dtype=torch.long)}
    return model, inputs


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_aup(model: Encoder, x: dict) -> float:
    from aup.compression import create_compressor

    config = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "transformer",
              "config_list": [{"head_sparsity": 0.5, "mlp_sparsity": 0.5, "op_types": ["default"]}]}
    start = time.perf_counter()
    pruner = create_compressor(model, config, criterion="l1")
    pruner.compress()
    pruner.apply_speedup(x)
    return time.perf_counter() - start


def run_torch_pruning(model: Encoder, x: dict) -> float:
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention

    start = time.perf_counter()
    num_heads, ratios = {}, {}
    for module in model.modules():
        if isinstance(module, BertSelfAttention):
            for layer in (module.query, module.key, module.value):
                num_heads[layer] = module.num_attention_heads
                ratios[layer] = 0.5  # a non-zero width ratio: torch-pruning only ranks heads inside such a scope
    for layer in model.bert.encoder.layer:
        ratios[layer.intermediate.dense] = 0.5
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.0,
        pruning_ratio_dict=ratios, num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
        head_pruning_ratio=0.5, global_pruning=False)
    pruner.step()
    for module in model.modules():
        if isinstance(module, BertSelfAttention):
            module.num_attention_heads = pruner.num_heads[module.query]
            module.all_head_size = module.query.out_features
    return time.perf_counter() - start


@torch.inference_mode()
def latency_ms(model: nn.Module, x: dict, runs: int = 10) -> float:
    model(**x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(**x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    times: dict[str, list[float]] = {"aup": [], "torch-pruning": []}
    shapes: dict[str, tuple[int, int]] = {}
    for run in range(args.runs):
        order = (("aup", run_aup), ("torch-pruning", run_torch_pruning))
        for name, fn in order if run % 2 == 0 else order[::-1]:
            model, x = build(args.layers)
            before = params(model)
            times[name].append(fn(model, x))
            shapes[name] = (before, params(model))
            if run == 0 and name == "aup":
                dense, _ = build(args.layers)
                lat_before, lat_after = latency_ms(dense, x), latency_ms(model, x)
                del dense
            del model
    aup_s, tp_s = statistics.median(times["aup"]), statistics.median(times["torch-pruning"])
    print(f"BERT-base-shaped encoder, {args.layers} layers, 50% heads + 50% MLP channels, {args.runs} runs, "
          f"{args.threads} threads")
    print(f"  shrink time median: aup {aup_s:.2f} s, torch-pruning alone {tp_s:.2f} s, ratio aup/tp = "
          f"{aup_s / tp_s:.2f}")
    for name, (before, after) in shapes.items():
        print(f"  params {name}: {before:,} -> {after:,} ({after / before:.3f}x)")
    print(f"  batch-1 latency (128 tokens, torch): {lat_before:.1f} -> {lat_after:.1f} ms "
          f"({lat_after / lat_before:.2f}x)")


if __name__ == "__main__":
    main()
