"""``PipelineCompressor``: several compression stages (e.g. prune, then quantize) in one trial.

A job config with ``compression_pipeline: [stage, stage, ...]`` (each stage a normal
``compression_framework`` / ``compression_type`` / ``compressor`` / ``config_list`` dict) makes
``aup.create_compressor`` return this class. It behaves like one compressor:

* ``compress()`` builds and compresses the stages in order, each on the model the previous one left.
  A *structured* pruning stage followed by a quantization stage is physically shrunk right there
  (``apply_speedup`` before the quantizer attaches), so the quantizer calibrates and trains on the
  layers that will be deployed; the given optimizer is re-pointed at the shrunk parameters (names
  never change, so this is exact) and its state for removed tensors is dropped. Fine-grained masks
  (level) stay attached under the quantizer: the mask zeroes the weight before it is quantized.
* ``update_epoch`` / ``step`` / ``prune_iteration_start`` go to every stage.
* ``export_model`` writes ONE artifact holding the remaining masks and the integer quantized weights
  (``save_artifact(..., masks=..., quant=...)``) and reports the metrics of the combined result;
  the stages report nothing on their own.

Extra keyword arguments of ``create_compressor`` go to every stage whose constructor takes them.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from aup import metrics as M
from aup.compression.spec import CompressionSpec, build_stage, resolve_class

from aup.compression.torch.base import Compressor, ignore_export_arguments
from aup.compression.torch.masking import Masks

__all__ = ["PipelineCompressor"]


def _silent(*_: Any, **__: Any) -> None:
    """Stage compressors report nothing; the pipeline reports the combined result."""
    return None


class PipelineCompressor(Compressor):
    """Apply ``stages`` (a list of :class:`CompressionSpec`) in order as one compressor."""

    compression_type = "pipeline"
    compressor_name = "pipeline"

    def __init__(self, model: nn.Module, stages: Sequence[CompressionSpec], optimizer: torch.optim.Optimizer | None = None,
                 dummy_input: Any = None, **kwargs: Any) -> None:
        super().__init__(model, [list(s.config_list) for s in stages], optimizer=optimizer, dummy_input=dummy_input)
        self.specs = list(stages)
        quantizers = [i for i, s in enumerate(self.specs) if s.compression_type == "quantization"]
        if len(quantizers) > 1:
            raise ValueError("compression_pipeline: at most one quantization stage (got stages "
                             f"{', '.join(str(i) for i in quantizers)})")
        if quantizers and any(s.compression_type != "quantization" for s in self.specs[quantizers[0] + 1:]):
            raise ValueError("compression_pipeline: the quantization stage must come last (pruning a quantized "
                             "model would prune fake-quantized weights)")
        for index, spec in enumerate(self.specs):  # every name and config_list checked before any work
            try:
                resolve_class(spec)
            except ValueError as exc:
                raise ValueError(f"compression_pipeline[{index}]: {exc}") from None
        self.kwargs = dict(kwargs)
        self.stages: list[Compressor] = []
        self.compressed = False

    # ------------------------------------------------------------------ building
    def _stage_kwargs(self) -> dict[str, Any]:
        extra = dict(self.kwargs)
        if self.optimizer is not None:
            extra["optimizer"] = self.optimizer
        if self.dummy_input is not None:
            extra["dummy_input"] = self.dummy_input
        return extra

    def compress(self) -> nn.Module:
        """Build and compress every stage in order; returns the (same) model."""
        if self.compressed:
            return self.model
        for index, spec in enumerate(self.specs):
            try:
                stage = build_stage(self.model, spec, (), self._stage_kwargs(), only_accepted=True)
            except ValueError as exc:
                raise ValueError(f"compression_pipeline[{index}]: {exc}") from None
            stage.report_metrics = _silent  # type: ignore[method-assign]
            stage.compress()
            self.stages.append(stage)
            later_quant = any(s.compression_type == "quantization" for s in self.specs[index + 1:])
            if later_quant and stage.removes_whole_channels():
                self._shrink_before_quantizing(index, stage)
        self.compressed = True
        return self.model

    def _shrink_before_quantizing(self, index: int, stage: Compressor) -> None:
        example = self.example_input()
        if example is None:
            raise ValueError(f"compression_pipeline[{index}]: {stage.compressor_name!r} is shrunk before the "
                             "quantizer attaches, which needs an example input: pass dummy_input=<a batch> to "
                             "create_compressor")
        if not getattr(stage, "masks_calculated", True):
            raise ValueError(f"compression_pipeline[{index}]: {stage.compressor_name!r} computes its masks during "
                             "training, so it cannot be followed by a quantizer in one pipeline; use a weight "
                             "criterion (l1_filter, l2_filter, fpgm, slim) before quantizing")
        before = {id(p): name for name, p in self.model.named_parameters()}
        stage.apply_speedup(example)
        if self.optimizer is not None:
            _retarget(self.optimizer, before, dict(self.model.named_parameters()))

    # ------------------------------------------------------------------ lifecycle broadcast
    def update_epoch(self, epoch: int) -> None:
        super().update_epoch(epoch)
        for stage in self.stages:
            stage.update_epoch(epoch)

    def step(self) -> None:
        for stage in self.stages:
            stage.step()

    def get_prune_iterations(self) -> Sequence[int]:
        for stage in self.stages or []:
            rounds = stage.get_prune_iterations()
            if len(rounds) > 1:
                return rounds
        return [0]

    def prune_iteration_start(self) -> None:
        for stage in self.stages:
            stage.prune_iteration_start()

    def get_masks(self) -> Masks:
        """Masks still attached (fine-grained or not yet shrunk pruning stages), later stages win."""
        merged: Masks = {}
        for stage in self._pruners():
            for name, mask in stage.get_masks().items():
                if name in merged:
                    merged[name] = {k: _both(merged[name].get(k), mask.get(k)) for k in ("weight", "bias")}
                else:
                    merged[name] = dict(mask)
        return merged

    def compressed_module_names(self) -> list[str]:
        names: list[str] = []
        for stage in self.stages:
            names += [n for n in stage.compressed_module_names() if n not in names]
        return names

    def extra_metrics(self) -> dict[str, Any]:
        """The stages' details (per-layer bits, ...) and the achieved ``sparsity`` of the whole pipeline:
        (removed + zero) weights over the pruned layers' original sizes, so channels a structured stage
        removed physically still count as pruned, and two pruning stages are counted together."""
        metrics: dict[str, Any] = {}
        for stage in self.stages:
            metrics.update(stage.extra_metrics())
        dense: dict[str, int] = {}
        for stage in self._pruners():
            sizes = getattr(stage, "dense_weight_numel", None) or getattr(stage, "dense_numel", None) or {}
            for name, numel in sizes.items():
                dense.setdefault(name, int(numel))
        if not dense:
            return metrics
        modules = dict(self.model.named_modules())
        per_layer = {}
        for name, numel in dense.items():
            module = modules.get(name)
            kept = sum(int(torch.count_nonzero(p.detach())) for k, p in module.named_parameters(recurse=False)
                       if "weight" in k) if module is not None else 0
            per_layer[name] = round(1.0 - kept / numel, 6) if numel else 0.0
        total = sum(dense.values())
        metrics[M.SPARSITY] = sum(per_layer[n] * dense[n] for n in dense) / total if total else 0.0
        metrics[M.LAYER_SPARSITY] = per_layer
        return metrics

    def example_input(self, dummy_input: Any = None) -> Any:
        if dummy_input is not None:
            return dummy_input
        if self.dummy_input is not None:
            return self.dummy_input
        for stage in self.stages:
            example = stage.example_input()
            if example is not None:
                return example
        return super().example_input()

    def _pruners(self) -> list[Compressor]:
        return [s for s in self.stages if s.compression_type == "pruning"]

    def _quantizer(self) -> Compressor | None:
        return next((s for s in self.stages if s.compression_type == "quantization"), None)

    # ------------------------------------------------------------------ speedup / export
    def apply_speedup(self, dummy_input: Any) -> nn.Module:
        """Shrink the structured pruning stages that are not shrunk yet (before any quantizer)."""
        if self._quantizer() is not None:
            for stage in self._pruners():
                if stage.removes_whole_channels() and not stage.speedup_applied:
                    raise ValueError("apply_speedup: the quantizer is already attached; structured stages are "
                                     "shrunk in compress() when dummy_input is given")
            return self.model
        before = {id(p): name for name, p in self.model.named_parameters()}
        for stage in self._pruners():
            if stage.removes_whole_channels() and not stage.speedup_applied:
                stage.apply_speedup(dummy_input)
        if self.optimizer is not None:
            _retarget(self.optimizer, before, dict(self.model.named_parameters()))
        self.dummy_input = dummy_input
        return self.model  # measured and reported at export or at the end of the trial

    @property
    def speedup_applied(self) -> bool:  # type: ignore[override]
        return False  # the base measure() asks; masks of unshrunk stages always count

    @speedup_applied.setter
    def speedup_applied(self, value: bool) -> None:
        pass

    def export_model(self, model_path: str, mask_path: str | None = None, folder_name: str = ".",
                     speedup: bool = False, dummy_input: Any = None, format: str | None = None,
                     **ignored: Any) -> str:
        """One artifact with the remaining masks and the quantized integer weights; combined metrics.

        ``format="onnx"`` writes the deployable ONNX file (quantized layers at their bits) instead.
        """
        ignore_export_arguments(ignored)
        if not self.compressed:
            warnings.warn("export_model: compress() was never called; exporting the uncompressed model", stacklevel=2)
        example = self.example_input(dummy_input)
        if speedup and example is not None and self._quantizer() is None:
            self.apply_speedup(example)
        for stage in self._pruners():
            if not stage.speedup_applied:
                stage.masks.apply_all()  # type: ignore[attr-defined]
        masks = self.get_masks()
        if mask_path is not None:
            os.makedirs(folder_name, exist_ok=True)
            torch.save(masks, os.path.join(folder_name, mask_path))
        return self._export(model_path, folder_name, format, example,
                            lambda path: self._write_packed(path, example, masks))

    def _write_packed(self, path: str, example: Any, masks: Masks) -> dict[str, Any] | None:
        from aup.compression.torch.artifact.files import save_artifact

        meta = {"compressor": "pipeline", "framework": self.framework, "compression_type": "pipeline",
                "stages": [{"compressor": s.compressor, "compression_type": s.compression_type,
                            "config_list": s.config_list} for s in self.specs]}
        quantizer = self._quantizer()
        if quantizer is None:
            save_artifact(path, self.model, example_input=example, masks=masks or None, meta=meta)
            return None
        with quantizer.exported_view() as (quant, specs):  # type: ignore[attr-defined]
            bits = {key: spec["bits"] for key, spec in quant.items()}
            meta["activation_quant"] = specs
            meta[M.WEIGHT_BITS] = quantizer._weight_bits(bits)  # type: ignore[attr-defined]
            save_artifact(path, self.model, example_input=example, masks=masks or None, quant=quant, meta=meta)
        return bits

    def asked_weight_bits(self) -> dict[str, int]:
        quantizer = self._quantizer()
        return quantizer.asked_weight_bits() if quantizer is not None else {}

    def quantizes(self) -> bool:
        return any(s.compression_type == "quantization" for s in self.specs)

    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """Fine-grained masks applied; the quantizer's int8 layers, or the unshrunk stages shrunk in a copy."""
        for stage in self._pruners():
            if not stage.speedup_applied:
                stage.masks.apply_all()  # type: ignore[attr-defined]
        quantizer = self._quantizer()
        if quantizer is not None:
            with quantizer.deployable() as exported:
                yield exported
            return
        pending = [s for s in self._pruners() if s.removes_whole_channels() and not s.speedup_applied]
        if not pending:
            yield self.model, None, {}
            return
        from aup.compression.torch.shrink.core import shrink_model

        from aup.compression.torch.deploy.settings import clean_copy

        clone = clean_copy(self.model)
        try:
            shrink_model(clone, self.get_masks(), self.example_input())
        except Exception as exc:  # noqa: BLE001 - the masked model is still a valid artifact
            warnings.warn(f"pipeline: exporting the masked model, the shrink failed: {exc}", stacklevel=3)
            clone = clean_copy(self.model)
        yield clone, None, {}


def _both(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None or a.shape != b.shape:
        return a
    return a * b


def _retarget(optimizer: torch.optim.Optimizer, before: dict[int, str], after: dict[str, nn.Parameter]) -> None:
    """Point ``optimizer`` at the model's parameters after a shrink replaced them (same names)."""
    for group in optimizer.param_groups:
        fresh = []
        for param in group["params"]:
            name = before.get(id(param))
            new = after.get(name) if name is not None else None
            if new is not None and new is not param:
                optimizer.state.pop(param, None)  # momentum of the old shape cannot be reused
                fresh.append(new)
            else:
                fresh.append(param)
        group["params"] = fresh
