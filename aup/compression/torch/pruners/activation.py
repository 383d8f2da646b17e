"""``activation_apoz_rank_filter`` / ``activation_mean_rank_filter``: filters ranked by their outputs.

Statistics come from the user's own forward passes (NNI 2.0's one-shot activation pruners): a forward
hook on each configured conv applies ``activation`` (relu or relu6) to the conv's output and
accumulates, per output channel, the count of zeros (APoZ, Network Trimming, Hu et al. 2016) or the
sum of values (mean activation, Molchanov et al. 2017) over the first ``statistics_batch_num``
batches. Once every layer has seen that many batches, the masks are computed at the next optimizer
step (when the ``optimizer`` was given), ``step()`` or ``compress()``; until then the model is dense.
APoZ prunes the channels with the highest average percentage of zeros, mean activation the channels
with the smallest mean. Running sums give the same numbers as NNI's concatenate-then-average.
"""
from __future__ import annotations

import abc
import contextlib
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from aup.compression.torch.pruners.structured import FilterPruner

__all__ = ["ActivationAPoZRankFilterPruner", "ActivationMeanRankFilterPruner"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "relu6": F.relu6}


class _Stats:
    """Per-channel running sums of one layer."""

    def __init__(self) -> None:
        self.batches = 0
        self.total: torch.Tensor | None = None
        self.count = 0


class ActivationFilterPruner(FilterPruner):
    """Shared statistics collection; subclasses turn the sums into a per-filter importance."""

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        activation: str = "relu",
        statistics_batch_num: int = 1,
        dependency_aware: bool = False,
        dummy_input: Any = None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"{self.compressor_name}: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if isinstance(statistics_batch_num, bool) or not isinstance(statistics_batch_num, int) or statistics_batch_num < 1:
            raise ValueError(f"{self.compressor_name}: statistics_batch_num must be an integer >= 1, got {statistics_batch_num!r}")
        super().__init__(model, config_list, optimizer=optimizer, dependency_aware=dependency_aware,
                         dummy_input=dummy_input)
        self.activation = activation
        self.statistics_batch_num = statistics_batch_num
        self.stats: dict[str, _Stats] = {name: _Stats() for name in self.layers}
        self._stat_handles: list[Any] = []
        self._statistics_off = False

    # ------------------------------------------------------------------ statistics
    @abc.abstractmethod
    def channel_statistic(self, activated: torch.Tensor) -> torch.Tensor:
        """Per-channel sum over batch and positions of what the criterion averages
        (contracts.ActivationStatistic)."""

    def _attach_training_hooks(self) -> None:
        if self._stat_handles or self.masks_calculated:
            return
        for name, layer in self.layers.items():
            self._stat_handles.append(layer.module.register_forward_hook(self._collector(name)))

    def _collector(self, name: str) -> Callable[..., None]:
        def collect(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            stats = self.stats[name]
            if self._statistics_off or stats.batches >= self.statistics_batch_num:
                return
            with torch.no_grad():
                activated = ACTIVATIONS[self.activation](output.detach())
                channel_sum = self.channel_statistic(activated).double().cpu()
            stats.total = channel_sum if stats.total is None else stats.total + channel_sum
            stats.count += activated.numel() // activated.shape[1]
            stats.batches += 1
        return collect

    @contextlib.contextmanager
    def statistics_paused(self) -> Iterator[None]:
        previous, self._statistics_off = self._statistics_off, True
        try:
            yield
        finally:
            self._statistics_off = previous

    def statistics_ready(self) -> bool:
        return all(s.batches >= self.statistics_batch_num for s in self.stats.values())

    def reset_statistics(self) -> None:
        """Forget the statistics and collect again (for schedules that re-rank every round)."""
        self.stats = {name: _Stats() for name in self.layers}
        self.masks_calculated = False
        self._attach_training_hooks()

    def compute_masks(self, sparsities: dict[str, float] | None = None) -> dict:
        if not self.statistics_ready():
            missing = {n: s.batches for n, s in self.stats.items() if s.batches < self.statistics_batch_num}
            raise ValueError(f"{self.compressor_name}: statistics incomplete (batches seen per layer: {missing}, "
                             f"need {self.statistics_batch_num}); run training batches first")
        masks = super().compute_masks(sparsities)
        for handle in self._stat_handles:
            handle.remove()
        self._stat_handles.clear()
        return masks

    def channel_mean(self, name: str) -> torch.Tensor:
        stats = self.stats[name]
        assert stats.total is not None
        return (stats.total / max(stats.count, 1)).float()


class ActivationAPoZRankFilterPruner(ActivationFilterPruner):
    """Prune the filters whose activated outputs are most often zero (highest APoZ)."""

    compressor_name: ClassVar[str] = "activation_apoz_rank_filter"

    def channel_statistic(self, activated: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(activated.dim()) if d != 1]
        return (activated == 0).sum(dim=dims)

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        """``1 - APoZ`` (NNI's score): low when a channel is mostly zero."""
        return 1.0 - self.channel_mean(name)


class ActivationMeanRankFilterPruner(ActivationFilterPruner):
    """Prune the filters with the smallest mean activated output."""

    compressor_name: ClassVar[str] = "activation_mean_rank_filter"

    def channel_statistic(self, activated: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(activated.dim()) if d != 1]
        return activated.sum(dim=dims)

    def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
        return self.channel_mean(name)
