"""Analysis utilities: per-layer pruning sensitivity, channel dependencies, FLOPs/params.

``SensitivityAnalysis`` (NNI 2.0's utility, which Auptimizer re-exported) prunes one layer at a
time at a grid of sparsities with a base criterion and records what the user's ``val_func``
returns, restoring the weights after each layer. Sensitivity-driven pruners use the curves to
decide how much each layer can lose. ``ChannelDependency`` and ``count_flops_params`` are the
existing implementations, re-exported so that ``aup.compression`` offers the three together.

Also here, because the iterative pruners share them: :func:`base_pruner_class` (NNI's short base
algorithm names -> aup's pruner classes) and :func:`progress` (a rich progress bar for long loops).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import logging
import os
import sys
from numbers import Real
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

import aup.compression.catalog as catalog
import aup.compression.registry as registry

from aup.compression.torch.base import count_flops_params
from aup.compression.torch.graph.dependency import ChannelDependency

__all__ = [
    "SensitivityAnalysis", "ChannelDependency", "count_flops_params",
    "BASE_ALGOS", "base_pruner_class", "progress", "as_metric",
]

logger = logging.getLogger(__name__)

# NNI 2.0's base algorithm names (MASKER_DICT / PRUNER_DICT) -> aup compressor names, from the catalog
BASE_ALGOS: dict[str, str] = catalog.base_algos("torch")
# the data-free (weight) criteria, which searches can run on many copies
WEIGHT_ALGOS: tuple[str, ...] = tuple(catalog.base_algos("torch", scores=("weights",)))


def base_pruner_class(name: str, allowed: Sequence[str] = tuple(BASE_ALGOS), *, key: str = "base_algo") -> type:
    """The pruner class of a base algorithm given by NNI's short name (``"l1"``) or aup's (``"l1_filter"``).

    ``allowed`` lists the short names the caller supports; anything else is a one-line ValueError
    naming ``key``.
    """
    short = {v: k for k, v in BASE_ALGOS.items()}.get(name, name) if isinstance(name, str) else name
    if short not in allowed:
        raise ValueError(f"{key}: expected one of {', '.join(repr(a) for a in allowed)}, got {name!r}")
    return registry.load_class("torch", "pruning", BASE_ALGOS[short])


def as_metric(value: Any, what: str) -> float:
    """A user function's result as a float; tuples, tensors of several values etc. are refused."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{what} must return a single number (e.g. the accuracy), got {type(value).__name__}: {value!r}")
    return float(value)


@contextlib.contextmanager
def progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A transient rich progress bar on stderr (only on a terminal); yields ``advance(n=1, note="")``.

    Long searches (sensitivity analysis, ADMM) report through it so that a user sees where a run is,
    and through the module logger, so that a trial's log file says it too.
    """
    console = None
    if enabled and sys.stderr.isatty():
        from rich.console import Console

        console = Console(file=sys.stderr)
    if console is None:
        yield lambda n=1, note="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str = "") -> None:
            bar.update(task, advance=n, note=note)

        yield advance


# ----------------------------------------------------------------------------- sensitivity analysis

EARLY_STOP_MODES = (None, "minimize", "maximize", "dropped", "raised")
_ANALYSED_TYPES = (nn.Conv2d, nn.Conv1d)  # NNI analyses conv layers (the fully connected ones dominate counts)


class SensitivityAnalysis:
    """How much each layer's pruning hurts: ``{layer: {sparsity: val_func result}}``.

    ``SensitivityAnalysis(model, val_func, sparsities=None, prune_type='l1', early_stop_mode=None,
    early_stop_value=None)``. Sparsities default to 0.1 .. 0.9 (step 0.1). ``prune_type`` is the
    criterion (``level``, ``l1``, ``l2``, ``fpgm``). For each analysed layer, alone, the sparsities are
    applied in increasing order (each mask contains the previous one, as the criteria keep what they
    pruned), ``val_func(*val_args, **val_kwargs)`` is recorded, and the model's state is restored
    before the next layer. ``early_stop_mode`` ends a layer's sweep once the metric is below/above
    ``early_stop_value`` (``minimize``/``maximize``) or has dropped/raised by it from the unpruned
    value (``dropped``/``raised``).

    ``already_pruned`` holds, per layer, a sparsity that is already in place (set by an iterative
    pruner): the analysed sparsity ``s`` then means ``s`` of the *remaining* weights.
    """

    def __init__(
        self,
        model: nn.Module,
        val_func: Callable[..., Any],
        sparsities: Sequence[float] | None = None,
        prune_type: str = "l1",
        early_stop_mode: str | None = None,
        early_stop_value: float | None = None,
    ) -> None:
        if not callable(val_func):
            raise ValueError(f"val_func: expected a function returning the validation metric, got {val_func!r}")
        if early_stop_mode not in EARLY_STOP_MODES:
            raise ValueError(f"early_stop_mode: expected one of {EARLY_STOP_MODES}, got {early_stop_mode!r}")
        if early_stop_mode is not None and not isinstance(early_stop_value, Real):
            raise ValueError(f"early_stop_value: expected a number with early_stop_mode={early_stop_mode!r}, "
                             f"got {early_stop_value!r}")
        self.model = model
        self.val_func = val_func
        self.prune_type = prune_type
        self.pruner_class = base_pruner_class(prune_type, WEIGHT_ALGOS, key="prune_type")
        self.sparsities = self._check_sparsities(sparsities)
        self.early_stop_mode = early_stop_mode
        self.early_stop_value = early_stop_value
        self.ori_metric: float | None = None
        self.sensitivities: dict[str, dict[float, float]] = {}
        self.target_layer: dict[str, nn.Module] = {
            name: module for name, module in model.named_modules()
            if isinstance(module, _ANALYSED_TYPES) and self._can_prune(name, module)
        }
        self.already_pruned: dict[str, float] = {name: 0.0 for name in self.target_layer}

    @staticmethod
    def _check_sparsities(sparsities: Sequence[float] | None) -> list[float]:
        if sparsities is None:
            return [round(0.1 * i, 2) for i in range(1, 10)]
        values = list(sparsities)
        if not values or not all(isinstance(s, Real) and not isinstance(s, bool) and 0 < s < 1 for s in values):
            raise ValueError(f"sparsities: expected a non-empty list of numbers in (0, 1), got {sparsities!r}")
        return sorted({round(float(s), 2) for s in values})

    def _can_prune(self, name: str, module: nn.Module) -> bool:
        supported = getattr(self.pruner_class, "supported_op_types", None)
        return supported is None or type(module).__name__ in supported

    @property
    def layers_count(self) -> int:
        return len(self.target_layer)

    def _need_to_stop(self, ori_metric: float, metric: float) -> bool:
        mode, value = self.early_stop_mode, self.early_stop_value
        if mode is None or value is None:
            return False
        return {
            "minimize": metric < value,
            "maximize": metric > value,
            "dropped": metric < ori_metric - value,
            "raised": metric > ori_metric + value,
        }[mode]

    def _layers_to_analyse(self, specified_layers: Sequence[str] | None) -> list[str]:
        if specified_layers is None:
            return list(self.target_layer)
        modules = dict(self.model.named_modules())
        for name in specified_layers:
            module = modules.get(name)
            if module is None or not name:
                raise ValueError(f"specified_layers: no module named {name!r} in the model")
            if name not in self.target_layer:
                if not isinstance(getattr(module, "weight", None), nn.Parameter) or not self._can_prune(name, module):
                    raise ValueError(f"specified_layers: {name!r} ({type(module).__name__}) cannot be pruned "
                                     f"with prune_type={self.prune_type!r}")
                self.target_layer[name] = module
                self.already_pruned.setdefault(name, 0.0)
        return [name for name in specified_layers]

    def analysis(
        self,
        val_args: Sequence[Any] | None = None,
        val_kwargs: Mapping[str, Any] | None = None,
        specified_layers: Sequence[str] | None = None,
    ) -> dict[str, dict[float, float]]:
        """Sweep the sparsities on each layer (all analysed layers, or ``specified_layers``)."""
        val_args, val_kwargs = list(val_args or []), dict(val_kwargs or {})
        names = self._layers_to_analyse(specified_layers)
        saved = copy.deepcopy(self.model.state_dict())
        self.ori_metric = as_metric(self.val_func(*val_args, **val_kwargs), "val_func")
        with progress("sensitivity analysis", len(names) * len(self.sparsities)) as advance:
            for name in names:
                try:
                    self.sensitivities[name] = self._analyse_layer(name, val_args, val_kwargs, advance)
                finally:
                    self.model.load_state_dict(saved)
        return self.sensitivities

    def _analyse_layer(self, name: str, val_args: list, val_kwargs: dict,
                       advance: Callable[..., None]) -> dict[float, float]:
        pruner = self.pruner_class(self.model, [{"sparsity": 0.5, "op_names": [name]}])
        curve: dict[float, float] = {}
        try:
            for index, sparsity in enumerate(self.sparsities):
                done = self.already_pruned.get(name, 0.0)
                pruner.compute_masks({name: done + (1.0 - done) * sparsity})
                metric = as_metric(self.val_func(*val_args, **val_kwargs), "val_func")
                curve[sparsity] = metric
                logger.info("sensitivity: layer %s sparsity %.2f metric %.4f", name, sparsity, metric)
                advance(note=f"{name} @ {sparsity:.2f}: {metric:.4f}")
                if self._need_to_stop(self.ori_metric, metric):
                    advance(len(self.sparsities) - index - 1)
                    break
        finally:
            pruner.masks.detach()
        return curve

    def export(self, filepath: str | os.PathLike[str]) -> None:
        """CSV ``layername,<sparsities...>``, one row per analysed layer (early-stopped rows are shorter)."""
        with open(filepath, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["layername", *[str(s) for s in self.sparsities]])
            for name, curve in self.sensitivities.items():
                writer.writerow([name, *[curve[s] for s in sorted(curve)]])

    @staticmethod
    def load(filepath: str | os.PathLike[str]) -> dict[str, dict[float, float]]:
        """Read curves written by :meth:`export`."""
        with open(filepath, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows or not rows[0] or rows[0][0] != "layername":
            raise ValueError(f"{filepath}: not a sensitivity CSV (expected a header 'layername,<sparsities>')")
        sparsities = [float(s) for s in rows[0][1:]]
        return {row[0]: {s: float(v) for s, v in zip(sparsities, row[1:])} for row in rows[1:] if row}

    def update_already_pruned(self, layername: str, ratio: float) -> None:
        """Record that ``layername`` is already pruned to ``ratio`` (iterative pruners)."""
        self.already_pruned[layername] = float(ratio)

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load new weights into the analysed model (NNI's API; the pruner calls it between rounds)."""
        self.model.load_state_dict(copy.deepcopy(dict(state_dict)))


def is_monotone(curve: Mapping[float, float], decreasing: bool = True, tol: float = 0.0) -> bool:
    """Whether a sensitivity curve never rises (``decreasing``) / never falls, within ``tol``."""
    values = [curve[s] for s in sorted(curve)]
    pairs = zip(values, values[1:])
    return all(b <= a + tol for a, b in pairs) if decreasing else all(b >= a - tol for a, b in pairs)

