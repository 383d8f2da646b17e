"""LLM compression on a CPU: magnitude, Wanda, SparseGPT (unstructured and 2:4), RTN and GPTQ at 4 bits.

The model is the byte-level Llama-style LM aup trains on the standard library's source
(``aup.compression.torch.lm_data``, 3.3M parameters, cached under ``$AUP_CACHE``; a few CPU-minutes
the first time). Every method compresses the Linear layers of the transformer blocks (not the
``lm_head``, as the papers do), calibrated on random 256-byte windows of the *training* files
(``--calibration`` windows); quality is the perplexity on the first ``--heldout-bytes`` of the
held-out files (sliding window, context 256, stride 192: each scored byte sees at least 64 bytes of
history).

Methods: ``magnitude`` is aup's ``level`` pruner (smallest |w| of each layer) for unstructured
sparsity and the per-row smallest |w| of every 4 for 2:4; ``magnitude-row`` compares |w| within each
output row (Wanda's comparison group without the activations); ``wanda``, ``sparsegpt``, ``rtn`` and
``gptq`` are the catalog compressors (group size 32, symmetric; GPTQ damping 1 %, no act_order).
Seed-to-seed spread: the calibration-driven methods run once per calibration seed (``--seeds``);
the table shows the mean and the min-max range.

Deployment (for dense, RTN, GPTQ and SparseGPT 50 %): the ONNX file aup writes (4-bit
``MatMulNBits`` for the quantizers), its bytes, ORT latency per token for a 256-token prompt at
batch 1 (one full forward, ``--threads`` threads, rounds interleaved across the files, median of
per-round medians, as a ratio to the dense file in the same run) and the deployed file's own
perplexity. ``packed`` is aup's sparse/k-bit encoding of the weights (what an unstructured-sparse
model would need to store; ONNX stores pruned weights densely).

``--model gpt2`` runs the GPT-2-style model instead (its projections are transformers' ``Conv1D``).
``--diagnose`` asks why Wanda loses to magnitude here: per layer, the spread of the input-feature
norms (max / median of ``||X_j||``; LLM outlier features are tens of times the typical one) and
Wanda's layer output error against magnitude's; then each projection type pruned alone; and Wanda in
the authors' calibration order (a whole block at once) next to aup's.
``--outliers K`` first gives the model K hand-made outlier features per norm layer (the K
largest-gain channels multiplied by ``--outlier-scale``, the projections reading them divided by it:
the same function, the same dense perplexity), the situation Wanda was designed for.

Run:  python benchmarks/llm_compression.py [--model llama|gpt2] [--seeds 3] [--heldout-bytes 16384] [--calibration 32]
      python benchmarks/llm_compression.py --model-seeds 0 1   (training seed-to-seed spread; trains seed 1)
      python benchmarks/llm_compression.py --diagnose [--model gpt2]
      python benchmarks/llm_compression.py --model-seeds 0 --outliers 4
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch import lm_data, obs  # noqa: E402
from aup.compression.torch.layerwise import get_weight, is_linear, set_weight  # noqa: E402
from aup.compression.torch.artifact.storage import encode_tensor, encoded_nbytes  # noqa: E402

SPARSITIES: tuple[Any, ...] = (0.5, "2:4", 0.6, 0.7, 0.8)
BLOCKS = [{"op_types": ["Linear"]}, {"exclude": True, "op_names": ["lm_head"]}]


def _fresh(name: str, dense: nn.Module) -> nn.Module:
    model = lm_data.build_lm(lm_data.SPECS[name])
    model.load_state_dict(dense.state_dict())
    return model.eval()


def _config(compressor: str, ctype: str, arch: str, **keys: Any) -> dict[str, Any]:
    """The blocks' projections: ``Linear`` (Llama) or transformers' ``Conv1D`` (GPT-2), never the lm_head."""
    blocks = {"op_types": ["Conv1D"]} if arch == "gpt2" else BLOCKS[0]
    return {"compression_framework": "torch", "compression_type": ctype, "compressor": compressor,
            "config_list": [{**blocks, **keys}, BLOCKS[1]]}


def _magnitude_per_row(model: nn.Module, setting: Any) -> None:
    """Smallest |w| of every output row (or of every m consecutive weights of a row for n:m)."""
    for name, module in model.named_modules():
        if is_linear(module) and name != "lm_head":
            weight = get_weight(module)
            set_weight(module, weight * obs.magnitude_mask(weight, setting))


def compress(name: str, dense: nn.Module, method: str, setting: Any, calibration: list) -> tuple[nn.Module, Any]:
    """A compressed copy of ``dense`` and its compressor (None for the hand-applied n:m magnitude)."""
    model = _fresh(name, dense)
    arch = lm_data.SPECS[name].arch
    if method == "dense":
        return model, None
    if method == "magnitude-row" or (method == "magnitude" and isinstance(setting, str)):
        _magnitude_per_row(model, setting)
        return model, None
    if method in ("magnitude", "wanda", "sparsegpt"):
        compressor_name = "level" if method == "magnitude" else method
        kwargs = {} if method == "magnitude" else {"calibration": calibration}
        compressor = aup.create_compressor(model, _config(compressor_name, "pruning", arch, sparsity=setting),
                                           **kwargs)
    else:
        kwargs = {"calibration": calibration} if method == "gptq" else {}
        compressor = aup.create_compressor(
            model, _config(method, "quantization", arch, quant_bits=setting, group_size=32, symmetric=True), **kwargs)
    compressor.compress()
    return model, compressor


def packed_bytes(model: nn.Module, compressor: Any) -> int:
    """Bytes of aup's tensor encodings (sparse bitmaps, k-bit codes + group scales) of every weight."""
    quant: dict[str, Any] = {}
    if compressor is not None and getattr(compressor, "compression_type", "") == "quantization":
        with compressor.exported_view() as (specs, _):
            quant = specs
            return sum(encoded_nbytes(_encode(k, v, quant)) for k, v in model.state_dict().items())
    return sum(encoded_nbytes(_encode(k, v, quant)) for k, v in model.state_dict().items())


def _encode(key: str, tensor: torch.Tensor, quant: dict[str, Any]) -> dict:
    spec = quant.get(key)
    if spec is None:
        return encode_tensor(tensor)
    return encode_tensor(tensor, bits=spec["bits"], scale=spec["scale"], zero_point=spec["zero_point"],
                         group_axis=spec.get("group_axis", 1))


def write_onnx(model: nn.Module, compressor: Any, example: torch.Tensor, path: str) -> str:
    """The file aup deploys: float for dense and pruned models, MatMulNBits for the weight-only quantizers."""
    from aup.compression.torch.deploy.settings import DeploySettings, export_onnx

    if compressor is None:
        return export_onnx(model, example, path)
    settings = DeploySettings(int8="static" if compressor.quantizes() else "none")
    return compressor.write_deployed(path, settings, example_input=example)


def interleaved_latency(sessions: dict[str, Callable[[], Any]], rounds: int, runs: int) -> dict[str, float]:
    """Median over rounds of each session's per-round median time (ms), rounds interleaved."""
    for run in sessions.values():
        for _ in range(3):
            run()
    per_round: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for key, run in sessions.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                run()
                times.append((time.perf_counter() - start) * 1000)
            per_round[key].append(statistics.median(times))
    return {k: statistics.median(v) for k, v in per_round.items()}


def _fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:8.3f}"
    return f"{mean:8.3f} [{min(values):.3f}-{max(values):.3f}]"


def model_seed_table(name: str, seeds: list[int], ppl: Callable[[Any], float], context: int,
                     n_calibration: int, outliers: int = 0, outlier_scale: float = 20.0) -> None:
    """The headline settings on models trained from other seeds (training seed-to-seed spread)."""
    settings = [("dense", None), ("magnitude", 0.5), ("wanda", 0.5), ("sparsegpt", 0.5), ("magnitude", "2:4"),
                ("wanda", "2:4"), ("sparsegpt", "2:4"), ("rtn", 4), ("gptq", 4)]
    calibration = lm_data.calibration_batches(context, n_calibration, seed=0, batch=8)
    results: dict[tuple[str, Any], list[float]] = {s: [] for s in settings}
    for seed in seeds:
        dense = with_outliers(lm_data.pretrained_lm(name, seed=seed), outliers, outlier_scale)
        for method, setting in settings:
            model, _compressor = compress(name, dense, method, setting, calibration)
            results[(method, setting)].append(ppl(model))
        print(f"  model seed {seed}: " + ", ".join(f"{m} {s if s is not None else ''}: {v[-1]:.3f}"
                                                 for (m, s), v in results.items()), flush=True)
    print(f"\nTraining seeds {seeds} (calibration seed 0): held-out perplexity per model seed")
    print("| method | setting | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|---|" + "---|" * len(seeds))
    for (method, setting), values in results.items():
        print(f"| {method} | {setting if setting is not None else '-'} | " + " | ".join(f"{v:.3f}" for v in values)
              + " |")


# ------------------------------------------------------------------------- why Wanda loses here (--diagnose)
def _norm_readers(model: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """Each block's normalisation layers and the projections reading their output (Llama, GPT-2)."""
    if hasattr(model, "transformer"):  # GPT-2: ln_1 -> c_attn, ln_2 -> c_fc
        return [pair for h in model.transformer.h for pair in ((h.ln_1, [h.attn.c_attn]), (h.ln_2, [h.mlp.c_fc]))]
    return [pair for layer in model.model.layers for pair in (
        (layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
        (layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj]))]


def with_outliers(model: nn.Module, channels: int, scale: float) -> nn.Module:
    """The same function with outlier features: in every block the ``channels`` largest-gain channels of
    each norm's output are multiplied by ``scale`` and the projections reading them divide those input
    columns by ``scale`` (the large-magnitude features of LLMs, Dettmers et al. 2022, made by hand).
    Wanda's score ``|W_ij| ||X_j||`` cannot see the change; magnitude prunes those columns first."""
    if channels <= 0:
        return model
    with torch.no_grad():
        for norm, readers in _norm_readers(model):
            picked = norm.weight.abs().argsort(descending=True)[:channels]
            norm.weight[picked] *= scale
            if getattr(norm, "bias", None) is not None:
                norm.bias[picked] *= scale
            for reader in readers:
                weight = get_weight(reader).clone()
                weight[:, picked] /= scale
                set_weight(reader, weight)
    return model


def _dense_inputs(model: nn.Module, calibration: list) -> dict[str, torch.Tensor]:
    """``sum x x^T`` of every block projection's input on the calibration batches (dense model)."""
    layers = {n: m for n, m in model.named_modules() if is_linear(m) and n != "lm_head"}
    xxt: dict[str, torch.Tensor] = {}

    def add(name: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        xxt[name] = xxt[name] + x.t() @ x if name in xxt else x.t() @ x

    handles = [m.register_forward_pre_hook(lambda _m, a, n=n: add(n, a[0])) for n, m in layers.items()]
    with torch.no_grad():
        for batch in calibration:
            model(**batch)
    for handle in handles:
        handle.remove()
    return xxt


def _layer_mask(weight: torch.Tensor, setting: float) -> torch.Tensor:
    """aup's ``level``: the smallest |w| of the whole layer."""
    k = int(weight.numel() * setting)
    threshold = weight.abs().flatten().kthvalue(k).values if k else -1.0
    return (weight.abs() > threshold).to(weight.dtype)


def wanda_block_at_once(model: nn.Module, calibration: list, setting: float) -> nn.Module:
    """Wanda in the authors' order (locuslab/wanda ``prune_wanda``): the input norms of all projections
    of one block gathered in one pass on the outputs of the already-pruned blocks, then the block pruned."""
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    for block in blocks:
        layers = {n: m for n, m in block.named_modules() if is_linear(m)}
        sq: dict[str, torch.Tensor] = {}

        def add(name: str, x: torch.Tensor) -> None:
            x = x.detach().reshape(-1, x.shape[-1]).double()
            sq[name] = sq[name] + (x * x).sum(0) if name in sq else (x * x).sum(0)

        handles = [m.register_forward_pre_hook(lambda _m, a, n=n: add(n, a[0])) for n, m in layers.items()]
        with torch.no_grad():
            for batch in calibration:
                model(**batch)
        for handle in handles:
            handle.remove()
        for layer, module in layers.items():
            weight = get_weight(module)
            set_weight(module, weight * obs.wanda_mask(weight, sq[layer], setting))
    return model


def diagnose(name: str, dense: nn.Module, ppl: Callable[[Any], float], calibration: list, setting: float) -> None:
    """Per layer: the spread of the input-feature norms (max / median of ||X_j||) and the layer's output
    error ``||(W - W*mask) X||^2`` of Wanda's mask over magnitude's; then each projection type pruned
    alone (magnitude, magnitude-row, Wanda on the dense model's inputs) and the held-out perplexity."""
    orders = {"aup's wanda (true sequential)": compress(name, dense, "wanda", setting, calibration)[0],
              "the authors' order (block at once)": wanda_block_at_once(_fresh(name, dense), calibration, setting)}
    print(f"\nWanda at {setting:.0%}: " + ", ".join(f"{k} {ppl(m):.4f}" for k, m in orders.items()))
    xxt = _dense_inputs(dense, calibration)
    modules = dict(dense.named_modules())
    print(f"\nPer layer at {setting:.0%} (calibration inputs of the dense model):")
    print("| layer | max/median ||X_j|| | output error Wanda / magnitude-row | Wanda / magnitude |")
    print("|---|---|---|---|")
    spreads, wins = [], 0
    for layer, h in xxt.items():
        weight = get_weight(modules[layer]).double()
        norms = torch.diag(h).sqrt()
        masks = {"wanda": obs.wanda_mask(weight, torch.diag(h), setting), "row": obs.magnitude_mask(weight, setting),
                 "layer": _layer_mask(weight, setting)}
        err = {k: float(torch.einsum("ij,jk,ik->", weight * (1 - m.double()), h, weight * (1 - m.double())))
               for k, m in masks.items()}
        spreads.append(float(norms.max() / norms.median()))
        wins += err["wanda"] < err["row"]
        print(f"| {layer} | {spreads[-1]:.2f} | {err['wanda'] / err['row']:.3f} | {err['wanda'] / err['layer']:.3f} |")
    print(f"median spread {statistics.median(spreads):.2f}, max {max(spreads):.2f}; Wanda's output error below "
          f"magnitude-row's in {wins} of {len(spreads)} layers")
    kinds = sorted({layer.rsplit(".", 1)[-1] for layer in xxt})
    print(f"\nOne projection type pruned at {setting:.0%} (dense {ppl(dense):.4f}):")
    print("| projection | magnitude | magnitude-row | Wanda |")
    print("|---|---|---|---|")
    for kind in kinds:
        row = []
        for method in ("layer", "row", "wanda"):
            model = _fresh(name, dense)
            for layer, module in model.named_modules():
                if layer in xxt and layer.endswith("." + kind):
                    weight = get_weight(module)
                    mask = (_layer_mask(weight, setting) if method == "layer" else obs.magnitude_mask(weight, setting)
                            if method == "row" else obs.wanda_mask(weight, torch.diag(xxt[layer]), setting))
                    set_weight(module, weight * mask)
            row.append(f"{ppl(model):.4f}")
        print(f"| {kind} | " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="llama", choices=sorted(lm_data.SPECS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--heldout-bytes", type=int, default=16384)
    parser.add_argument("--calibration", type=int, default=32, help="calibration windows (of the model's context)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model-seeds", type=int, nargs="*", default=None,
                        help="only the headline settings, on models trained from these seeds (e.g. 0 1)")
    parser.add_argument("--diagnose", action="store_true",
                        help="only the per-layer input-norm spread, Wanda/magnitude output errors and per-projection "
                             "ablation at 50 %%")
    parser.add_argument("--outliers", type=int, default=0,
                        help="give the model this many hand-made outlier features per norm (function-preserving)")
    parser.add_argument("--outlier-scale", type=float, default=20.0)
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (and dense), e.g. rtn gptq")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = lm_data.SPECS[args.model]
    context, stride = spec.context, spec.context * 3 // 4
    started = time.time()
    dense = with_outliers(lm_data.pretrained_lm(args.model), args.outliers, args.outlier_scale)
    print(f"model {args.model}: {sum(p.numel() for p in dense.parameters()):,} parameters "
          f"(ready after {time.time() - started:.0f} s); held-out: first {args.heldout_bytes} bytes of "
          f"{len(lm_data.corpus_files('heldout'))} files; context {context}, stride {stride}", flush=True)
    held_out = lm_data.corpus_tokens("heldout", max_bytes=args.heldout_bytes)

    def ppl(model: Any) -> float:
        return lm_data.perplexity(model, held_out, context=context, stride=stride)

    if args.model_seeds:
        model_seed_table(args.model, args.model_seeds, ppl, context, args.calibration, args.outliers,
                         args.outlier_scale)
        return
    if args.diagnose:
        diagnose(args.model, dense, ppl, lm_data.calibration_batches(context, args.calibration, seed=0, batch=8), 0.5)
        return
    rows: list[tuple[str, str, list[float], int]] = []
    kept: dict[str, tuple[nn.Module, Any]] = {}
    plan: list[tuple[str, Any]] = [("dense", None)]
    plan += [(m, s) for s in SPARSITIES for m in ("magnitude", "magnitude-row", "wanda", "sparsegpt")
             if not (m == "magnitude-row" and isinstance(s, str))]
    plan += [("rtn", 4), ("gptq", 4)]
    plan = [(m, s) for m, s in plan if m == "dense" or not args.methods or m in args.methods]
    for method, setting in plan:
        seeded = method in ("wanda", "sparsegpt", "gptq")
        scores, packed = [], 0
        for seed in range(args.seeds if seeded else 1):
            calibration = lm_data.calibration_batches(context, args.calibration, seed=seed, batch=8)
            model, compressor = compress(args.model, dense, method, setting, calibration)
            scores.append(ppl(model))
            packed = packed_bytes(model, compressor)
            if seed == 0 and (method, setting) in (("dense", None), ("rtn", 4), ("gptq", 4), ("sparsegpt", 0.5)):
                kept[f"{method}" + (f" {setting}" if setting is not None else "")] = (model, compressor)
        label = "" if setting is None else (f"{setting:.0%}" if isinstance(setting, float) else
                                            f"{setting}" if isinstance(setting, str) else f"int{setting}")
        rows.append((method, label, scores, packed))
        print(f"  {method:13s} {label:6s} perplexity {_fmt(scores)}   packed {packed / 1e6:6.2f} MB", flush=True)

    dense_ppl = rows[0][2][0]
    print("\n| method | setting | held-out perplexity (mean [min-max] over calibration seeds) | vs dense | "
          "packed MB |")
    print("|---|---|---|---|---|")
    for method, label, scores, packed in rows:
        print(f"| {method} | {label or '-'} | {_fmt(scores).strip()} | {statistics.fmean(scores) / dense_ppl:.3f}x | "
              f"{packed / 1e6:.2f} |")

    from aup.compression.torch.deploy.runtime import load_deployed

    example = lm_data.calibration_batches(context, 1, seed=99, batch=1)[0]["input_ids"]
    with tempfile.TemporaryDirectory(prefix="aup-llm-bench-") as tmp:
        files, sessions, deployed_ppl = {}, {}, {}
        for key, (model, compressor) in kept.items():
            path = write_onnx(model, compressor, example, os.path.join(tmp, key.replace(" ", "_") + ".onnx"))
            deployed = load_deployed(path, threads=args.threads)
            files[key] = os.path.getsize(path)
            feeds = deployed.feeds(example)
            sessions[key] = lambda run=deployed.session.run, feeds=feeds: run(None, feeds)
            deployed_ppl[key] = ppl(deployed)
        latency = interleaved_latency(sessions, args.rounds, args.runs)
    base = latency["dense"]
    print(f"\nDeployed ONNX files (ORT, batch 1, {context}-token prompt, {args.threads} thread(s); latency per "
          f"token as a ratio to the dense file, rounds interleaved):")
    print("| model | ONNX MB | vs dense | ORT latency/token vs dense | deployed perplexity |")
    print("|---|---|---|---|---|")
    for key in kept:
        print(f"| {key} | {files[key] / 1e6:.2f} | {files[key] / files['dense']:.2f}x | "
              f"{latency[key] / base:.2f}x | {deployed_ppl[key]:.3f} |")
    print(f"\n(total {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
