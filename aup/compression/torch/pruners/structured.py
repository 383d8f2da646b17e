"""``FilterPruner``: structured pruning of whole conv output filters, by a per-filter score.

Subclasses give :meth:`FilterPruner.filter_importance` (higher = keep); this class turns it into
masks with NNI 2.0's rules: prune the ``int(sparsity * n_filters)`` filters with the lowest score
(none when the layer has fewer than 2 filters), mask the conv bias of pruned filters too, and keep
filters already pruned by an earlier round pruned first (so schedules only grow the pruned set).
Criteria whose NNI masker is a threshold (``prunes_ties``: l1, l2) prune, as NNI does, every filter
whose score equals the k-th lowest (``score <= threshold``), so tied scores can prune more than k;
``prune_exactly=True`` prunes exactly k (lowest index first among ties). The other criteria
(fpgm, taylorfo, apoz, mean_activation) rank with a stable sort, exactly k, as NNI's argsort did.
With ``dependency_aware=True`` convs whose channels are tied (see :mod:`.dependency`) first lose a
shared channel set chosen by their summed scores at the set's smallest sparsity, then each prunes
the rest of its own target alone. As in NNI, a tied set shares channels only when every conv of the
set is pruned by this pruner: with one member excluded the channels could not be removed anyway,
so the others prune on their own. Grouped convolutions lose the same number of filters per group.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.base import Pruner
from aup.compression.torch.graph.dependency import conv_dependency_sets
from aup.compression.torch.masking import filter_mask, pruned_channels

__all__ = ["FilterPruner"]


class FilterPruner(Pruner):
    """Base of l1/l2/fpgm/apoz/mean/taylor: a filter score plus NNI's structured mask rules."""

    supported_op_types: ClassVar[tuple[str, ...] | None] = ("Conv2d",)
    prunes_ties: ClassVar[bool] = False  # NNI's threshold maskers (l1, l2) prune every filter tied at it
    fresh_masks: ClassVar[bool] = True  # calc_mask builds new mask tensors

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        dependency_aware: bool = False,
        dummy_input: Any = None,
        *,
        prune_exactly: bool = False,
    ) -> None:
        if dependency_aware and dummy_input is None:
            raise ValueError(f"{self.compressor_name}: dependency_aware=True needs dummy_input "
                             "(an example input batch to trace the model with)")
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)
        self.dependency_aware = bool(dependency_aware)
        self.ties_pruned = self.prunes_ties and not prune_exactly
        self._dependency_sets: list[list[str]] | None = None
        self._kept_filters: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name: (mask built, keep vector)

    # ------------------------------------------------------------------ criterion
    @abc.abstractmethod
    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        """One score per output filter; the lowest-scored filters are pruned (contracts.FilterCriterion)."""

    def masked_weight(self, name: str, module: nn.Module) -> torch.Tensor:
        """The layer's weight with its current mask applied (detached; read-only for the criteria)."""
        weight = module.weight.detach()
        mask = self.masks.masks.get(name, {}).get("weight")
        if mask is None or self.masks.is_ones(name):
            return weight  # criteria never write into it
        return weight * mask.to(weight)

    def _pruned_filters(self, name: str, module: nn.Module) -> torch.Tensor:
        mask = self.masks.masks.get(name, {}).get("weight")
        if mask is None or self.masks.is_ones(name):
            return torch.zeros(module.weight.shape[0], dtype=torch.bool)
        built = self._kept_filters.get(name)
        if built is not None and built[0] is mask:  # the stored mask is the one calc_mask built
            return ~built[1]
        return pruned_channels(mask.detach()).cpu()

    # ------------------------------------------------------------------ masks
    def update_masks(self, sparsities: dict[str, float] | None = None) -> None:
        """Filter masks, then the same channels masked in the BatchNorm right after each conv."""
        super().update_masks(sparsities)
        self._mask_coupled_batchnorms()

    def _mask_coupled_batchnorms(self) -> None:
        modules = dict(self.model.named_modules())
        for conv_name, bn_name in self.coupled_batchnorms().items():
            if conv_name not in self.layers:
                continue
            bn = modules[bn_name]
            if not isinstance(getattr(bn, "weight", None), nn.Parameter):
                continue  # affine=False: nothing to mask; the shrink report names it
            keep = (~self._pruned_filters(conv_name, self.layers[conv_name].module)).to(bn.weight)
            self.masks.attach(bn_name, bn)
            self.masks.set(bn_name, weight=keep, bias=keep if bn.bias is not None else None)

    def calc_mask(self, name: str, module: nn.Module, sparsity: float, *,
                  forced: torch.Tensor | None = None, scores: torch.Tensor | None = None,
                  **context: Any) -> dict[str, torch.Tensor | None]:
        """Filter masks for one conv; ``forced`` marks filters that must go first (dependency sets)."""
        n_filters = module.weight.shape[0]
        num_prune = int(n_filters * sparsity)
        current = self.masks.masks.get(name, {})
        if n_filters < 2 or num_prune < 1:
            return {"weight": current.get("weight"), "bias": current.get("bias")}
        if scores is None:
            scores = self.filter_importance(name, module)
        ranking = scores.detach().float().cpu().clone()
        first = self._pruned_filters(name, module)
        if forced is not None:
            first = first | forced.cpu()
        ranking[first] = -float("inf")
        keep = self._select_keep(ranking, num_prune, self._prune_groups(module), self.ties_pruned)
        weight_mask = filter_mask(keep, module.weight)
        self._kept_filters[name] = (weight_mask, keep)
        bias_mask = keep.to(module.bias) if getattr(module, "bias", None) is not None else None
        return {"weight": weight_mask, "bias": bias_mask}

    @staticmethod
    def _prune_groups(module: nn.Module) -> int:
        """Grouped (not depthwise) convs prune evenly per group so their shape stays valid."""
        groups = getattr(module, "groups", 1)
        return groups if 1 < groups < module.weight.shape[0] else 1

    @staticmethod
    def _select_keep(ranking: torch.Tensor, num_prune: int, groups: int, ties: bool = False) -> torch.Tensor:
        """Boolean keep-vector pruning the ``num_prune`` lowest-ranked filters (evenly per group);
        with ``ties`` every filter scoring at most the ``num_prune``-th lowest goes (NNI's threshold)."""
        keep = torch.ones_like(ranking, dtype=torch.bool)
        size = ranking.numel() // groups
        per_group = num_prune // groups if groups > 1 else num_prune
        for g in range(groups):
            part = ranking[g * size:(g + 1) * size]
            order = torch.argsort(part, stable=True)
            if ties and per_group > 0:
                threshold = part[order[per_group - 1]]
                keep[g * size:(g + 1) * size] &= part > threshold
            else:
                keep[g * size + order[:per_group]] = False
        return keep

    def calc_masks(self, sparsities: dict[str, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        if not self.dependency_aware:
            return super().calc_masks(sparsities)
        masks: dict[str, dict[str, torch.Tensor | None]] = {}
        for members in self.dependency_sets():
            members = [m for m in members if m in sparsities]
            if not members:
                continue
            scores = {n: self.filter_importance(n, self.layers[n].module) for n in members} if len(members) > 1 else {}
            forced = self._shared_pruned(members, sparsities, scores) if len(members) > 1 else None
            for name in members:
                masks[name] = self.calc_mask(name, self.layers[name].module, sparsities[name], forced=forced,
                                             scores=scores.get(name))
        return masks

    def dependency_sets(self) -> list[list[str]]:
        """Tied conv sets among this pruner's layers (traced once, with ``dummy_input``).

        A set of the model with a member this pruner does not prune is split into singletons (NNI 2.0:
        the shared channels could not be removed, so nothing is shared)."""
        if self._dependency_sets is None:
            with self._paused():
                every = conv_dependency_sets(self.model, self.dummy_input,
                                             graph=self.graph.get(self.model, self.dummy_input))
            sets: list[list[str]] = []
            covered: set[str] = set()
            for members in every:
                mine = [m for m in members if m in self.layers]
                covered.update(mine)
                sets += [mine] if len(mine) == len(members) else [[m] for m in mine]
            sets += [[name] for name in self.layers if name not in covered]
            self._dependency_sets = [s for s in sets if s]
        return self._dependency_sets

    def _shared_pruned(self, members: list[str], sparsities: dict[str, float],
                       scores: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """Channels the whole set loses: lowest summed scores, at the set's smallest sparsity."""
        modules = [self.layers[m].module for m in members]
        n_filters = modules[0].weight.shape[0]
        if any(m.weight.shape[0] != n_filters for m in modules):
            return None
        total = torch.zeros(n_filters)
        for name, module in zip(members, modules):
            score = (scores or {}).get(name)
            total += (score if score is not None else self.filter_importance(name, module)).detach().float().cpu()
        num_prune = int(n_filters * min(sparsities[m] for m in members))
        if num_prune < 1:
            return None
        groups = max(self._prune_groups(m) for m in modules)
        return ~self._select_keep(total, num_prune, groups, self.ties_pruned)
