"""NNI 2.0 ``config_list`` matching on a Keras 3 model (the rules: :mod:`aup.compression.config_match`).

Layers are named by their Keras ``name`` (``conv2d``, ``conv2d_1``, ``dense``... for auto-named
layers); a layer inside a nested model is ``<outer>/<inner>``. For every layer the *last* entry
whose ``op_types`` and ``op_names`` both match wins (a missing key matches everything); an entry with
``exclude: true`` leaves the layer alone. ``op_types`` are Keras class names (``Conv2D``,
``Dense``...), compared case-insensitively so a torch-style ``Conv2d`` also matches; ``"default"``
stands for every layer with a ``kernel`` (Conv*, Conv*Transpose, Dense, EinsumDense...).

The errors read like the torch side's, e.g. ``config_list[0].op_names: no layer named 'conv1' in the
model (did you mean 'conv2d_1'?); layers: conv2d, conv2d_1, dense``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np

from aup.compression import config_match

# Weights the level pruner can mask, in the order they are looked for on a layer. ``"default"``
# selects only layers with a ``kernel``; the others are pruned when a layer type is named explicitly.
PRUNABLE_WEIGHTS: tuple[str, ...] = ("kernel", "depthwise_kernel", "embeddings")

# (name, layer) -> None when the compressor can handle the layer, else the reason it cannot
LayerCheck = Callable[[str, "keras.layers.Layer"], "str | None"]


@dataclass
class LayerConfig:
    """One layer picked by the config_list, with the entry that won and its index."""

    name: str
    layer: keras.layers.Layer
    entry_index: int
    config: dict[str, Any]

    @property
    def type_name(self) -> str:
        return type(self.layer).__name__


def layer_weight(layer: keras.layers.Layer, attrs: Sequence[str] = PRUNABLE_WEIGHTS) -> tuple[str, Any] | None:
    """``(attribute, variable)`` of the first prunable weight the layer owns, or None.

    Keras 3 keeps Dense's kernel in ``_kernel`` behind a ``kernel`` property (which returns a tensor,
    not the variable, when LoRA is on), so the private slot is looked at first.
    """
    for attr in attrs:
        for slot in (f"_{attr}", attr):
            value = getattr(layer, slot, None)
            if isinstance(value, keras.Variable):
                return attr, value
    return None


def to_numpy(value: Any) -> Any:
    """A NumPy copy of a Keras variable or tensor.

    TensorFlow values are read with ``.numpy()``: ``keras.ops.convert_to_numpy`` goes through
    ``np.array(tensor)``, which NumPy 2 flags with a DeprecationWarning on every call.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    if type(value).__module__.startswith("tensorflow") and hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return keras.ops.convert_to_numpy(value)


def has_kernel(layer: keras.layers.Layer) -> bool:
    """What ``"default"`` selects: layers with a ``kernel`` weight."""
    return layer_weight(layer, ("kernel",)) is not None


def iter_layers(model: keras.layers.Layer, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """``(name, layer)`` for every layer, depth first; nested models' layers as ``outer/inner``."""
    for layer in getattr(model, "layers", ()):
        name = f"{prefix}{layer.name}"
        yield name, layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, f"{name}/")


def _type_matches(layer: keras.layers.Layer, op_types: Sequence[str]) -> bool:
    own = type(layer).__name__.lower()
    for op_type in op_types:
        if op_type == "default":
            if has_kernel(layer):
                return True
        elif op_type.lower() == own:
            return True
    return False


def match_layer(name: str, layer: keras.layers.Layer, config_list: Sequence[Mapping[str, Any]]) -> tuple[int, dict] | None:
    """The winning ``(entry index, entry)`` for a layer, or None (no match or excluded)."""
    return config_match.match_entry(name, layer, config_list, _type_matches)


def select_layers(model: keras.layers.Layer, config_list: Sequence[Mapping[str, Any]]) -> list[LayerConfig]:
    """All layers the config_list picks, in model order (no validation)."""
    return [LayerConfig(*picked) for picked in config_match.select(iter_layers(model), config_list, _type_matches)]


def check_op_names(model: keras.layers.Layer, config_list: Sequence[Mapping[str, Any]]) -> None:
    """Every ``op_names`` entry must be a layer of the model (ValueError listing the layers)."""
    error = config_match.unknown_op_name([name for name, _ in iter_layers(model)], config_list, what="layer")
    if error is not None:
        raise error


def validate_against_model(
    model: Any,
    config_list: Sequence[Mapping[str, Any]],
    *,
    compressor: str,
    check: LayerCheck | None = None,
) -> list[LayerConfig]:
    """Check op names and layer types against ``model`` and return the selected layers.

    ``check(name, layer)`` says why the compressor cannot handle a selected layer; the error names
    the winning entry. A config_list that selects no layer at all is an error: a trial that
    compressed nothing would still be recorded as compressed.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model: expected a keras.Model (Sequential, Functional or subclassed), "
                         f"got {type(model).__name__}")
    if not model.built:
        raise ValueError("model: the Keras model is not built yet (give it an Input, call build(), or run it "
                         "on one batch before create_compressor)")
    check_op_names(model, config_list)
    present = {type(layer).__name__.lower() for _, layer in iter_layers(model)}
    config_match.warn_unmatched_types(present, config_list, 2)
    selected = select_layers(model, config_list)
    for layer in selected:
        error = config_match.refusal(compressor, layer.name, layer.type_name, layer.entry_index,
                                     check(layer.name, layer.layer) if check is not None else None)
        if error is not None:
            raise error
    if not selected and config_list:
        raise config_match.nothing_selected(compressor, (type(layer).__name__ for _, layer in iter_layers(model)))
    return selected
