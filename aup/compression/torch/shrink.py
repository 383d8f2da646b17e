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

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .measure import call_model

__all__ = ["ShrinkError", "ShrinkReport", "shrink_model"]

logger = logging.getLogger(__name__)

Masks = Mapping[str, Mapping[str, "torch.Tensor | None"]]

# Element-wise ops (autograd node names) that map 0 to a non-zero value: a zero channel passing
# through them is no longer zero, so it cannot be removed.
_NONZERO_AT_ZERO = ("Sigmoid", "Exp", "Cos", "Hardsigmoid", "Softplus", "Softmax", "LogSoftmax", "Erfc",
                    "LogSigmoid", "Reciprocal", "Div", "Pow", "Log")
# Layer types whose channels are independent of each other, so removing one leaves the others exact.
_CHANNELWISE = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU)


class ShrinkError(RuntimeError):
    """The shrunk model's outputs differ from the masked model's (the model was restored)."""


@dataclass
class ShrinkReport:
    """What :func:`shrink_model` did.

    ``removed``: output channels removed per module; ``kept_dense``: masked modules that could not
    be shrunk at all, with the reason; ``kept_masked``: masked-out channels that had to stay (their
    group was not all zero there), explained in ``notes``; ``arch_changes``: new shapes per module;
    ``masks``: the remaining (element-wise) masks, re-indexed for the shrunk shapes.
    """

    removed: dict[str, int] = field(default_factory=dict)
    kept_dense: dict[str, str] = field(default_factory=dict)
    kept_masked: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    max_abs_diff: float = 0.0
    seconds: float = 0.0
    arch_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _masks: Any = field(default_factory=dict, repr=False)

    @property
    def masks(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """Remaining masks for the shrunk shapes (computed on first use: slicing big masks costs time)."""
        if callable(self._masks):
            self._masks = self._masks()
        return self._masks

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (without the mask tensors), for meta data and trial records."""
        return {
            "removed": dict(self.removed), "kept_dense": dict(self.kept_dense),
            "kept_masked": dict(self.kept_masked), "notes": dict(self.notes),
            "params_before": self.params_before, "params_after": self.params_after,
            "max_abs_diff": self.max_abs_diff, "seconds": self.seconds,
            "arch_changes": {k: dict(v) for k, v in self.arch_changes.items()},
        }


# ----------------------------------------------------------------------------- public entry point


def shrink_model(model: nn.Module, masks: Masks, dummy_input: Any, atol: float = 1e-4,
                 graph: Any = None) -> ShrinkReport:
    """Remove the channels the masks zero out, in place; verify the outputs are unchanged.

    ``masks`` is NNI's format ``{module_name: {"weight": mask, "bias": mask_or_None}}`` over
    ``model.named_modules()`` names; they are applied to the weights first (that is the "masked
    model" whose outputs the shrunk model must reproduce).  ``dummy_input`` is a tensor, a tuple of
    positional inputs, or a dict of keyword inputs.  The model's training flag is restored.
    ``graph``: torch-pruning's dependency graph of this model when the caller already traced it
    (``pruners.dependency.shared_graph``); then one plain forward pass gives the reference output
    instead of a second trace.
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
            graph = _build_graph(tp, model, dummy_input, captured, report, masks)
        else:
            with torch.no_grad():
                captured["out"] = _first_tensor(call_model(model, dummy_input)).detach().clone()
        if graph is None:
            report._masks = _copy_masks(masks)
        else:
            snapshot = _snapshot(model)
            removed_out, removed_in = _prune_groups(tp, graph, model, modules, masks, report)
            _finish_report(report, modules, masks, removed_out, removed_in, snapshot)
            if removed_out:
                with torch.no_grad():  # the check needs no autograd graph
                    _verify(model, dummy_input, captured["out"], atol, report, snapshot, removed_out)
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


def _build_graph(tp: Any, model: nn.Module, dummy_input: Any, captured: dict[str, torch.Tensor],
                 report: ShrinkReport, masks: Masks) -> Any:
    """Trace once; the trace's forward pass also gives the masked model's reference output."""

    def forward(m: nn.Module, x: Any) -> Any:
        out = call_model(m, x)
        captured["out"] = _first_tensor(out).detach().clone()
        return out

    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=dummy_input, forward_fn=forward,
                                                         verbose=False)
    except Exception as exc:  # torch-pruning cannot trace this model: keep every layer dense
        reason = f"torch-pruning could not trace the model: {type(exc).__name__}: {exc}"
        logger.warning("shrink skipped: %s", reason)
        for name in masks:
            report.kept_dense[name] = reason
        return None


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    for item in out:
        if isinstance(item, torch.Tensor):
            return item
    raise TypeError(f"model output has no tensor: {type(out).__name__}")


def _snapshot(model: nn.Module) -> dict[nn.Module, tuple[dict, dict, dict]]:
    """References to every module's tensors and shape attributes (torch-pruning replaces, never edits)."""
    plain = (int, float, bool, tuple, type(None))
    return {m: (dict(m._parameters), dict(m._buffers),
                {k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, plain)})
            for m in model.modules()}


def _restore(snapshot: Mapping[nn.Module, tuple[dict, dict, dict]]) -> None:
    for m, (params, buffers, attrs) in snapshot.items():
        m._parameters.clear()
        m._parameters.update(params)
        m._buffers.clear()
        m._buffers.update(buffers)
        for k, v in attrs.items():
            setattr(m, k, v)


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
            group = _pruning_group(graph, module, pruner.prune_out_channels, channels)
            producers = [item for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
            visited.update(item.dep.target.module for item in producers)
            idxs = _removable(graph, group, producers, names, masks, report, channels)
            if idxs:
                _prune(graph, group, idxs, removed_out, removed_in)
        except Exception as exc:  # an odd structure in torch-pruning: keep this group dense
            report.kept_dense[name] = f"torch-pruning failed on its group: {type(exc).__name__}: {exc}"
            logger.warning("shrink kept %s dense: %s", name, report.kept_dense[name])
    return removed_out, removed_in


def _pruning_group(graph: Any, module: nn.Module, handler: Any, channels: int) -> Any:
    """The full-channel group of ``module``: computed by the dependency analysis of the masks when
    it was (``dependency.cached_group``, used once), else now."""
    from .pruners.dependency import cached_group

    group = cached_group(graph, module, handler, channels)
    return group if group is not None else graph.get_pruning_group(module, handler, list(range(channels)))


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
    has_source = any(_is_source(i.dep.target.module) for i in producers)
    # masked layers first: most groups are settled (nothing removable) after the first check
    for item in sorted(producers, key=lambda i: names.get(i.dep.target.module) not in masks):
        module = item.dep.target.module
        zero, reason = _zero_channels(module, has_source, _masked_out_local(module, masks, names.get(module)))
        if reason is not None:
            for n in masked_names:
                report.kept_dense[n] = f"shares channels with {names.get(module, item.dep.target.name)}: {reason}"
            return []
        if not isinstance(zero, _AllTrue):
            zero = zero.tolist()
            blocked = {root for local, root in zip(item.idxs, item.root_idxs) if not zero[local]}
            if blocked & masked_roots & candidates:
                blockers[names.get(module, item.dep.target.name)] = None
            candidates -= blocked
        if not candidates:
            break
    _note_kept(producers, names, masks, candidates, report, list(blockers))
    if len(candidates) >= channels:  # never remove a whole layer: keep one (all-zero) channel
        candidates.discard(min(candidates))
    return sorted(candidates)


def _is_tp_op(module: Any) -> bool:
    return type(module).__module__.startswith("torch_pruning")


def _is_source(module: Any) -> bool:
    """Layers whose output channel is computed from all input channels (not a per-channel pass)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return not _is_depthwise(module)
    return isinstance(module, nn.Linear)


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.out_channels


@torch.no_grad()
def _zero_channels(module: Any, has_source: bool, masked: list[bool] | None = None
                   ) -> tuple[torch.Tensor, str | None]:
    """Per output channel: does this producer output exact zero when its zero-channel inputs are zero?"""
    if _is_tp_op(module):
        op = str(getattr(module, "_grad_fn", ""))
        if any(bad in op for bad in _NONZERO_AT_ZERO):
            return torch.zeros(0, dtype=torch.bool), f"{op} maps zero to a non-zero value"
        return _AllTrue(), None
    if not isinstance(module, _CHANNELWISE):
        return torch.zeros(0, dtype=torch.bool), f"{type(module).__name__} mixes channels (not supported)"
    bias = getattr(module, "bias", None)
    bias_zero = bias.detach() == 0 if isinstance(bias, torch.Tensor) else None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _bn_output_at_zero(module) == 0, None
    if isinstance(module, nn.PReLU):
        return _AllTrue(), None
    if masked is not None and _is_source(module):  # masks were applied: masked filters are zero
        zero = torch.tensor(masked, dtype=torch.bool)
        return (zero & bias_zero if bias_zero is not None else zero), None
    weight = module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if module.groups != 1:
            return torch.zeros(0, dtype=torch.bool), "grouped transposed conv (not supported)"
        weight = weight.transpose(0, 1)
    zero = weight.flatten(1).abs().amax(1) == 0
    if _is_depthwise(module) and has_source:
        zero = torch.ones_like(zero)  # its input channel is zero whenever the group's sources are
    return (zero & bias_zero if bias_zero is not None else zero), None


class _AllTrue:
    """Channel-independent, zero-preserving op: it never blocks a channel."""

    def __getitem__(self, idx: int) -> bool:
        return True


def _bn_output_at_zero(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Eval-mode BatchNorm output for a constant-zero input channel."""
    n = bn.num_features
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(n)
    var = bn.running_var if bn.running_var is not None else torch.zeros(n)
    weight = bn.weight.detach() if bn.weight is not None else torch.ones(n)
    bias = bn.bias.detach() if bn.bias is not None else torch.zeros(n)
    return bias - mean * weight / torch.sqrt(var + bn.eps)


_MASKED_CACHE: dict[int, list[bool] | None] = {}


def _masked_out_local(module: nn.Module, masks: Masks, name: str | None) -> list[bool] | None:
    """Per output channel of a masked layer: is its whole weight masked?  (Cached per shrink call.)"""
    if name not in masks or not isinstance(module, _CHANNELWISE):
        return None
    mask = masks[name].get("weight")
    if mask is None or mask.dim() == 0:
        return None
    key = id(mask)
    if key not in _MASKED_CACHE:
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            mask = mask.transpose(0, 1)
        flags = (mask.flatten(1).amax(1) == 0) if mask.dim() > 1 else (mask == 0)
        _MASKED_CACHE[key] = flags.tolist()
    return _MASKED_CACHE[key]


def _masked_roots(producers: list[Any], names: Mapping[nn.Module, str], masks: Masks) -> set[int]:
    roots: set[int] = set()
    for item in producers:
        flags = _masked_out_local(item.dep.target.module, masks, names.get(item.dep.target.module))
        if flags is not None:
            roots.update(root for local, root in zip(item.idxs, item.root_idxs) if flags[local])
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
        kept = [root for local, root in zip(item.idxs, item.root_idxs) if flags[local] and root not in candidates]
        if kept:
            report.kept_masked[name] = len(kept)
            who = ", ".join(blockers) if blockers else "another layer of its dependency group"
            report.notes[name] = (f"{len(kept)} masked channel(s) kept: {who} still output(s) non-zero values there "
                                  f"(an unmasked residual branch or a BatchNorm shift; mask those channels too)")


def _prune(graph: Any, group: Any, idxs: list[int], removed_out: dict[nn.Module, list[int]],
           removed_in: dict[nn.Module, list[int]]) -> None:
    root = group[0].dep.target.module
    sub = graph.get_pruning_group(root, group[0].dep.handler, idxs)
    for item in sub:
        module = item.dep.target.module
        if not isinstance(module, nn.Module) or _is_tp_op(module):
            continue
        target = removed_out if graph.is_out_channel_pruning_fn(item.dep.handler) else removed_in
        target.setdefault(module, []).extend(int(i) for i in item.idxs)
    sub.prune(record_history=False)


# ----------------------------------------------------------------------------- report and masks


def _finish_report(report: ShrinkReport, modules: Mapping[str, nn.Module], masks: Masks,
                   removed_out: Mapping[nn.Module, list[int]], removed_in: Mapping[nn.Module, list[int]],
                   snapshot: Mapping[nn.Module, tuple[dict, dict, dict]]) -> None:
    for name, module in modules.items():
        if module in removed_out:
            report.removed[name] = len(set(removed_out[module]))
        old_params = snapshot[module][0]
        change = {k: list(p.shape) for k, p in module._parameters.items()
                  if p is not None and old_params.get(k) is not None and p.shape != old_params[k].shape}
        if change:
            for attr in ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features"):
                if hasattr(module, attr):
                    change[attr] = getattr(module, attr)
            report.arch_changes[name] = change
    removed_out, removed_in = dict(removed_out), dict(removed_in)
    report._masks = lambda: {name: _slice_entry(modules[name], entry, removed_out.get(modules[name], []),
                                                removed_in.get(modules[name], []))
                             for name, entry in masks.items()}


def _slice_entry(module: nn.Module, entry: Mapping[str, torch.Tensor | None], out_idx: list[int],
                 in_idx: list[int]) -> dict[str, torch.Tensor | None]:
    """The module's masks for its new shapes (removed channels dropped, element zeros kept)."""
    out: dict[str, torch.Tensor | None] = {}
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    for key, mask in entry.items():
        param = getattr(module, key, None)
        if mask is None or not isinstance(param, torch.Tensor):
            out[key] = None
            continue
        sliced = mask.detach()
        out_dim, in_dim = (1, 0) if transposed and key == "weight" else (0, 1)
        sliced = _drop(sliced, out_dim, out_idx)
        if key == "weight" and sliced.dim() > 1 and not _is_depthwise(module):
            sliced = _drop(sliced, in_dim, in_idx)
        if sliced.shape != param.shape:  # an unusual layout: fall back to the zeros of the weights
            sliced = (param.detach() != 0).to(mask.dtype)
        out[key] = sliced.clone()
    return out


def _drop(t: torch.Tensor, dim: int, idxs: Iterable[int]) -> torch.Tensor:
    drop = set(idxs)
    if not drop or t.dim() <= dim:
        return t
    keep = [i for i in range(t.shape[dim]) if i not in drop]
    return t.index_select(dim, torch.tensor(keep, dtype=torch.long, device=t.device))


# ----------------------------------------------------------------------------- verification


@torch.no_grad()
def _verify(model: nn.Module, dummy_input: Any, reference: torch.Tensor, atol: float, report: ShrinkReport,
            snapshot: Mapping[nn.Module, tuple[dict, dict, dict]], removed_out: Mapping[nn.Module, list[int]]) -> None:
    out = _first_tensor(call_model(model, dummy_input))
    if out.shape != reference.shape:
        diff = float("inf")
    else:
        diff = float((out - reference).abs().max()) if out.numel() else 0.0
    report.max_abs_diff = diff
    if diff <= atol:
        return
    shrunk = _layer_summaries(model, dummy_input)
    _restore(snapshot)
    masked = _layer_summaries(model, dummy_input)
    layer = _first_difference(model, masked, shrunk, removed_out, atol)
    raise ShrinkError(f"shrunk and masked outputs differ (max abs diff {diff:.3g} > atol {atol:g}); first differing "
                      f"layer: {layer}. The model was restored to its masked state.")


def _layer_summaries(model: nn.Module, dummy_input: Any) -> dict[str, torch.Tensor]:
    """Per layer, per output channel: (mean, max, min) of the activations, in execution order."""
    summaries: dict[str, torch.Tensor] = {}

    def record(module: nn.Module, _inputs: Any, out: Any, name: str) -> None:  # None: output unchanged
        summaries.setdefault(name, _summary(module, out))

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _CHANNELWISE):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: record(m, i, o, name)))
    try:
        call_model(model, dummy_input)
    finally:
        for h in handles:
            h.remove()
    return summaries


def _summary(module: nn.Module, out: Any) -> torch.Tensor:
    out = _first_tensor(out).detach().float()
    channels = out.movedim(-1, 0) if isinstance(module, nn.Linear) else out.movedim(1, 0)
    flat = channels.reshape(channels.shape[0], -1)
    return torch.stack([flat.mean(1), flat.amax(1), flat.amin(1)], 1)


def _first_difference(model: nn.Module, masked: Mapping[str, torch.Tensor], shrunk: Mapping[str, torch.Tensor],
                      removed_out: Mapping[nn.Module, list[int]], atol: float) -> str:
    modules = dict(model.named_modules())
    for name, ref in masked.items():  # dicts keep execution order
        if name not in shrunk:
            return name
        ref = _drop(ref, 0, removed_out.get(modules[name], []))
        if ref.shape != shrunk[name].shape or float((ref - shrunk[name]).abs().max()) > atol:
            return name
    return "(none of the conv/linear/norm layers; the difference arises after them)"
