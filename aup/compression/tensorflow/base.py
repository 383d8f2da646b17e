"""``KerasPruner``: the public face of Keras 3 pruners, with the torch side's method names.

It selects layers from the config_list (:mod:`.config_list`), keeps one mask per pruned weight in a
Keras constraint (:mod:`.masking`), measures the model (:mod:`.measure`) and writes the exported
files (:mod:`.artifact`). Subclasses implement :meth:`KerasPruner.calc_mask` (the criterion).

Inside an aup trial (``AUP_CHANNEL`` set) the size metrics go to the runner through the same
client channel the torch compressors use: once after ``compress()`` (so every trial has them even
if the script never exports) and again after ``export_model`` (measured on the written artifact,
after fine-tuning). The dense model is measured once, when the pruner is created, and sent as
``baseline_<metric>``.
"""
from __future__ import annotations

import abc
import logging
import os
import warnings
from typing import Any, ClassVar

import keras
import numpy as np

from aup import metrics as M
from aup.compression.lifecycle import TrainingLifecycle
from aup.compression.tensorflow import artifact, measure
from aup.compression.tensorflow.config_list import LayerConfig, layer_weight, to_numpy, validate_against_model
from aup.compression.tensorflow.masking import MaskConstraint, attach_mask

logger = logging.getLogger(__name__)

__all__ = ["KerasPruner"]

_SAVE_FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}


class KerasPruner(TrainingLifecycle):
    """Base of the Keras pruners: ``Pruner(model, config_list, optimizer=None, dummy_input=None)``.

    ``optimizer`` is accepted for the seed's signature and not needed: Keras applies the masks after
    every optimizer step on its own. ``dummy_input`` (one batch or a shape) is used for measuring;
    by default zeros of the model's input shape.
    """

    framework: ClassVar[str] = "tensorflow"
    compression_type: ClassVar[str] = "pruning"
    compressor_name: ClassVar[str] = ""

    def __init__(self, model: keras.Model, config_list: list[dict[str, Any]], optimizer: Any = None,
                 dummy_input: Any = None) -> None:
        selected = validate_against_model(model, config_list, compressor=self.compressor_name, check=self.check_layer)
        self.model = model
        self.config_list = config_list
        self.optimizer = optimizer
        self.dummy_input = dummy_input
        self.epoch = 0
        self.layers: dict[str, LayerConfig] = {layer.name: layer for layer in selected}
        self.weights: dict[str, tuple[str, keras.Variable]] = {
            name: layer_weight(layer.layer) for name, layer in self.layers.items()  # type: ignore[misc]
        }
        self.constraints: dict[str, MaskConstraint] = {}
        self._baseline: dict[str, float] | None = None
        self._measure_baseline()

    @property
    def bound_model(self) -> keras.Model:
        """NNI's name for the compressed model."""
        return self.model

    # ------------------------------------------------------------------ criterion
    def check_layer(self, name: str, layer: keras.layers.Layer) -> str | None:
        """Why this pruner cannot prune ``layer`` (None when it can)."""
        if layer_weight(layer) is None:
            return "it has no kernel to prune"
        return None

    @abc.abstractmethod
    def calc_mask(self, name: str, weight: np.ndarray, sparsity: float) -> np.ndarray:
        """A 0/1 array shaped like ``weight`` pruning ``sparsity`` of it (contracts.KerasPruner)."""

    def layer_sparsities(self) -> dict[str, float]:
        """Target sparsity per layer from the config_list."""
        return {name: float(layer.config["sparsity"]) for name, layer in self.layers.items()}

    # ------------------------------------------------------------------ lifecycle
    def compress(self) -> keras.Model:
        """Compute the masks, zero the pruned weights and keep them at zero from now on.

        Returns the same model object (NNI 2.0's TF pruner returned a new model that Auptimizer's
        example then ignored, so nothing was pruned).
        """
        self.compute_masks()
        self.report_metrics()
        return self.model

    def compute_masks(self, sparsities: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """(Re)compute and apply the masks; a weight already pruned stays pruned (it is zero)."""
        sparsities = self.layer_sparsities() if sparsities is None else sparsities
        unknown = sorted(set(sparsities) - set(self.layers))
        if unknown:
            raise ValueError(f"compute_masks: {unknown} are not layers of this pruner; layers: {sorted(self.layers)}")
        for name, sparsity in sparsities.items():
            layer = self.layers[name].layer
            attr, variable = self.weights[name]
            constraint = attach_mask(layer, attr, variable)
            self.constraints[name] = constraint
            weight = to_numpy(variable) * constraint.numpy()
            mask = self.calc_mask(name, weight, sparsity)
            constraint.set_mask(mask)
            variable.assign((weight * mask).astype(weight.dtype))
        return {name: c.numpy() for name, c in self.constraints.items()}

    def apply_speedup(self, dummy_input: Any = None) -> keras.Model:
        """Fine-grained masks remove no whole channel, so there is nothing to shrink."""
        raise ValueError(f"apply_speedup shrinks structurally pruned torch models; {self.compressor_name!r} "
                         "(tensorflow) prunes single weights, so the model keeps its shape (the exported "
                         "artifact stores only the non-zero weights)")

    def get_masks(self) -> dict[str, dict[str, np.ndarray | None]]:
        """Current masks in NNI's layout ``{layer: {"weight": bool array, "bias": None}}``."""
        return {name: {"weight": c.numpy(), "bias": None} for name, c in self.constraints.items()}

    # ------------------------------------------------------------------ measuring
    def layer_sparsity(self) -> dict[str, float]:
        """Per pruned layer, the fraction of its weight that is zero now."""
        return measure.layer_sparsity({name: variable for name, (_, variable) in self.weights.items()})

    def sparsity(self) -> float:
        """Achieved fraction of zero weights over the configured layers."""
        sizes = {name: int(np.prod(v.shape)) for name, (_, v) in self.weights.items()}
        total = sum(sizes.values())
        per_layer = self.layer_sparsity()
        return sum(per_layer[n] * sizes[n] for n in sizes) / total if total else 0.0

    def count_flops_params(self, x: Any = None, verbose: bool = True) -> tuple[float, float, list[dict[str, Any]]]:
        """``(flops, params, per_layer)``: mask-aware MACs per sample and non-zero parameters."""
        return measure.count_flops_params(self.model, x if x is not None else self.dummy_input, verbose=verbose)

    def measure(self, artifact_path: str | None = None, example_input: Any = None) -> dict[str, float]:
        """Measured size metrics (the names of docs/design.md) of the model as it is now."""
        compressed = {name: variable for name, (_, variable) in self.weights.items()}
        example = example_input if example_input is not None else self.dummy_input
        return measure.measure_model(self.model, example, compressed=compressed, artifact_path=artifact_path,
                                     meta=self._meta())

    def extra_metrics(self) -> dict[str, Any]:
        """Per-layer sparsity, reported next to the size metrics."""
        return {M.LAYER_SPARSITY: self.layer_sparsity()}

    def _measure_baseline(self) -> None:
        from aup import channel

        if channel.channel_path() is None:
            return
        try:
            measured = measure.measure_model(self.model, self.dummy_input)
        except Exception as exc:  # noqa: BLE001 - never break the trial over the baseline
            logger.warning("aup: could not measure the uncompressed baseline: %s", exc)
            return
        from aup.metrics import BASELINE_PREFIX

        self._baseline = {f"{BASELINE_PREFIX}{k}": v for k, v in measured.items() if k != M.SPARSITY}

    def report_metrics(self, artifact_path: str | None = None, example_input: Any = None) -> dict[str, Any] | None:
        """Inside an aup trial, send the measured metrics to the runner (trial attributes in the store).

        Outside a trial nothing is measured; a failure to measure is a warning, never an error.
        """
        from aup import channel, client

        if channel.channel_path() is None:
            return None
        try:
            metrics: dict[str, Any] = self.measure(artifact_path, example_input)
        except Exception as exc:  # noqa: BLE001 - metrics must never kill a finished trial
            warnings.warn(f"aup: could not measure the compressed model: {type(exc).__name__}: {exc}", stacklevel=2)
            return None
        metrics = {**metrics, **self.extra_metrics(), **(self._baseline or {})}
        client.log_metrics(**metrics)
        return metrics

    # ------------------------------------------------------------------ export
    def _meta(self) -> dict[str, Any]:
        return {"compressor": self.compressor_name, "framework": self.framework,
                "compression_type": self.compression_type, "config_list": self.config_list,
                M.LAYER_SPARSITY: self.layer_sparsity()}

    def export_model(self, model_path: str, mask_path: str | None = None, folder_name: str = ".",
                     speedup: bool = False, dummy_input: Any = None, format: str | None = None,
                     **extra: Any) -> str:
        """Write the pruned model, its compact artifact and optionally the masks; returns the model path.

        Paths are relative to ``folder_name``. ``model_path`` ending in ``.keras`` (or ``.h5`` /
        ``.hdf5``, Keras's legacy format) is written with ``model.save`` *without* aup's mask
        constraints, so it loads with plain Keras; another suffix gets ``.keras`` appended. Next to
        it, ``<stem>.aup.npz`` holds only the non-zero weights (:mod:`.artifact`); its size is the
        ``model_bytes`` metric. ``mask_path`` writes the masks as ``.npz`` (``<layer>/<weight>``
        boolean arrays). Extra keywords are accepted and ignored: Auptimizer's example passes the
        whole job config. ``speedup`` has no effect (nothing to shrink, see :meth:`apply_speedup`).
        """
        if extra:
            logger.info("export_model: ignoring extra arguments %s", sorted(extra))
        if format not in (None, "keras", "h5"):
            raise ValueError(f"export_model: format={format!r} is not supported for tensorflow models "
                             "(use \"keras\" or \"h5\")")
        if not self.constraints:
            warnings.warn(f"{self.compressor_name}: compress() was never called; exporting the dense model",
                          stacklevel=2)
        os.makedirs(folder_name, exist_ok=True)
        model_file = self._model_file(os.path.join(folder_name, model_path), format)
        with artifact.unmasked(self.model):
            self.model.save(model_file)
        stem = model_file[: -len(os.path.splitext(model_file)[1])]
        artifact_file = f"{stem}.aup.npz"
        artifact.save_artifact(artifact_file, self.model, meta=self._meta())
        if mask_path is not None:
            artifact.save_masks(os.path.join(folder_name, mask_path),
                                {f"{name}/{self.weights[name][0]}": c.numpy() for name, c in self.constraints.items()})
        self.report_metrics(artifact_path=artifact_file, example_input=dummy_input)
        return model_file

    @staticmethod
    def _model_file(path: str, format: str | None) -> str:
        suffix = os.path.splitext(path)[1].lower()
        wanted = format or _SAVE_FORMATS.get(suffix)
        if wanted is None:
            warnings.warn(f"export_model: Keras 3 saves models as .keras or .h5; writing {path}.keras", stacklevel=3)
            return f"{path}.keras"
        if _SAVE_FORMATS.get(suffix) != wanted:
            return f"{path}.{wanted}"
        return path
