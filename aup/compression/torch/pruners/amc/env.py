"""AMC's channel-pruning environment, for any model torch-pruning can trace.

One step per prunable layer, in forward order. A prunable layer is a configured Conv2d / Linear
whose output channels feed other layers and are tied to no other producer: residual-tied convs are
skipped, as the AMC paper does for ResNet, and a depthwise conv after a pointwise conv follows it
(MobileNetV2). The action is the layer's *preserve ratio*; its channels are rounded up to a multiple
of ``channel_round``; channel selection (a ``ChannelScore``) keeps the channels of largest score --
by default the AMC paper's and NNI 2.0's: the magnitude of the *next* layers' weights on each input
channel, ``sum |W_next[:, c]|`` over every consumer -- the BatchNorms and depthwise convs of the same
channels are masked with them, and the consuming layers' weights are then re-fitted by least squares
on calibration samples (He et al. 2017, used by AMC).

FLOPs are the MACs of every conv / linear (NNI's default counting); after pruning, a layer costs
``dense MACs * (kept outputs / outputs) * (kept inputs / inputs)``, which is exactly what the
physical shrink leaves. Budget-aware clipping (the paper's constrained action space): the action of
layer t is lowered until, with every later layer at its smallest allowed width, the model fits
``flops_ratio`` of the dense MACs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from aup.compression.torch.masking import pruned_channels

__all__ = ["PrunableLayer", "ChannelPruningEnv", "analyse_model", "ChannelScore", "next_layer_magnitude"]


@dataclass
class PrunableLayer:
    """One decision of the agent: a producer, what follows its channels, who consumes them."""

    name: str
    module: nn.Module
    n_channels: int
    followers: list[str] = field(default_factory=list)  # depthwise convs / BNs sharing the channels
    consumers: dict[str, list[list[int]]] = field(default_factory=dict)  # name -> input indices per channel


# (layer, modules of the model being pruned) -> one score per output channel of the layer; higher keeps
ChannelScore = Callable[[PrunableLayer, Mapping[str, nn.Module]], torch.Tensor]


def next_layer_magnitude(layer: PrunableLayer, modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """AMC's channel importance: ``sum |W|`` of the consumers' weights reading each channel."""
    scores = torch.zeros(layer.n_channels, dtype=torch.float64)
    for consumer, per_channel in layer.consumers.items():
        columns = modules[consumer].weight.detach().abs().transpose(0, 1).flatten(1).sum(1).double().cpu()
        for channel, inputs in enumerate(per_channel):
            scores[channel] += float(columns[inputs].sum()) if inputs else 0.0
    return scores


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def analyse_model(model: nn.Module, dummy_input: Any, layer_names: Iterable[str]) -> tuple[list[PrunableLayer], dict[str, str]]:
    """Prunable layers among ``layer_names`` (forward order) and, for the others, why they are skipped."""
    import torch_pruning as tp

    from aup.compression.torch.graph.dependency import build_graph

    graph = build_graph(model, dummy_input)
    names = {module: name for name, module in model.named_modules()}
    modules = dict(model.named_modules())
    wanted = [n for n in modules if n in set(layer_names)]
    prunable, skipped = [], {}
    for name in wanted:
        module = modules[name]
        if _is_depthwise(module):
            skipped[name] = "depthwise conv (follows the layer that feeds it)"
            continue
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or module not in graph.module2node:
            skipped[name] = "not a traced Conv2d / Linear"
            continue
        n_out = module.weight.shape[0]
        fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        group = graph.get_pruning_group(module, fn, idxs=list(range(n_out)))
        layer, reason = _layer_from_group(name, module, n_out, group, graph, names)
        if layer is None:
            skipped[name] = reason
        else:
            prunable.append(layer)
    return prunable, skipped


def _layer_from_group(name: str, module: nn.Module, n_out: int, group: Any, graph: Any,
                      names: Mapping[nn.Module, str]) -> tuple[PrunableLayer | None, str]:
    layer = PrunableLayer(name, module, n_out)
    for item in group.items:
        target = item.dep.target.module
        other = names.get(target)
        if other is None or target is module:
            continue
        handler = item.dep.handler
        if _is_depthwise(target) or isinstance(target, nn.modules.batchnorm._BatchNorm):
            if other not in layer.followers:
                layer.followers.append(other)
        elif isinstance(target, (nn.modules.conv._ConvNd, nn.Linear)):
            if graph.is_out_channel_pruning_fn(handler) and not graph.is_in_channel_pruning_fn(handler):
                return None, f"its channels are tied to {other!r} (residual add); AMC skips such layers"
            if getattr(target, "groups", 1) != 1:
                return None, f"consumer {other!r} is a grouped conv"
            per_channel: list[list[int]] = [[] for _ in range(n_out)]
            for idx, root in zip(item.idxs, item.root_idxs):
                per_channel[int(root)].append(int(idx))
            layer.consumers[other] = per_channel
        elif graph.is_out_channel_pruning_fn(handler) and not graph.is_in_channel_pruning_fn(handler):
            return None, f"its channels are tied to {other!r}"
    if not layer.consumers:
        return None, "its outputs are model outputs (no layer consumes them)"
    return layer, ""


class ChannelPruningEnv:
    """States, budget-aware actions, masks and rewards of one AMC search on ``model``.

    ``calibration`` is a list of input batches (from ``val_loader``); ``n_points_per_layer`` spatial
    positions per image are sampled for the least-squares fits of conv consumers.
    """

    def __init__(self, model: nn.Module, layers: list[PrunableLayer], calibration: list[Any], *,
                 flops_ratio: float, lbound: float, rbound: float, channel_round: int, n_points_per_layer: int,
                 seed: int | None = None, channel_score: ChannelScore = next_layer_magnitude) -> None:
        self.model = model
        self.channel_score = channel_score
        self.layers = layers
        self.flops_ratio, self.lbound, self.rbound = flops_ratio, lbound, rbound
        self.channel_round = channel_round
        self.rng = np.random.default_rng(seed)
        self.layer_info = self._layer_info(calibration[0])
        self.total_flops = float(sum(info["flops"] for info in self.layer_info.values()))
        self.budget = flops_ratio * self.total_flops
        self._owners()
        self.samples = self._collect(calibration, n_points_per_layer)
        self.static = self._static_features()

    # ------------------------------------------------------------------ model facts
    def _layer_info(self, example: Any) -> dict[str, dict[str, Any]]:
        """Dense MACs, stride and kernel of every conv / linear from one forward pass."""
        info: dict[str, dict[str, Any]] = {}
        handles = []
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                def hook(mod: nn.Module, inputs: Any, output: torch.Tensor, name: str = name) -> None:
                    per_out = mod.weight[0].numel()
                    positions = output[0].numel() // output.shape[1] if output.dim() > 2 else 1
                    info.setdefault(name, {"flops": float(positions * mod.weight.shape[0] * per_out)})
                handles.append(module.register_forward_hook(hook))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(example[:1])
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(was_training)
        return info

    def _owners(self) -> None:
        """Which decision scales each layer's outputs and inputs (for the FLOPs model)."""
        self.out_owner: dict[str, int] = {}
        self.in_owner: dict[str, list[tuple[int, float]]] = {}
        modules = dict(self.model.named_modules())
        for index, layer in enumerate(self.layers):
            self.out_owner[layer.name] = index
            for follower in layer.followers:
                if follower in self.layer_info:  # depthwise conv: its MACs scale with the channels once
                    self.out_owner[follower] = index
            for consumer, per_channel in layer.consumers.items():
                fan_in = modules[consumer].weight.shape[1]
                share = sum(len(idx) for idx in per_channel) / fan_in
                self.in_owner.setdefault(consumer, []).append((index, share))

    def flops(self, ratios: Mapping[int, float]) -> float:
        """MACs of the model with decision ``i`` keeping ``ratios[i]`` of its channels (missing: 1)."""
        total = 0.0
        for name, info in self.layer_info.items():
            out = ratios.get(self.out_owner[name], 1.0) if name in self.out_owner else 1.0
            inp = 1.0
            for index, share in self.in_owner.get(name, ()):
                inp -= share * (1 - ratios.get(index, 1.0))
            total += info["flops"] * out * inp
        return total

    # ------------------------------------------------------------------ actions
    def channels(self, index: int, ratio: float) -> int:
        """Kept channels for a preserve ratio: rounded up to ``channel_round``, within [1, n]."""
        n = self.layers[index].n_channels
        k = math.ceil(ratio * n / self.channel_round - 1e-9) * self.channel_round
        return int(min(max(k, 1), n))

    def min_ratio(self, index: int) -> float:
        return self.channels(index, self.lbound) / self.layers[index].n_channels

    def clip_action(self, index: int, action: float, decided: Mapping[int, float]) -> float:
        """The largest rounded preserve ratio <= ``action`` that keeps the budget reachable."""
        n = self.layers[index].n_channels
        action = float(np.clip(action, self.lbound, self.rbound))
        rest = {i: self.min_ratio(i) for i in range(index + 1, len(self.layers))}
        k = self.channels(index, action)
        low = self.channels(index, self.lbound)
        while k > low and self.flops({**decided, **rest, index: k / n}) > self.budget:
            k = max(low, k - self.channel_round)
        return k / n

    # ------------------------------------------------------------------ states
    def _static_features(self) -> np.ndarray:
        modules = dict(self.model.named_modules())
        rows = []
        for index, layer in enumerate(self.layers):
            module = modules[layer.name]
            is_conv = isinstance(module, nn.Conv2d)
            rows.append([index, 0.0 if is_conv else 1.0, module.weight.shape[1], module.weight.shape[0],
                         module.stride[0] if is_conv else 0, module.kernel_size[0] if is_conv else 1,
                         self.layer_info[layer.name]["flops"]])
        table = np.asarray(rows, dtype=np.float64)
        span = table.max(0) - table.min(0)
        return (table - table.min(0)) / np.where(span > 0, span, 1.0)

    def state(self, index: int, decided: Mapping[int, float], previous: float) -> np.ndarray:
        """Layer embedding: static features, FLOPs reduced so far, FLOPs of the rest, previous action."""
        reduced = (self.total_flops - self.flops(decided)) / self.total_flops
        rest = sum(self.layer_info[self.layers[i].name]["flops"] for i in range(index + 1, len(self.layers)))
        return np.concatenate([self.static[index], [reduced, rest / self.total_flops, previous]]).astype(np.float32)

    # ------------------------------------------------------------------ calibration and pruning
    def _collect(self, batches: list[Any], n_points: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Inputs (unfolded for convs, sampled positions) and bias-free outputs of every consumer."""
        consumers = {c for layer in self.layers for c in layer.consumers}
        modules = dict(self.model.named_modules())
        xs: dict[str, list[torch.Tensor]] = {c: [] for c in consumers}
        handles = []
        for name in consumers:
            def hook(mod: nn.Module, inputs: Any, name: str = name) -> None:
                xs[name].append(self._rows(mod, inputs[0].detach(), n_points))
            handles.append(modules[name].register_forward_pre_hook(hook))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for batch in batches:
                    self.model(batch)
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(was_training)
        samples = {}
        for name, parts in xs.items():
            x = torch.cat(parts).double()
            w = modules[name].weight.detach().flatten(1).double()
            samples[name] = (x, x @ w.T)
        return samples

    def _rows(self, module: nn.Module, x: torch.Tensor, n_points: int) -> torch.Tensor:
        if isinstance(module, nn.Linear):
            return x.reshape(-1, x.shape[-1])
        cols = nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        n, dim, positions = cols.shape
        take = min(n_points, positions)
        picks = torch.stack([torch.as_tensor(self.rng.choice(positions, take, replace=False)) for _ in range(n)])
        return torch.gather(cols, 2, picks[:, None, :].expand(n, dim, take)).permute(0, 2, 1).reshape(-1, dim)

    def keep_mask(self, layer: PrunableLayer, modules: Mapping[str, nn.Module], k: int) -> torch.Tensor:
        """Boolean keep vector of the ``k`` output channels with the largest channel score."""
        scores = self.channel_score(layer, modules).detach().double().cpu()
        keep = torch.zeros(scores.numel(), dtype=torch.bool)
        keep[torch.argsort(scores, descending=True, stable=True)[:k]] = True
        return keep

    def masks_for(self, model: nn.Module, ratios: Mapping[int, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        """NNI-format masks of producers, their depthwise convs and BNs at the given preserve ratios."""
        modules = dict(model.named_modules())
        masks: dict[str, dict[str, torch.Tensor | None]] = {}
        for index, layer in enumerate(self.layers):
            k = self.channels(index, ratios.get(index, 1.0))
            if k >= layer.n_channels:
                continue
            keep = self.keep_mask(layer, modules, k)
            for name in [layer.name, *layer.followers]:
                module = modules[name]
                entry: dict[str, torch.Tensor | None] = {}
                for key in ("weight", "bias"):
                    param = getattr(module, key, None)
                    if isinstance(param, nn.Parameter):
                        shape = (-1,) + (1,) * (param.dim() - 1)
                        entry[key] = keep.to(param.dtype).view(shape).expand_as(param).contiguous()
                    else:
                        entry[key] = None
                masks[name] = entry
        return masks

    @torch.no_grad()
    def reconstruct(self, model: nn.Module, masks: Mapping[str, Mapping[str, Any]]) -> None:
        """Least-squares refit of every consumer's weights over its remaining input channels."""
        modules = dict(model.named_modules())
        for layer in self.layers:
            mask = masks.get(layer.name, {}).get("weight")
            if mask is None:
                continue
            dropped = pruned_channels(mask).nonzero().flatten().tolist()
            for consumer, per_channel in layer.consumers.items():
                self._refit(modules[consumer], consumer, [i for c in dropped for i in per_channel[c]])

    def _refit(self, module: nn.Module, name: str, dropped_inputs: list[int]) -> None:
        x, y = self.samples[name]
        weight = module.weight
        per_input = 1 if isinstance(module, nn.Linear) else weight[0, 0].numel()
        drop_cols = {i * per_input + j for i in dropped_inputs for j in range(per_input)}
        keep_cols = torch.tensor([c for c in range(x.shape[1]) if c not in drop_cols], dtype=torch.long)
        flat = torch.zeros(weight.shape[0], x.shape[1], dtype=torch.float64)
        if keep_cols.numel():
            solution = torch.linalg.lstsq(x[:, keep_cols], y, driver="gelsd").solution  # (kept, out)
            flat[:, keep_cols] = solution.T
        weight.copy_(flat.view_as(weight).to(weight))

    @staticmethod
    @torch.no_grad()
    def apply(model: nn.Module, masks: Mapping[str, Mapping[str, Any]]) -> None:
        """Zero the masked parameters of ``model`` in place."""
        modules = dict(model.named_modules())
        for name, entry in masks.items():
            for key, mask in entry.items():
                if mask is not None:
                    getattr(modules[name], key).mul_(mask.to(getattr(modules[name], key)))
