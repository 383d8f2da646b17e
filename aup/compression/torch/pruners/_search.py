"""Shared machinery of the search pruners (simulated annealing, NetAdapt, AutoCompress, AMC).

A search pruner explores per-layer sparsities on *copies* of the model and finally applies the best
ones with a base criterion (``base_algo``: l1 / l2 / fpgm filters or level elements) to the user's
model, or, for simulated annealing as in NNI 2.0, to a copy it returns (:meth:`SearchPruner.rebind`).
This module holds what they share:

- :class:`SearchPruner`: the ``Pruner`` subclass whose final masks come from the base criterion;
- :func:`prune_copy`: a masked deep copy at given sparsities (candidates to evaluate);
- pruning *units*: filters for structured criteria, elements for level, so that a layer sparsity
  is always ``k / n_units`` and rounding never silently misses the target;
- BatchNorm coupling: a BN channel right after a pruned filter is masked too. Without it the BN
  shift keeps a constant non-zero channel alive, the evaluated (masked) model is not the model
  that ships, and the physical shrink must keep the channel (``shrink.py``'s exactness rule);
- progress lines and the working directory (never the current directory unless asked).
"""
from __future__ import annotations

import atexit
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

import aup.compression.catalog as catalog
import aup.compression.registry as registry

from aup.compression.torch.deploy.settings import CalibrationRecorder
from aup.compression.torch.masking import MaskStore
from aup.compression.torch.pruners.base import Pruner
from aup.compression.torch.pruners.schedule import CriterionSchedule

logger = logging.getLogger("aup.compression.search")


def _weight_criteria() -> dict[str, type[Pruner]]:
    """The catalog's data-free criteria by NNI short name, filter criteria first (NNI's order)."""
    found = [e for e in catalog.entries("torch", "pruning") if e.nni_alias and e.scores == "weights"]
    found.sort(key=lambda e: not e.structured)
    return {e.nni_alias: registry.import_entry(e) for e in found}  # type: ignore[misc]


BASE_ALGOS: dict[str, type[Pruner]] = _weight_criteria()
OPTIMIZE_MODES = ("maximize", "minimize")

__all__ = [
    "BASE_ALGOS", "SearchPruner", "prune_copy",
    "check_choice", "check_number", "progress", "overall_target", "is_better",
]


# ----------------------------------------------------------------------------- argument checks
def check_choice(owner: str, key: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """One-line ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}: {key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_number(owner: str, key: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
    """One-line ValueError when ``value`` is not a number in the stated interval."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        kind = "an integer" if integer else "a number"
        span = f" in {lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{hi}"
        raise ValueError(f"{owner}: {key} must be {kind}{span}, got {value!r}")
    return int(value) if integer else value


def check_callable(owner: str, key: str, value: Any) -> Callable:
    if not callable(value):
        raise ValueError(f"{owner}: {key} must be a callable, got {type(value).__name__}")
    return value


def overall_target(owner: str, config_list: list[dict[str, Any]]) -> float:
    """NNI 2.0: the overall target sparsity of a search pruner is ``config_list[0]["sparsity"]``."""
    if not config_list or "sparsity" not in config_list[0]:
        raise ValueError(f"{owner}: config_list[0].sparsity: required (the overall target sparsity in (0, 1))")
    return float(check_number(owner, "config_list[0].sparsity", config_list[0]["sparsity"], 0, 1, True, True))


def is_better(a: float, b: float, optimize_mode: str) -> bool:
    """Whether score ``a`` beats ``b`` under ``optimize_mode``."""
    return a > b if optimize_mode == "maximize" else a < b


# ----------------------------------------------------------------------------- progress / files
def progress(message: str, *args: Any) -> None:
    """One progress line: through ``logging``, and on a terminal also when logging is not set up."""
    logger.info(message, *args)
    if not logger.isEnabledFor(logging.INFO) and sys.stderr.isatty():
        from rich.console import Console

        Console(stderr=True).print(message % args if args else message, highlight=False)


def working_dir(path: str | os.PathLike | None, algo: str) -> str:
    """The directory for working files: the user's (kept), else a fresh temporary one (never the CWD)
    that is scratch: removed when the process ends, so trials leave no ``aup-<algo>-*`` folders behind.
    Pass ``experiment_data_dir`` (``output_dir`` for AMC; NNI's names) to keep the search's files."""
    if path is None:
        path = tempfile.mkdtemp(prefix=f"aup-{algo}-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        progress("%s: working files go to %s (scratch, removed at exit; pass experiment_data_dir / output_dir to keep them)", algo, path)
    os.makedirs(path, exist_ok=True)
    return os.fspath(path)


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=float)


# ----------------------------------------------------------------------------- units and copies
def is_structured(base_algo: str) -> bool:
    return catalog.is_structured("torch", "pruning", catalog.base_algos("torch")[base_algo])


def layer_units(module: nn.Module, base_algo: str) -> tuple[int, int]:
    """``(n_units, weights_per_unit)``: filters of a conv for structured criteria, else elements."""
    numel = module.weight.numel()
    if is_structured(base_algo):
        n = module.weight.shape[0]
        return n, numel // n
    return numel, 1


def units_to_sparsity(k: int, n: int) -> float:
    """A sparsity whose ``int(s * n)`` is exactly ``k`` (guards against float round-down)."""
    return 0.0 if k <= 0 else min((k + 1e-6) / n, 1.0)


def prune_copy(model: nn.Module, base_algo: str, sparsities: Mapping[str, float],
               dummy_input: Any = None,
               initial_masks: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[nn.Module, Pruner]:
    """A deep copy of ``model`` pruned at ``sparsities`` with the base criterion (masks attached).

    ``initial_masks`` (from an earlier round) stay pruned: the criterion only adds to them.
    """
    clone = copy.deepcopy(model)
    pruner = make_base_pruner(clone, base_algo, list(sparsities), dummy_input)
    mask_with(pruner, sparsities, initial_masks)
    return clone, pruner


def mask_with(pruner: Pruner, sparsities: Mapping[str, float],
              initial_masks: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Compute ``pruner``'s masks at ``sparsities`` on top of ``initial_masks``.

    Filter criteria also mask the BatchNorm after each pruned conv (``FilterPruner.compute_masks``),
    so the evaluated candidate is exactly the model that ``apply_speedup`` ships."""
    pruner._attach_masks()
    for name, entry in (initial_masks or {}).items():
        if name in pruner.layers:
            pruner.masks.set(name, weight=entry.get("weight"), bias=entry.get("bias"))
    active = {name: s for name, s in sparsities.items() if s > 0}
    pruner.compute_masks(active)


def make_base_pruner(model: nn.Module, base_algo: str, layer_names: list[str], dummy_input: Any = None) -> Pruner:
    """The base criterion over ``layer_names`` (its config sparsity is a placeholder)."""
    config = [{"sparsity": 0.5, "op_names": list(layer_names)}]
    cls = BASE_ALGOS[base_algo]
    if not is_structured(base_algo):
        return cls(model, config)
    return cls(model, config, dummy_input=dummy_input)


def weighted_sparsity(sparsities: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """Overall sparsity of several layers: pruned weights over all their weights."""
    total = sum(counts.values())
    return sum(sparsities.get(n, 0.0) * c for n, c in counts.items()) / total if total else 0.0


# ----------------------------------------------------------------------------- base class
class SearchPruner(CriterionSchedule):
    """A pruner that searches per-layer sparsities, then masks the model with ``base_algo``.

    Subclasses implement :meth:`search` returning ``{layer: sparsity}``; ``compress()`` runs it and
    applies the result to the user's model through the criterion (``self.base``, built on the selected
    layers once they are known). Afterwards the usual ``apply_speedup`` / ``export_model`` work
    (structured base criteria shrink physically).
    """

    base_algo_choices: ClassVar[tuple[str, ...]] = tuple(BASE_ALGOS)

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], base_algo: str = "l1",
                 optimize_mode: str = "maximize", dummy_input: Any = None) -> None:
        self.base_algo = check_choice(self.compressor_name, "base_algo", base_algo, self.base_algo_choices)
        self.optimize_mode = check_choice(self.compressor_name, "optimize_mode", optimize_mode, OPTIMIZE_MODES)
        self.target_sparsity = overall_target(self.compressor_name, config_list)
        super().__init__(model, config_list, dummy_input=dummy_input)
        self.attach_criterion(make_base_pruner(model, self.base_algo, list(self.layers), dummy_input))
        self.weight_counts = {name: layer.module.weight.numel() for name, layer in self.layers.items()}
        self.best_sparsities: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []

    def check_module(self, name: str, module: nn.Module) -> str | None:
        """The base criterion's layer types decide which layers can be pruned (filters: Conv2d only)."""
        base = BASE_ALGOS[self.base_algo]
        types = base.supported_op_types
        if types is not None and type(module).__name__ not in types:
            return f"base_algo {self.base_algo!r} prunes only {', '.join(types)} layers"
        if not isinstance(getattr(module, "weight", None), nn.Parameter):
            return "it has no weight parameter to prune"
        return None

    def layer_sparsities(self) -> dict[str, float]:
        return dict(self.best_sparsities)

    def search(self) -> dict[str, float]:
        raise NotImplementedError

    def apply_sparsities(self, sparsities: Mapping[str, float],
                         initial_masks: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Mask the user's model at ``sparsities`` with the criterion, on top of ``initial_masks``.

        A second call replaces the masks (weights already zeroed stay zero and so rank lowest)."""
        self._attach_masks()
        self.masks.reset()
        for name, entry in (initial_masks or {}).items():
            if name in self.layers:
                self.masks.set(name, weight=entry.get("weight"), bias=entry.get("bias"))
        self.prune_to({name: s for name, s in sparsities.items() if s > 0})
        self.masks_calculated = True

    def rebind(self, model: nn.Module) -> None:
        """Work on ``model`` (a copy of the bound model) from now on: layers, criterion and masks move to it."""
        modules = dict(model.named_modules())
        self.masks.detach()
        self.model = model
        self.layers = {name: dataclasses.replace(layer, module=modules[name]) for name, layer in self.layers.items()}
        self.masks = MaskStore()
        self._coupled_batchnorms = None
        self._input_recorder = None
        seen = self._recorder
        self._recorder = CalibrationRecorder(model)  # inputs seen so far stay the calibration data
        self._recorder.first, self._recorder.batches, self._recorder.seen = seen.first, seen.batches, seen.seen
        self.attach_criterion(make_base_pruner(model, self.base_algo, list(self.layers), self.dummy_input))

    def compress(self) -> nn.Module:
        """Run the search, then prune the model with the best per-layer sparsities; returns it."""
        if self.masks_calculated:
            return self.model
        self.best_sparsities = self.search()
        self.apply_sparsities(self.best_sparsities)
        progress("%s: done, sparsity %.3f over %d layers", self.compressor_name, self.sparsity(), len(self.layers))
        return self.model

    def compute_masks(self, sparsities: dict[str, float] | None = None) -> dict[str, Any]:
        """Re-mask at given sparsities (default: the best found) with the base criterion."""
        self.apply_sparsities(self.best_sparsities if sparsities is None else sparsities)
        return self.get_masks()


def metropolis_accept(delta: float, temperature: float, rng: Any) -> bool:
    """Accept a candidate worse by ``delta`` (>= 0) with probability ``exp(-delta / T)``."""
    if delta <= 0:
        return True
    return bool(rng.random() < math.exp(-delta / temperature))
