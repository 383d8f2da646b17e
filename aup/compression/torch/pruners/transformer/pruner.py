"""``TransformerPruner``: the compressor that removes attention heads and MLP hidden channels.

It selects blocks from the config_list, scores them (:mod:`.scoring`), keeps the removed units
zero (:mod:`.unit_masks`) and, on ``apply_speedup``, slices them out (:mod:`.slicing`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import nn

from aup import metrics as M
from aup.compression.torch.base import Compressor, ignore_export_arguments
from aup.compression.torch.config_list import match_module
from aup.compression.torch.pruners.transformer.blocks import HeadBlock, MlpBlock, Piece, block_key, find_blocks, pieces_of
from aup.compression.torch.pruners.transformer.scoring import CRITERIA, removed_units, unit_importance
from aup.compression.torch.pruners.transformer.slicing import shrink_blocks, shrink_verified
from aup.compression.torch.pruners.transformer.unit_masks import UnitMasks, ZeroRows

__all__ = ["TransformerPruner", "importance_table"]

logger = logging.getLogger(__name__)


class TransformerPruner(Compressor):
    """``TransformerPruner(model, config_list, criterion="l1", optimizer=None, statistics_batch_num=1,
    dummy_input=None)``: remove attention heads (``head_sparsity``) and MLP channels (``mlp_sparsity``)."""

    compression_type: ClassVar[str] = "pruning"
    compressor_name: ClassVar[str] = "transformer"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], criterion: str = "l1",
                 optimizer: torch.optim.Optimizer | None = None, statistics_batch_num: int = 1,
                 dummy_input: Any = None) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"transformer: criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        if criterion == "taylor" and optimizer is None:
            raise ValueError("transformer: criterion 'taylor' needs optimizer=<your optimizer> (the importance "
                             "comes from the gradients of your training steps)")
        super().__init__(model, config_list, optimizer=optimizer, dummy_input=dummy_input)
        self.criterion = criterion
        self.statistics_batch_num = int(statistics_batch_num)
        heads, mlps = find_blocks(model)
        self.blocks: list[tuple[HeadBlock | MlpBlock, float]] = self._select(heads, mlps)
        self.modules = dict(model.named_modules())
        names = {p.module for block, _ in self.blocks for p in pieces_of(block)}
        self.layers = {n: self.modules[n] for n in sorted(names)}
        self.dense_numel = {n: _weight_numel(m) for n, m in self.layers.items()}
        self.masks = UnitMasks(model)
        self.removed: dict[str, list[int]] = {}
        self.taylor: dict[tuple[str, str], torch.Tensor] = {}
        self.batches = 0
        self.masks_calculated = False
        self.shrink_report: dict[str, Any] | None = None
        self.speedup_masks: Any = None
        if optimizer is not None and criterion == "taylor":
            optimizer.register_step_pre_hook(lambda *_: self._gather_taylor())
            optimizer.register_step_post_hook(lambda *_: self._maybe_compute())

    # ------------------------------------------------------------------ selection
    def _select(self, heads: list[HeadBlock], mlps: list[MlpBlock]) -> list[tuple[HeadBlock | MlpBlock, float]]:
        selected: list[tuple[HeadBlock | MlpBlock, float]] = []
        for blocks, key in ((heads, "head_sparsity"), (mlps, "mlp_sparsity")):
            for block in blocks:
                module = self.model.get_submodule(block.name) if block.name else self.model
                entries = [_default_means_all(e) for e in self.config_list if key in e or e.get("exclude")]
                match = match_module(block.name, module, entries)
                if match is not None and float(match[1][key]) > 0:
                    selected.append((block, float(match[1][key])))
        if not selected and self.config_list:
            found = ", ".join(f"{b.name or '<model>'}" for b in heads + mlps) or "none"
            raise ValueError(f"config_list: no attention module or MLP matches any entry for 'transformer' (it prunes "
                             f"heads of MultiheadAttention / BERT / GPT-2 / Llama-style attention and MLP channels); "
                             f"found: {found}")
        return selected

    def compressed_module_names(self) -> list[str]:
        return list(self.layers)

    # ------------------------------------------------------------------ importance and masks
    def compress(self) -> nn.Module:
        """Compute the masks now (weight criteria) or after the Taylor batches; they stay enforced."""
        if self.optimizer is not None and not self.masks.on_optimizer:
            self.masks.attach_optimizer(self.optimizer)
        if self.criterion != "taylor":
            self.compute_masks()
        return self.model

    def _param(self, piece: Piece) -> torch.Tensor:
        return getattr(self.modules[piece.module], piece.key)

    @torch.no_grad()
    def _gather_taylor(self) -> None:
        if self.batches >= self.statistics_batch_num:
            return
        for block, _ in self.blocks:
            for piece in pieces_of(block):
                param = self._param(piece)
                if param.grad is None:
                    return
        for block, _ in self.blocks:
            for piece in pieces_of(block):
                param = self._param(piece)
                key = (piece.module, piece.key)
                contribution = (param.detach() * param.grad.detach()).pow(2).double()
                self.taylor[key] = self.taylor.get(key, 0) + contribution
        self.batches += 1

    def _maybe_compute(self) -> None:
        if not self.masks_calculated and self.batches >= self.statistics_batch_num:
            self.compute_masks()

    def step(self) -> None:
        """Without an ``optimizer``: re-apply the masks after each of your optimizer steps."""
        if not self.speedup_applied:
            self.masks.apply_all()

    def unit_importance(self, block: HeadBlock | MlpBlock, pieces: list[Piece] | None = None) -> torch.Tensor:
        """One score per head / hidden channel of ``block`` (higher = keep)."""
        return unit_importance(block, self.criterion, self._param, self.taylor, pieces)

    def compute_masks(self) -> None:
        """(Re)compute every block's removed units and zero them (``get_masks()`` gives NNI's format)."""
        if self.speedup_applied:
            return
        rows: dict[tuple[str, str, int], list[torch.Tensor]] = {}
        for block, sparsity in self.blocks:
            removed = removed_units(block, self.unit_importance(block), sparsity)
            self.removed[block_key(block)] = removed
            if not removed:
                continue
            units = torch.tensor(removed, dtype=torch.long)
            for piece in block.producers + block.consumers:
                index = (piece.offset + units[:, None] * piece.size + torch.arange(piece.size)).flatten()
                rows.setdefault((piece.module, piece.key, piece.dim), []).append(index)
        self.masks.set({key: torch.cat(parts) for key, parts in rows.items()})
        self.masks_calculated = True

    def get_masks(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """NNI-format masks (built on request: the pruner itself keeps only the removed indices)."""
        return {} if self.speedup_applied else self.masks.to_nni()

    # ------------------------------------------------------------------ metrics
    def sparsity(self) -> float:
        """Achieved fraction of removed or zero weights over the pruned projections' original sizes."""
        return float(self.extra_metrics()[M.SPARSITY])

    def extra_metrics(self) -> dict[str, Any]:
        """Achieved ``sparsity`` over the pruned projections (removed + zero vs their dense size)."""
        per_layer = {}
        for name, dense in self.dense_numel.items():
            module = self.modules.get(name)
            kept = _weight_nonzero(module) if module is not None else 0
            per_layer[name] = round(1.0 - kept / dense, 6) if dense else 0.0
        dense = sum(self.dense_numel.values())
        pruned = sum(per_layer[n] * self.dense_numel[n] for n in per_layer)
        heads = {n.rpartition("#")[0]: len(r) for n, r in self.removed.items() if n.endswith("#heads")}
        return {M.SPARSITY: pruned / dense if dense else 0.0, M.LAYER_SPARSITY: per_layer, "heads_removed": heads}

    # ------------------------------------------------------------------ shrink
    def apply_speedup(self, dummy_input: Any) -> nn.Module:
        """Slice the removed heads and channels out of the weights; outputs equal the masked model's.

        Raises ValueError (model restored to its masked state) if the outputs differ.
        """
        if self.speedup_applied:
            return self.model
        if not self.masks_calculated:
            raise ValueError("transformer: apply_speedup before the masks were computed (call compress())")
        start = time.perf_counter()
        self.masks.apply_all()
        self.masks.detach()
        masks = self.masks.to_nni  # the mask file, if asked for, is built from the removed indices
        was_training = self.model.training
        self.model.eval()
        params_before = sum(p.numel() for p in self.model.parameters())
        try:
            diff = shrink_verified(self.model, dummy_input, self.blocks, self.removed)
        except Exception as exc:
            self.model.train(was_training)
            raise ValueError(f"transformer apply_speedup failed, model restored to its masked state: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.model.train(was_training)
        self.modules = dict(self.model.named_modules())
        self.speedup_applied = True
        self.speedup_masks = masks
        self.dummy_input = dummy_input
        self.shrink_report = {"params_before": params_before,
                              "params_after": sum(p.numel() for p in self.model.parameters()),
                              "max_abs_diff": diff, "seconds": time.perf_counter() - start,
                              "removed": {k: len(v) for k, v in self.removed.items()}}
        logger.info("transformer: shrunk %d -> %d parameters in %.2fs", params_before,
                    self.shrink_report["params_after"], self.shrink_report["seconds"])
        self.report_metrics(example_input=dummy_input)
        return self.model

    # ------------------------------------------------------------------ export
    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """The model to deploy: already shrunk, or a shrunk clean copy of the masked model."""
        if self.speedup_applied or not self.masks_calculated:
            yield self.model, None, {}
            return
        from aup.compression.torch.deploy.settings import clean_copy

        self.masks.apply_all()
        clone = clean_copy(self.model)
        for module in clone.modules():
            for key, hook in list(module._forward_pre_hooks.items()):
                if isinstance(hook, ZeroRows):
                    del module._forward_pre_hooks[key]
        shrink_blocks(clone, self.blocks, self.removed)
        yield clone, None, {}

    def export_model(self, model_path: str, mask_path: str | None = None, folder_name: str = ".",
                     speedup: bool = False, dummy_input: Any = None, format: str | None = None,
                     **ignored: Any) -> str:
        """Write aup's artifact (shrunk with ``speedup``) or, with ``format="onnx"``, the deployable ONNX
        file of the shrunk model; optionally the NNI mask file."""
        from aup.compression.torch.artifact.files import save_artifact

        ignore_export_arguments(ignored)
        os.makedirs(folder_name, exist_ok=True)
        example = self.example_input(dummy_input)
        if speedup and not self.speedup_applied and example is not None:
            self.apply_speedup(example)
        if not self.speedup_applied:
            self.masks.apply_all()
        masks = self.speedup_masks() if self.speedup_applied and self.speedup_masks else self.get_masks()
        if mask_path is not None:
            torch.save(masks, os.path.join(folder_name, mask_path))
        meta = {"compressor": self.compressor_name, "framework": self.framework,
                "compression_type": self.compression_type, "config_list": self.config_list,
                "speedup_applied": self.speedup_applied, "criterion": self.criterion}

        def write_packed(path: str) -> None:
            save_artifact(path, self.model, example_input=example, masks=None if self.speedup_applied else masks,
                          meta=meta)

        return self._export(model_path, folder_name, format, example, write_packed)


def _default_means_all(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``op_types: ["default"]`` selects every attention module and MLP this pruner knows."""
    entry = dict(entry)
    if "default" in entry.get("op_types", ()):
        entry.pop("op_types")
    return entry



def _weight_numel(module: nn.Module) -> int:
    return sum(p.numel() for k, p in module._parameters.items() if p is not None and "weight" in k)


def _weight_nonzero(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for k, p in module._parameters.items()
               if p is not None and "weight" in k)



def importance_table(pruner: TransformerPruner) -> Mapping[str, list[float]]:
    """Per block, the current unit scores (for inspection and tests)."""
    return {block.name: pruner.unit_importance(block).tolist() for block, _ in pruner.blocks}
