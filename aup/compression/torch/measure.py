"""Measured size metrics of a (compressed) model, under docs/design.md's names.

Every number is measured on the model or file as it exists, never estimated from a config
(Auptimizer reported dense FLOPs for masked models and rewarded *more* FLOPs):

- ``param_count``: parameters as they physically exist (after any shrink).
- ``nonzero_params``: parameters that are non-zero after applying ``masks`` (if given).
- ``macs``: multiply-accumulates for one sample.  Rule: the matmul-type ops torch's
  ``FlopCounterMode`` counts over the whole forward (convolutions, linear / matmul / bmm, the
  attention score and value products), halved to MACs; for ``Conv*`` and ``Linear`` weights the
  dense count is replaced by *non-zero weights x output positions* (transposed convs: x input
  positions), so a masked filter or a level-pruned weight costs nothing.  That includes the
  projections ``nn.MultiheadAttention`` applies itself (packed ``in_proj_weight``, ``out_proj``).
  PyTorch's fused transformer fast path is switched off while counting (its kernel is invisible to
  the counter and skips the layers).  Element-wise ops, normalisation, pooling, activations and bias adds are not
  counted (NNI's and torch-pruning's convention).  A masked filter's *consumer* still counts its
  weights on the (now zero) channel until the model is shrunk: that is the honest cost of a masked
  model, and the reason to shrink.
- ``model_bytes`` / ``model_bytes_gzip``: size of the exported artifact (``artifact_path``), or
  of a temporary artifact written by :func:`aup.compression.torch.artifact.files.save_artifact`;
  gzip at level 6.
- ``sparsity``: fraction of zero weights over ``compressed_modules`` (default: every conv/linear).
- ``weight_bits``: stored bits per parameter, averaged over all parameters: ``quant_bits``
  {param_name: bits} where quantized, the dtype's width (32 for fp32) otherwise.
- ``latency_ms``: median of ``latency_runs`` forward passes at batch 1 after warm-up, in eval mode
  under ``torch.inference_mode``, with ``torch.set_num_threads(LATENCY_THREADS)`` (restored after).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import statistics
import tempfile
import time
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from aup import metrics as M
from aup.compression.torch.artifact.files import call_model  # noqa: F401 - also this module's name for it

__all__ = ["LATENCY_THREADS", "measure_model", "count_flops_params", "layer_macs", "latency_ms"]

# Fixed so latencies compare across trials. One thread by default: trials run side by side
# (n_parallel), and several multi-threaded timings on the same cores oversubscribe them (OpenMP
# spin-waits turned a 0.1 ms forward into 140 ms medians). AUP_LATENCY_THREADS overrides it.
LATENCY_THREADS = max(1, int(os.environ.get("AUP_LATENCY_THREADS", "1") or 1))

Masks = Mapping[str, Mapping[str, "torch.Tensor | None"]]
_COUNTED = (nn.modules.conv._ConvNd, nn.Linear)


def measure_model(model: nn.Module, example_input: Any, *, masks: Masks | None = None,
                  artifact_path: str | os.PathLike | None = None, compressed_modules: Iterable[str] | None = None,
                  quant_bits: Mapping[str, int] | None = None, latency: bool = True,
                  latency_runs: int = 20) -> dict[str, float]:
    """All size metrics of ``model`` (see the module docstring); ``latency_ms`` only if ``latency``.

    Without ``example_input`` (a model that never ran) ``macs`` and ``latency_ms`` are left out."""
    masks = masks or {}
    if quant_bits and artifact_path is None:
        raise ValueError("measure_model: pass artifact_path for a quantized model (its size is measured on the "
                         "exported artifact, which stores the integer codes)")
    modules = dict(model.named_modules())
    unknown = [n for n in masks if n not in modules]
    if unknown:
        raise ValueError(f"measure_model: masks name modules that are not in the model: {unknown[:5]}")
    metrics: dict[str, float] = {
        M.PARAM_COUNT: float(sum(p.numel() for p in model.parameters())),
        M.NONZERO_PARAMS: float(_nonzero_params(model, masks)),
        **_file_sizes(model, example_input, masks, artifact_path),
        M.SPARSITY: _sparsity(modules, masks, compressed_modules),
        M.WEIGHT_BITS: _weight_bits(model, quant_bits or {}),
    }
    if example_input is None:  # the model never ran and no dummy input: what needs an input is left out
        return metrics
    metrics[M.MACS] = float(_count_macs(model, example_input, masks)[0])
    if latency:
        metrics[M.LATENCY_MS] = latency_ms(model, example_input, runs=latency_runs)
    return metrics


def count_flops_params(model: nn.Module, x: Any, verbose: bool = True, masks: Masks | None = None
                       ) -> tuple[float, float, list[dict[str, Any]]]:
    """NNI-style ``(flops, params, per_layer_rows)``; ``x`` is an input shape tuple or tensor(s).

    ``flops`` are mask-aware MACs per sample (NNI also reported MACs under the name "flops"),
    ``params`` the parameters minus the masked elements (as NNI counted them).  Rows: one per conv/linear call with ``name``,
    ``module_type``, ``weight_shape``, ``flops``, ``params``, ``input_size``, ``output_size``.
    """
    if isinstance(x, (tuple, list)) and x and all(isinstance(v, int) for v in x):
        param = next(model.parameters(), None)
        x = torch.zeros(*x, device=param.device if param is not None else "cpu")
    macs, rows = _count_macs(model, x, masks or {}, only_masks=True)
    params = _nonzero_params(model, masks or {}, only_masks=True)
    if verbose:
        _print_rows(rows, macs, params)
    return float(macs), float(params), rows


# ----------------------------------------------------------------------------- MACs


def layer_macs(module: nn.Module, out: torch.Tensor, nonzero_weights: int) -> int:
    """MACs of one conv/linear call: non-zero weights x positions each weight is used at."""
    if isinstance(module, nn.Linear):
        positions = out.numel() // max(out.shape[-1], 1)
    elif isinstance(module, nn.modules.conv._ConvTransposeNd):
        positions = 0  # filled by the caller from the input
    else:
        positions = out.numel() // max(out.shape[1] if out.dim() > 1 else 1, 1)
    return nonzero_weights * positions


@torch.no_grad()
def _count_macs(model: nn.Module, example_input: Any, masks: Masks, *, only_masks: bool = False
                ) -> tuple[int, list[dict[str, Any]]]:
    """MACs per batch and per-layer rows. A conv/linear weight counts when it is unmasked and (unless
    ``only_masks``, NNI's mask-only rule for ``count_flops_params``) non-zero."""
    from torch.utils.flop_counter import FlopCounterMode

    rows: list[dict[str, Any]] = []
    dense_total = 0
    sparse_total = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], out: Any, name: str) -> None:
        nonlocal dense_total, sparse_total
        if not isinstance(out, torch.Tensor):
            return
        weight = module.weight.detach()
        mask = masks.get(name, {}).get("weight")
        nonzero = torch.ones_like(weight, dtype=torch.bool) if only_masks else weight != 0
        if mask is not None:
            nonzero &= mask.to(weight.device) != 0
        nnz = int(nonzero.sum())
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            x = inputs[0]
            positions = x.numel() // max(x.shape[1], 1)
        else:
            positions = layer_macs(module, out, 1)
        dense_total += weight.numel() * positions
        sparse_total += nnz * positions
        bias = getattr(module, "bias", None)
        bias_nnz = 0
        if isinstance(bias, torch.Tensor):
            kept = torch.ones_like(bias, dtype=torch.bool) if only_masks else bias.detach() != 0
            bias_mask = masks.get(name, {}).get("bias")
            bias_nnz = int((kept & (bias_mask.to(bias.device) != 0) if bias_mask is not None else kept).sum())
        rows.append({"name": name, "module_type": type(module).__name__, "weight_shape": list(weight.shape),
                     "flops": nnz * positions, "params": nnz + bias_nnz,
                     "input_size": list(inputs[0].shape) if inputs and isinstance(inputs[0], torch.Tensor) else None,
                     "output_size": list(out.shape)})

    def attention_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                       name: str) -> None:
        """Projections an attention module applies with F.linear on its own weights (no module call)."""
        nonlocal dense_total, sparse_total
        inputs = [args[i] if len(args) > i else kwargs.get(key) for i, key in enumerate(("query", "key", "value"))]
        used = [(f"{name}", "in_proj_weight", module.in_proj_weight, i, t) for i, t in enumerate(inputs)]
        if _read_by_parent(named, f"{name}.out_proj" if name else "out_proj"):
            used.append((f"{name}.out_proj", "weight", module.out_proj.weight, None, inputs[0]))
        for layer, key, weight, third, x in used:
            if not isinstance(x, torch.Tensor) or weight is None:
                continue
            weight = weight.detach()
            nonzero = torch.ones_like(weight, dtype=torch.bool) if only_masks else weight != 0
            mask = masks.get(layer, {}).get(key)
            if mask is not None:
                nonzero &= mask.to(weight.device) != 0
            if third is not None:
                rows = weight.shape[0] // 3
                weight, nonzero = weight[third * rows:(third + 1) * rows], nonzero[third * rows:(third + 1) * rows]
            positions = x.numel() // max(x.shape[-1], 1)
            dense_total += weight.numel() * positions
            sparse_total += int(nonzero.sum()) * positions

    named = dict(model.named_modules())
    # nn.MultiheadAttention reads out_proj.weight itself (counted by attention_hook); other layers are called
    handles = [m.register_forward_hook(lambda mod, i, o, name=n: hook(mod, i, o, name))
               for n, m in named.items() if isinstance(m, _COUNTED) and not _read_by_parent(named, n)]
    handles += [m.register_forward_hook(lambda mod, a, k, o, name=n: attention_hook(mod, a, k, o, name),
                                        with_kwargs=True)
                for n, m in named.items() if isinstance(getattr(m, "in_proj_weight", None), torch.Tensor)
                and isinstance(getattr(m, "out_proj", None), nn.Linear)]
    was_training = model.training
    fast_path = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    try:
        # the fused transformer kernels are invisible to the flop counter and skip the layers' hooks
        torch.backends.mha.set_fastpath_enabled(False)
        with FlopCounterMode(display=False) as counter:
            call_model(model, example_input)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
        for h in handles:
            h.remove()
    batch = _batch_size(example_input)
    total = counter.get_total_flops() // 2 - dense_total + sparse_total
    for row in rows:
        row["flops"] = row["flops"] / batch
    return max(total, 0) / batch, rows


def _read_by_parent(named: Mapping[str, nn.Module], name: str) -> bool:
    """``nn.MultiheadAttention.out_proj``: its weight is used by the parent, the module is never called."""
    parent, _, child = name.rpartition(".")
    return child == "out_proj" and isinstance(named.get(parent), nn.MultiheadAttention)


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model's output (a tensor, a tuple/list, or a dict such as a ``ModelOutput``):
    what output checks and agreement compare."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    for item in out:
        if isinstance(item, torch.Tensor):
            return item
    raise TypeError(f"model output has no tensor: {type(out).__name__}")


def _batch_size(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return max(int(x.shape[0]), 1) if x.dim() else 1
    values = x.values() if isinstance(x, Mapping) else x
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim():
            return max(int(v.shape[0]), 1)
    return 1


def _print_rows(rows: list[dict[str, Any]], macs: float, params: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MACs {macs:,.0f}  non-zero params {params:,.0f}")
    for col in ("name", "type", "weight shape", "MACs", "params", "input", "output"):
        table.add_column(col, justify="right" if col in ("MACs", "params") else "left")
    for r in rows:
        table.add_row(r["name"], r["module_type"], str(r["weight_shape"]), f"{r['flops']:,.0f}",
                      f"{r['params']:,}", str(r["input_size"]), str(r["output_size"]))
    Console().print(table)


# ----------------------------------------------------------------------------- counts


@torch.no_grad()
def _nonzero_params(model: nn.Module, masks: Masks, *, only_masks: bool = False) -> int:
    """Parameters that are non-zero and not masked; ``only_masks`` counts every unmasked element
    (NNI's ``count_flops_params`` rule, where a zero-initialised bias is still a parameter)."""
    total = 0
    for module_name, module in model.named_modules():
        for key, p in module.named_parameters(recurse=False):
            kept = torch.ones_like(p, dtype=torch.bool) if only_masks else p.detach() != 0
            mask = masks.get(module_name, {}).get(key)
            if mask is not None:
                kept &= mask.to(p.device) != 0
            total += int(kept.sum())
    return total


@torch.no_grad()
def _sparsity(modules: Mapping[str, nn.Module], masks: Masks, names: Iterable[str] | None) -> float:
    if names is None:
        selected = [n for n, m in modules.items() if isinstance(m, _COUNTED)]
    else:
        selected = list(names)
        missing = [n for n in selected if n not in modules]
        if missing:
            raise ValueError(f"measure_model: compressed_modules not in the model: {missing[:5]}")
    zeros = total = 0
    for name in selected:
        weight = getattr(modules[name], "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        nz = weight.detach() != 0
        mask = masks.get(name, {}).get("weight")
        if mask is not None:
            nz &= mask.to(weight.device) != 0
        total += nz.numel()
        zeros += nz.numel() - int(nz.sum())
    return zeros / total if total else 0.0


def _weight_bits(model: nn.Module, quant_bits: Mapping[str, int]) -> float:
    names = dict(model.named_parameters())
    unknown = [k for k in quant_bits if k not in names]
    if unknown:
        raise ValueError(f"measure_model: quant_bits names parameters not in the model: {unknown[:5]}")
    total_bits = total = 0
    for name, p in names.items():
        width = torch.finfo(p.dtype).bits if p.is_floating_point() else torch.iinfo(p.dtype).bits
        total_bits += int(quant_bits.get(name, width)) * p.numel()
        total += p.numel()
    return total_bits / total if total else 0.0


def _file_sizes(model: nn.Module, example_input: Any, masks: Masks,
                artifact_path: str | os.PathLike | None) -> dict[str, float]:
    if artifact_path is not None:
        return sizes_of(artifact_path)
    from aup.compression.torch.artifact.files import save_artifact

    with tempfile.TemporaryDirectory(prefix="aup-measure-") as tmp:
        path = os.path.join(tmp, "model.aup")
        save_artifact(path, model, example_input=example_input, masks=masks, verify=False)
        return sizes_of(path)


def sizes_of(path: str | os.PathLike) -> dict[str, float]:
    with open(path, "rb") as fh:
        data = fh.read()
    return {M.MODEL_BYTES: float(len(data)), M.MODEL_BYTES_GZIP: float(len(gzip.compress(data, 6, mtime=0)))}


# ----------------------------------------------------------------------------- latency


def latency_ms(model: nn.Module, example_input: Any, runs: int = 20, warmup: int = 3,
               threads: int = LATENCY_THREADS) -> float:
    """Median wall time (ms) of one batch-1 forward pass, eval mode, fixed threads."""
    x = first_sample(example_input)
    times = []
    with timing_mode(model, threads):
        for i in range(warmup + max(runs, 1)):
            start = time.perf_counter()
            call_model(model, x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


@contextlib.contextmanager
def timing_mode(model: nn.Module, threads: int) -> Iterator[None]:
    """Eval mode, ``inference_mode`` and a fixed thread count for timing ``model``; all restored on exit."""
    previous = torch.get_num_threads()
    was_training = model.training
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)


def first_sample(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x[:1] if x.dim() else x
    if isinstance(x, Mapping):
        return {k: first_sample(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(first_sample(v) for v in x)
    return x
