"""``Pruner``: a criterion plus the shared mask machinery.

A pruner says which elements, filters or channels matter least (:meth:`Pruner.calc_mask`); this
base selects the layers from ``config_list``, attaches masks without renaming anything
(:mod:`..masking`), keeps them enforced during training, and implements speedup and export.

Schedules and searches (AGP, lottery ticket, simulated annealing, NetAdapt, ...) reuse a criterion by
calling :meth:`Pruner.compute_masks` with their own per-layer sparsities, e.g.
``L1FilterPruner(model, cfg).compute_masks({"conv1": 0.3, "conv2": 0.6})``.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from aup import metrics as M
from aup.compression.torch.base import Compressor, ignore_export_arguments
from aup.compression.torch.config_list import LayerConfig, validate_against_model
from aup.compression.torch.deploy.settings import clean_copy
from aup.compression.torch.masking import Masks, MaskStore
from aup.compression.torch.graph.dependency import SharedGraph, following_batchnorms

__all__ = ["Pruner"]


class Pruner(Compressor):
    """Base of every pruner.

    Subclasses set ``compressor_name``, optionally ``supported_op_types`` (layer class names it can
    prune; None: any module with a ``weight`` Parameter) and implement :meth:`calc_mask`.
    Statistics-driven pruners override :meth:`statistics_ready` and the step hooks.
    """

    compression_type: ClassVar[str] = "pruning"
    supported_op_types: ClassVar[tuple[str, ...] | None] = None
    # calc_mask returns new tensors (or the stored ones) that nothing else keeps: stored without a copy
    fresh_masks: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        dummy_input: Any = None,
    ) -> None:
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)
        selected = validate_against_model(model, config_list, compressor=self.compressor_name, check=self.check_module)
        self.layers: dict[str, LayerConfig] = {layer.name: layer for layer in selected}
        # Weights per layer before any pruning: achieved sparsity stays honest after apply_speedup
        # removed the pruned channels physically.
        self.dense_weight_numel = {name: layer.module.weight.numel() for name, layer in self.layers.items()}
        self.masks = MaskStore()
        self._coupled_batchnorms: dict[str, str] | None = None
        self.masks_calculated = False
        self.speedup_masks: Masks | None = None
        self.shrink_report: Any = None
        self.graph = SharedGraph()  # torch-pruning graph: dependency-aware masks and apply_speedup share it

    # ------------------------------------------------------------------ criterion API
    def use_masks(self, store: MaskStore) -> None:
        """Read and write ``store`` instead of an own one (a schedule over this criterion owns the masks)."""
        self.masks = store

    def check_module(self, name: str, module: nn.Module) -> str | None:
        """Why this pruner cannot prune ``module`` (None when it can)."""
        if self.supported_op_types is not None and type(module).__name__ not in self.supported_op_types:
            return f"it prunes only {', '.join(self.supported_op_types)} layers"
        if not isinstance(getattr(module, "weight", None), nn.Parameter):
            return "it has no weight parameter to prune"
        return None

    def calc_mask(self, name: str, module: nn.Module, sparsity: float, **context: Any) -> dict[str, torch.Tensor | None]:
        """``{"weight": mask, "bias": mask or None}`` pruning ``sparsity`` of ``module``.

        The criterion's hook (contracts.MaskCriterion); schedules and searches override
        :meth:`calc_masks` instead, so this one is not abstract."""
        raise NotImplementedError(f"{self.compressor_name}: a pruner implements calc_mask (a criterion) or "
                                  "overrides calc_masks (a schedule); see aup.compression.contracts")

    def layer_sparsities(self) -> dict[str, float]:
        """Target sparsity per layer from the config_list (schedules override or pass their own)."""
        return {name: float(layer.config["sparsity"]) for name, layer in self.layers.items()}

    def calc_masks(self, sparsities: dict[str, float]) -> dict[str, dict[str, torch.Tensor | None]]:
        """Masks of several layers at once; per layer by default (dependency-aware pruners group them)."""
        return {
            name: self.calc_mask(name, self.layers[name].module, sparsity)
            for name, sparsity in sparsities.items()
        }

    def compute_masks(self, sparsities: dict[str, float] | None = None) -> Masks:
        """(Re)compute and apply the masks at the given per-layer sparsities (default: the config's).

        Criteria see the current (already masked) weights, so a schedule raising the sparsity
        keeps what it pruned before. Returns the masks in NNI's format.
        """
        self.update_masks(sparsities)
        return self.get_masks()

    def update_masks(self, sparsities: dict[str, float] | None = None) -> None:
        """What :meth:`compute_masks` does, without building the returned NNI-format copies
        (subclasses that mask more layers, e.g. coupled BatchNorms, extend this)."""
        self._attach_masks()
        sparsities = self.layer_sparsities() if sparsities is None else sparsities
        unknown = sorted(set(sparsities) - set(self.layers))
        if unknown:
            raise ValueError(f"compute_masks: {unknown} are not layers of this pruner; layers: {sorted(self.layers)}")
        for name, mask in self.calc_masks(sparsities).items():
            self.masks.set(name, weight=mask.get("weight"), bias=mask.get("bias"), copy=not self.fresh_masks)
        self.masks_calculated = True

    def statistics_ready(self) -> bool:
        """Whether the criterion has what it needs (weight criteria: always)."""
        return True

    def reset_statistics(self) -> None:
        """Forget gathered statistics so the next masks rank on fresh batches (weight criteria: nothing)."""

    def statistics_paused(self) -> Any:
        """Context manager: forward passes inside do not count as statistics (activation pruners)."""
        from contextlib import nullcontext

        return nullcontext()

    def coupled_batchnorms(self) -> dict[str, str]:
        """``{conv: batchnorm}`` for every Conv2d whose only consumer is a BatchNorm (traced once).

        Structured pruners mask both sides together so that ``apply_speedup`` can remove the
        channel without changing the outputs (see ``dependency.following_batchnorms``). Read from
        the pruner's dependency graph when a ``dummy_input`` is known (the graph ``apply_speedup``
        then reuses), else found with ``torch.fx``.
        """
        if self._coupled_batchnorms is None:
            convs = [n for n, m in self.model.named_modules() if isinstance(m, nn.Conv2d)]
            with self._paused():
                self._coupled_batchnorms = following_batchnorms(self.model, convs, self.dummy_input,
                                                                graph=self._graph_if_known())
        return self._coupled_batchnorms

    def _graph_if_known(self) -> Any:
        """The shared dependency graph (built now if a ``dummy_input`` is known), or None."""
        graph = self.graph.current(self.model)
        if graph is None and self.dummy_input is not None:
            try:
                graph = self.graph.get(self.model, self.dummy_input)
            except ValueError:  # torch-pruning cannot trace it: following_batchnorms tries torch.fx
                return None
        return graph

    # ------------------------------------------------------------------ lifecycle
    def compress(self) -> nn.Module:
        """Attach masks; compute them now, or once the statistics are gathered. Returns the model."""
        self._attach_masks()
        self._attach_training_hooks()
        if self.statistics_ready():
            if type(self).compute_masks is Pruner.compute_masks:
                self.update_masks()  # the returned copies would be thrown away
            else:
                self.compute_masks()  # a subclass adds steps there
            self.report_size()  # the size is known now; multi-objective early stopping ranks by it
        return self.model

    def _attach_masks(self) -> None:
        if self.masks.attached or self.speedup_applied:
            return
        for name, layer in self.layers.items():
            self.masks.attach(name, layer.module)
        if self.optimizer is not None:
            self.masks.attach_optimizer(self.optimizer)
            self.optimizer.register_step_pre_hook(lambda *_: self.before_optimizer_step())
            self.optimizer.register_step_post_hook(lambda *_: self.after_optimizer_step())

    def _attach_training_hooks(self) -> None:
        """Statistics pruners register their forward hooks here."""

    def before_optimizer_step(self) -> None:
        """Runs before each step of the given optimizer (gradients are there)."""

    def after_optimizer_step(self) -> None:
        """Runs after each step of the given optimizer: compute masks once statistics are ready."""
        if not self.masks_calculated and self.speedup_applied is False and self.statistics_ready():
            self.compute_masks()
            self.report_size()

    def step(self) -> None:
        """Without an ``optimizer``: call after each optimizer step (re-applies the masks and
        computes them when the statistics are complete). Harmless to call with one too."""
        if self.speedup_applied:
            return
        if not self.masks_calculated and self.masks.attached and self.statistics_ready():
            self.compute_masks()
            self.report_size()
        self.masks.apply_all()

    def get_masks(self) -> Masks:
        """Current masks ``{module: {"weight": mask, "bias": mask or None}}`` (empty after speedup)."""
        if self.speedup_applied:
            return {}
        return self.masks.to_nni()

    def sparsity(self) -> float:
        """Achieved fraction of pruned weights over the configured layers."""
        return self.masks.sparsity(self.layers)

    def layer_sparsity(self) -> dict[str, float]:
        """Per layer, the fraction of its original weights that are zero or physically removed."""
        modules = dict(self.model.named_modules())
        result = {}
        for name, dense in self.dense_weight_numel.items():
            weight = getattr(modules.get(name), "weight", None)
            kept = int(torch.count_nonzero(weight.detach())) if isinstance(weight, torch.Tensor) else 0
            result[name] = round(1.0 - kept / dense, 6) if dense else 0.0
        return result

    def extra_metrics(self) -> dict[str, Any]:
        """``sparsity`` over the configured layers against their dense size, and ``layer_sparsity``."""
        per_layer = self.layer_sparsity()
        dense = sum(self.dense_weight_numel.values())
        pruned = sum(per_layer[n] * self.dense_weight_numel[n] for n in per_layer)
        return {M.SPARSITY: pruned / dense if dense else 0.0, M.LAYER_SPARSITY: per_layer}

    # ------------------------------------------------------------------ speedup / export
    def apply_speedup(self, dummy_input: Any) -> nn.Module:
        """Remove the pruned channels physically (torch-pruning); returns the same, smaller model.

        Masks are applied and their hooks removed first; afterwards the model is a plain dense
        model with fewer channels (re-create your optimizer, its parameters were replaced).
        """
        if self.speedup_applied:
            return self.model
        from aup.compression.torch.shrink.core import shrink_model

        masks = self.masks.to_nni(copy=False)  # the store is detached now and never edits a mask in place
        self.masks.detach()
        try:  # shrink_model applies the masks to the weights first
            with self._paused():  # its forward passes are not training batches
                self.shrink_report = shrink_model(self.model, masks, dummy_input,
                                                  graph=self.graph.current(self.model))
        except Exception as exc:
            raise ValueError(f"apply_speedup failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.graph.invalidate()  # its cached groups are used up, the structure changed
        self.speedup_applied = True
        self.speedup_masks = masks
        self.dummy_input = dummy_input
        self.report_size()  # the shrunk size, for early stopping; fully measured at export or trial end
        return self.model

    def export_model(
        self,
        model_path: str,
        mask_path: str | None = None,
        folder_name: str = ".",
        speedup: bool = False,
        dummy_input: Any = None,
        format: str | None = None,
        **ignored: Any,
    ) -> str:
        """Write the compressed model (artifact) and, with ``mask_path``, the NNI-format mask file.

        ``format="onnx"`` writes the deployable ONNX file instead (structured pruning shrunk in a
        copy first; int8 QDQ when the experiment's ``deploy`` asks for it). Paths are relative to ``folder_name``. With ``speedup`` and a dummy input the model is
        shrunk first; after :meth:`apply_speedup` the shrunk model is what gets saved. The saved
        weights have the masks applied and carry no hook state. Inside an aup trial the measured
        size metrics are reported to the runner. Unknown keyword arguments (Auptimizer's examples
        pass ``**config``) are ignored with a warning. Returns the model file path.
        """
        ignore_export_arguments(ignored)
        os.makedirs(folder_name, exist_ok=True)
        example = self.example_input(dummy_input)
        if not self.masks_calculated and not self.speedup_applied:
            warnings.warn(f"{self.compressor_name}: the masks were never computed (call compress(); statistics "
                          "pruners need their training batches first); exporting the dense model", stacklevel=2)
        if not self.speedup_applied:
            self.masks.apply_all()
        if speedup and not self.speedup_applied:
            if example is None:
                warnings.warn("export_model(speedup=True) needs dummy_input; exporting the masked model", stacklevel=2)
            else:
                try:
                    self.apply_speedup(example)
                except ValueError as exc:
                    warnings.warn(f"export_model: {exc}; exporting the masked model instead", stacklevel=2)
        masks = self.speedup_masks if self.speedup_applied else self.get_masks()
        if mask_path is not None:
            torch.save(masks, os.path.join(folder_name, mask_path))
        return self._export(model_path, folder_name, format, example,
                            lambda path: self._save_model(path, example, masks))

    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """The model to export: masked weights applied; structured masks shrunk in a clean copy."""

        masks = {} if self.speedup_applied else self.get_masks()
        if not masks:
            yield self.model, None, {}
            return
        self.masks.apply_all()
        clone = clean_copy(self.model)
        if self.removes_whole_channels():
            from aup.compression.torch.shrink.core import shrink_model

            try:
                shrink_model(clone, masks, self.example_input())
            except Exception as exc:  # noqa: BLE001 - the masked model is still a valid artifact
                warnings.warn(f"{self.compressor_name}: exporting the masked model, the shrink failed: {exc}",
                              stacklevel=3)
                clone = clean_copy(self.model)
        yield clone, None, {}

    def _save_model(self, path: str, example: Any, masks: Masks) -> None:  # noqa: D401 - returns no quant bits
        meta = {
            "compressor": self.compressor_name,
            "framework": self.framework,
            "compression_type": self.compression_type,
            "config_list": self.config_list,
            "speedup_applied": self.speedup_applied,
        }
        from aup.compression.torch.artifact.files import save_artifact

        save_artifact(path, self.model, example_input=example,
                      masks=None if self.speedup_applied else masks, meta=meta)
