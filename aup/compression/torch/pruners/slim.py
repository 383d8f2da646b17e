"""``slim``: Network Slimming (Liu et al., ICCV 2017) on BatchNorm scales.

All configured BatchNorm2d layers share ONE threshold: their ``|gamma|`` are pooled and the
``int(sparsity * total)`` smallest are pruned, on the BN weight and bias (NNI 2.0's rule). NNI pruned
every channel with ``|gamma| <= threshold``, so ties at the threshold went too; on a freshly
initialised network (all gammas 1) that pruned *everything*. We prune exactly that many channels
(ties broken by position), which gives NNI's masks whenever there are no ties at the threshold.
Per-layer sparsity varies. NNI 2.0 refused to remove every channel of a layer ("Donnot support
removing the whole group filter"); here such a layer keeps its strongest channel, with a warning.
With several entries the sparsity must be the same (schema).

The paper's method trains with an L1 penalty on gamma first, so that unimportant channels' scales
go to zero before the threshold is taken. With ``scale > 0`` and ``sparsifying_training_batches > 0``
(NNI 2.3+'s knobs) the pruner adds the L1 subgradient ``scale * sign(gamma)`` to the BN weight
gradients during the first ``sparsifying_training_batches`` steps of the user's ``optimizer`` and
computes the masks right after the last of them; otherwise (NNI 2.0) masks are computed at once.

Guidance. Slim assumes the gammas of all configured layers are comparable, which the paper obtains
by training with the L1 penalty first; on an ordinarily trained network they are not, and the
global threshold then takes its channels from whichever layer has the smaller scale (a warning
says so when a layer loses most of its channels). Train with ``scale`` over the training epochs
(``sparsifying_training_batches`` = all their batches), or use a per-layer criterion (``l1_filter``,
``fpgm``) with its own sparsity per layer. Measured on the digits CNN at 50% with one fine-tune
epoch (``benchmarks/slim_scale_digits.py``, 3 seeds, Adam): without sparsity training a median 6.2
points below dense; ``scale=0.03`` for the 4 training epochs 0.2 points below (0.01 was too weak).

The conv that feeds a pruned BN channel gets the same filter masked: the BN output is zero there
anyway, so the outputs do not change, and ``apply_speedup`` can remove the channel physically.
"""
from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from aup.compression.torch.pruners.base import Pruner

__all__ = ["SlimPruner", "MOST_OF_A_LAYER"]

# A layer losing more than this share of its channels to the one global threshold gets a warning:
# on the ordinarily trained digits CNN the threshold took every channel of bn1, whose gammas sit just
# below bn2's, and the model fell to chance until fine-tuned (benchmarks/slim_scale_digits.py).
MOST_OF_A_LAYER = 0.75


class SlimPruner(Pruner):
    """``SlimPruner(model, config_list, optimizer=None)``: BatchNorm2d channels by one global |gamma| threshold."""

    compressor_name: ClassVar[str] = "slim"
    supported_op_types: ClassVar[tuple[str, ...] | None] = ("BatchNorm2d",)

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, *, scale: float = 0.0,
                 sparsifying_training_batches: int = 0) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise ValueError(f"slim: scale must be a number >= 0 (the L1 penalty on gamma), got {scale!r}")
        batches = sparsifying_training_batches
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 0:
            raise ValueError(f"slim: sparsifying_training_batches must be an integer >= 0, got {batches!r}")
        if scale > 0 and batches > 0 and optimizer is None:
            raise ValueError("slim: sparsity training (scale, sparsifying_training_batches) needs optimizer=<your optimizer>")
        super().__init__(model, config_list, optimizer=optimizer)
        self.scale = float(scale)
        self.sparsifying_training_batches = batches if scale > 0 else 0
        self.batches = 0

    # ------------------------------------------------------------------ sparsity training (L1 on gamma)
    def statistics_ready(self) -> bool:
        return self.batches >= self.sparsifying_training_batches

    def before_optimizer_step(self) -> None:
        """Add ``scale * sign(gamma)`` to the BN weight gradients while sparsity training lasts."""
        if self.statistics_ready():
            return
        with torch.no_grad():
            for layer in self.layers.values():
                weight = layer.module.weight
                if weight.grad is not None:
                    weight.grad.add_(self.scale * torch.sign(weight))
        self.batches += 1

    def _gammas(self, name: str) -> torch.Tensor:
        module = self.layers[name].module
        gamma = module.weight.detach().abs().float().cpu()
        current = self.masks.masks.get(name, {}).get("weight")
        return gamma * current.float().cpu() if current is not None else gamma

    def global_pruned(self, sparsities: dict[str, float]) -> dict[str, torch.Tensor]:
        """Per layer, which channels fall in the globally smallest ``int(sparsity * total)`` |gamma|.

        The sparsity is the channel-weighted mean of ``sparsities`` (the config's shared value).
        """
        gammas = {name: self._gammas(name) for name in sparsities}
        sizes = [g.numel() for g in gammas.values()]
        pooled = torch.cat(list(gammas.values())) if gammas else torch.zeros(0)
        sparsity = sum(s * n for s, n in zip(sparsities.values(), sizes)) / max(sum(sizes), 1)
        k = int(pooled.numel() * sparsity)
        pruned = torch.zeros(pooled.numel(), dtype=torch.bool)
        pruned[torch.argsort(pooled, stable=True)[:k]] = True
        per_layer = dict(zip(gammas, (p.clone() for p in torch.split(pruned, sizes))))
        for name, layer_pruned in per_layer.items():
            if layer_pruned.numel() and bool(layer_pruned.all()):
                layer_pruned[int(torch.argmax(gammas[name]))] = False
                warnings.warn(f"slim: the global threshold would remove every channel of {name}; it keeps its "
                              "strongest channel (train with an L1 penalty on gamma first, see scale=, or exclude it)",
                              stacklevel=3)
            elif len(per_layer) > 1 and int((~layer_pruned).sum()) > 1 and \
                    float(layer_pruned.float().mean()) > MOST_OF_A_LAYER:
                warnings.warn(f"slim: the global threshold removes {int(layer_pruned.sum())} of {layer_pruned.numel()} "
                              f"channels of {name}: its |gamma| are small next to the other layers', which without "
                              "sparsity training usually means a different scale, not unimportance (train with an "
                              "L1 penalty on gamma first, see scale=, or exclude the layer)", stacklevel=3)
        return per_layer

    def calc_mask(self, name: str, module: nn.Module, sparsity: float, *, pruned: torch.Tensor | None = None,
                  **context: Any) -> dict[str, torch.Tensor | None]:
        if pruned is None:
            raise ValueError("slim prunes all its layers together; use compute_masks()")
        keep = (~pruned).to(module.weight)
        return {"weight": keep, "bias": keep.clone() if module.bias is not None else None}

    def calc_masks(self, sparsities: dict[str, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        pruned = self.global_pruned(sparsities)
        return {name: self.calc_mask(name, self.layers[name].module, s, pruned=pruned[name])
                for name, s in sparsities.items()}

    def compute_masks(self, sparsities: dict[str, float] | None = None) -> dict:
        """BN masks by the global threshold, then the same filters masked in the conv feeding each BN."""
        super().compute_masks(sparsities)
        modules = dict(self.model.named_modules())
        for conv_name, bn_name in self.coupled_batchnorms().items():
            if bn_name not in self.layers:
                continue
            conv = modules[conv_name]
            keep = self.masks.masks[bn_name]["weight"].detach().to(conv.weight)
            self.masks.attach(conv_name, conv)
            weight_mask = keep[(...,) + (None,) * (conv.weight.dim() - 1)].expand_as(conv.weight).contiguous()
            self.masks.set(conv_name, weight=weight_mask, bias=keep.clone() if conv.bias is not None else None)
        return self.get_masks()
