"""Physical shrink: turn structured masks into a smaller model with torch-pruning's DependencyGraph.

Why torch-pruning: NNI's mask-propagation speedup is 30-120x slower and breaks on torch >= 2.2,
and a hand-written graph walker would miss the couplings (residual adds, concatenations, depthwise
convs, flatten into a Linear) that DepGraph already models.

The rule that keeps the result *exact*: a channel is removed only when every layer of its
dependency group that produces it outputs exactly zero there in the masked model (eval mode):

- a conv / linear filter whose (masked) weights and bias are all zero;
- a BatchNorm channel whose output for a zero input, ``bias - running_mean * weight /
  sqrt(running_var + eps)``, is zero (a masked BN weight and bias, or fresh statistics);
- a depthwise conv channel without a (non-zero) bias;
- element-wise ops that keep zero at zero (ReLU, add, pooling, reshape...).

So residual branches are pruned only by channels masked in *all* branches, and a conv filter whose
BatchNorm still adds a non-zero shift is kept (noted in the report): removing it would change the
outputs (NNI issue 2130).  Pruners should mask the BatchNorm following a masked filter too.
Element-wise (unstructured) masks stay as zeros in the shrunk weights; ``report.masks`` holds them
re-indexed for the new shapes.

After shrinking, the masked and shrunk outputs on ``dummy_input`` must agree within ``atol``; if
not, the model is restored to its masked state and :class:`ShrinkError` names the first layer
whose activations differ.  Nothing torch-pruning cannot handle crashes the shrink: such layers are
kept dense and listed in ``report.kept_dense`` with the reason.

Callers must remove forward hooks that assume the old shapes (e.g. a mask store's pre-hooks)
before calling :func:`shrink_model`.
"""
from __future__ import annotations

import bisect
import functools
import itertools
import logging
import time
from typing import Any, Mapping

import torch
from torch import nn

from aup.compression.torch.masking import pruned_channels
from aup.compression.torch.measure import call_model, first_tensor
from aup.compression.torch.shrink.module_state import snapshot_modules
from aup.compression.torch.shrink.check import verify
from aup.compression.torch.shrink.graph import build_graph, pruning_group
from aup.compression.torch.shrink.report import Masks, ShrinkError, ShrinkReport, finish_report
from aup.compression.torch.shrink.zero_channels import CHANNELWISE, AllTrue, is_source, is_tp_op, zero_channels

__all__ = ["ShrinkError", "ShrinkReport", "shrink_model"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- public entry point


def shrink_model(model: nn.Module, masks: Masks, dummy_input: Any, atol: float = 1e-4,
                 graph: Any = None) -> ShrinkReport:
    """Remove the channels the masks zero out, in place; verify the outputs are unchanged.

    ``masks`` is NNI's format ``{module_name: {"weight": mask, "bias": mask_or_None}}`` over
    ``model.named_modules()`` names; they are applied to the weights first (that is the "masked
    model" whose outputs the shrunk model must reproduce).  ``dummy_input`` is a tensor, a tuple of
    positional inputs, or a dict of keyword inputs.  The model's training flag is restored.
    ``graph``: torch-pruning's dependency graph of this model when the caller already built it
    (``pruners.dependency.SharedGraph``). Either way the graph is traced on the meta device when
    the model allows it (else for real, and that trace's forward pass is the reference), so the
    real forward passes are two: the masked reference output and the check of the shrunk model
    (which has fewer channels, so costs less).
    """
    import torch_pruning as tp

    start = time.perf_counter()
    modules = dict(model.named_modules())
    _check_mask_names(masks, modules)
    report = ShrinkReport(params_before=_count(model))
    was_training = model.training
    model.eval()
    try:
        _MASKED_CACHE.clear()
        _apply_masks(modules, masks)
        captured: dict[str, torch.Tensor] = {}
        if graph is None:
            graph = build_graph(tp, model, dummy_input, captured, report, masks)
        if graph is not None and "out" not in captured:
            check_start = time.perf_counter()
            with torch.inference_mode():  # the masked model's reference output
                captured["out"] = first_tensor(call_model(model, dummy_input)).detach().clone()
            report.check_seconds += time.perf_counter() - check_start
        if graph is None:
            report._masks = _copy_masks(masks)
        else:
            snapshot = snapshot_modules(model)
            removed_out, removed_in = _prune_groups(tp, graph, model, modules, masks, report)
            finish_report(report, modules, masks, removed_out, removed_in, snapshot)
            if removed_out:
                check_start = time.perf_counter()
                with torch.inference_mode():  # the check needs no autograd graph
                    verify(model, dummy_input, captured["out"], atol, report, snapshot, removed_out)
                report.check_seconds += time.perf_counter() - check_start
    finally:
        _MASKED_CACHE.clear()
        model.train(was_training)
    report.params_after = _count(model)
    report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------- preparation


def _check_mask_names(masks: Masks, modules: Mapping[str, nn.Module]) -> None:
    unknown = [name for name in masks if name not in modules]
    if unknown:
        raise ValueError(f"masks name modules that are not in the model: {unknown[:5]} "
                         f"(masks must use model.named_modules() names)")


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _apply_masks(modules: Mapping[str, nn.Module], masks: Masks) -> None:
    for name, entry in masks.items():
        for key, mask in entry.items():
            param = getattr(modules[name], key, None)
            if mask is None or not isinstance(param, torch.Tensor):
                continue
            if tuple(mask.shape) != tuple(param.shape):
                raise ValueError(f"mask {name}.{key} has shape {tuple(mask.shape)}, "
                                 f"the parameter has {tuple(param.shape)}")
            param.mul_(mask.to(device=param.device, dtype=param.dtype))


def _copy_masks(masks: Masks) -> dict[str, dict[str, torch.Tensor | None]]:
    return {n: {k: (m.detach().clone() if m is not None else None) for k, m in e.items()} for n, e in masks.items()}


# ----------------------------------------------------------------------------- grouping and pruning


def _prune_groups(tp: Any, graph: Any, model: nn.Module, modules: Mapping[str, nn.Module], masks: Masks,
                  report: ShrinkReport) -> tuple[dict[nn.Module, list[int]], dict[nn.Module, list[int]]]:
    """Visit the group of every masked layer once and prune its all-zero channels."""
    names = {m: n for n, m in modules.items()}
    removed_out: dict[nn.Module, list[int]] = {}
    removed_in: dict[nn.Module, list[int]] = {}
    visited: set[nn.Module] = set()
    for name in _in_model_order(masks, modules):
        module = modules[name]
        if module in visited:
            continue
        if module not in graph.module2node:
            report.kept_dense[name] = "not reached by the forward pass on dummy_input (not in the dependency graph)"
            continue
        pruner = graph.get_pruner_of_module(module)
        channels = pruner.get_out_channels(module) if pruner is not None else None
        if not channels:
            report.kept_dense[name] = f"{type(module).__name__} has no prunable output channels in torch-pruning"
            continue
        try:
            group = pruning_group(graph, module, pruner.prune_out_channels, channels)
            producers = [item for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
            visited.update(item.dep.target.module for item in producers)
            idxs = _removable(graph, group, producers, names, masks, report, channels)
            if idxs:
                _prune(graph, group, idxs, removed_out, removed_in)
        except Exception as exc:  # an odd structure in torch-pruning: keep this group dense
            report.kept_dense[name] = f"torch-pruning failed on its group: {type(exc).__name__}: {exc}"
            logger.warning("shrink kept %s dense: %s", name, report.kept_dense[name])
    return removed_out, removed_in


def _in_model_order(masks: Masks, modules: Mapping[str, nn.Module]) -> list[str]:
    return [name for name in modules if name in masks]


def _removable(graph: Any, group: Any, producers: list[Any], names: Mapping[nn.Module, str], masks: Masks,
               report: ShrinkReport, channels: int) -> list[int]:
    """Root channel indices that every producer of the group outputs as exact zero."""
    masked_names = [names[i.dep.target.module] for i in producers if names.get(i.dep.target.module) in masks]
    for item in producers:
        node = item.dep.target
        if not node.outputs:  # the model's output: classifier outputs are never removed
            for n in masked_names:
                report.kept_dense[n] = f"its channels reach the model output through {names.get(node.module, node.name)}"
            return []
    candidates = set(range(channels))
    blockers: dict[str, None] = {}  # producers that kept channels some masked layer had zeroed
    masked_roots = _masked_roots(producers, names, masks)
    has_source = any(is_source(i.dep.target.module) for i in producers)
    # masked layers first: most groups are settled (nothing removable) after the first check
    for item in sorted(producers, key=lambda i: names.get(i.dep.target.module) not in masks):
        module = item.dep.target.module
        zero, reason = zero_channels(module, has_source, _masked_out_local(module, masks, names.get(module)))
        if reason is not None:
            for n in masked_names:
                report.kept_dense[n] = f"shares channels with {names.get(module, item.dep.target.name)}: {reason}"
            return []
        if not isinstance(zero, AllTrue):
            blocked = set(_roots_where(item, (~zero).tolist()))
            if blocked & masked_roots & candidates:
                blockers[names.get(module, item.dep.target.name)] = None
            candidates -= blocked
        if not candidates:
            break
    _note_kept(producers, names, masks, candidates, report, list(blockers))
    if len(candidates) >= channels:  # never remove a whole layer: keep one (all-zero) channel
        candidates.discard(min(candidates))
    return sorted(candidates)


_MASKED_CACHE: dict[int, list[bool] | None] = {}


def _masked_out_local(module: nn.Module, masks: Masks, name: str | None) -> list[bool] | None:
    """Per output channel of a masked layer: is its whole weight masked?  (Cached per shrink call.)"""
    if name not in masks or not isinstance(module, CHANNELWISE):
        return None
    mask = masks[name].get("weight")
    if mask is None or mask.dim() == 0:
        return None
    key = id(mask)
    if key not in _MASKED_CACHE:
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            mask = mask.transpose(0, 1)
        flags = pruned_channels(mask)
        _MASKED_CACHE[key] = flags.tolist()
    return _MASKED_CACHE[key]


def _masked_roots(producers: list[Any], names: Mapping[nn.Module, str], masks: Masks) -> set[int]:
    roots: set[int] = set()
    for item in producers:
        flags = _masked_out_local(item.dep.target.module, masks, names.get(item.dep.target.module))
        if flags is not None:
            roots.update(_roots_where(item, flags))
    return roots


def _note_kept(producers: list[Any], names: Mapping[nn.Module, str], masks: Masks, candidates: set[int],
               report: ShrinkReport, blockers: list[str]) -> None:
    """Record masked-out channels that must stay because another producer is non-zero there."""
    for item in producers:
        module = item.dep.target.module
        name = names.get(module)
        flags = _masked_out_local(module, masks, name)
        if flags is None:
            continue
        kept = [root for root in _roots_where(item, flags) if root not in candidates]
        if kept:
            report.kept_masked[name] = len(kept)
            who = ", ".join(blockers) if blockers else "another layer of its dependency group"
            report.notes[name] = (f"{len(kept)} masked channel(s) kept: {who} still output(s) non-zero values there "
                                  f"(an unmasked residual branch or a BatchNorm shift; mask those channels too)")


def _prune(graph: Any, group: Any, idxs: list[int], removed_out: dict[nn.Module, list[int]],
           removed_in: dict[nn.Module, list[int]]) -> None:
    sub = _sub_group(graph, group, set(idxs))
    for item in sub:
        module = item.dep.target.module
        if not isinstance(module, nn.Module) or is_tp_op(module):
            continue
        target = removed_out if graph.is_out_channel_pruning_fn(item.dep.handler) else removed_in
        target.setdefault(module, []).extend(item.idxs)
    sub.prune(record_history=False)


def _sub_group(graph: Any, group: Any, roots: set[int]) -> Any:
    """``group`` (every channel of its root) narrowed to the root channels ``roots``.

    What ``graph.get_pruning_group(root, handler, sorted(roots))`` returns, without walking the
    graph again: torch-pruning's index mappings send each root channel to its own local indices,
    and every item of a group carries the root index of each local one.
    """
    from torch_pruning.dependency.group import Group

    sub = Group()
    ordered = sorted(roots)
    for item in group.items:
        if _is_identity(item):  # local channel i is root channel i: the common case, no per-index work
            local, root_idxs = ordered[:bisect.bisect_left(ordered, len(item.idxs))], None
        else:
            local = [i for i, root in zip(item.idxs, item.root_idxs) if root in roots]
            root_idxs = [root for root in item.root_idxs if root in roots]
        if local:
            sub.add_dep(item.dep, local)
            sub[len(sub) - 1].root_idxs = local if root_idxs is None else root_idxs
    sub._DG = graph
    return sub


def _is_identity(item: Any) -> bool:
    """Whether the group item maps root channel i to its own channel i, for every channel 0..n-1."""
    known = item.__dict__.get("aup_identity")  # group items are visited several times per shrink
    if known is None:
        idxs = item.idxs
        known = item.__dict__["aup_identity"] = idxs == item.root_idxs and idxs == _range(len(idxs))
    return known


@functools.lru_cache(maxsize=64)
def _range(n: int) -> list[int]:
    return list(range(n))


def _roots_where(item: Any, flags: list[bool]) -> list[int]:
    """The root channels of ``item`` whose local channel is flagged."""
    if _is_identity(item) and len(flags) == len(item.idxs):
        return list(itertools.compress(item.idxs, flags))
    return [root for local, root in zip(item.idxs, item.root_idxs) if flags[local]]
