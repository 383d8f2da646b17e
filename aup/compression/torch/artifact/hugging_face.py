"""Hugging Face models in the artifact: config + weights (+ shrunk sizes), rebuilt by their own class.

Why not the module tree: a Hugging Face model's internals change with every transformers release
(5.25's Llama attention holds ``_kernel_funcs``, a registry of functions that cannot be stored as
data), while its config and state_dict are the format Hugging Face itself promises to load.  So a
model whose class is a ``PreTrainedModel`` is stored as its class name, its config and its
state_dict; loading builds ``cls(config)`` (the class's own ``__init__``, no code from the file) and
loads the weights.

Pruned models: a head/MLP shrink changes parameter shapes and a few integer attributes per layer
(head counts, ``all_head_size``, ``in_features``...) that the config alone may not express (layers
pruned differently).  At save time the model is built again from its config on the meta device and
compared with the live model: the integer, float and boolean attributes that differ are stored per
module, and the shapes come with the stored tensors.  Loading applies both to the class built from
the config, then loads the weights.  A model whose module tree differs from what its class builds
(layers replaced by hand) is not stored this way; the caller falls back to the fx graph or module tree.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from aup.compression.torch.artifact.allowlist import MODULE_INTERNALS, UnsafeArtifact, check_identifier, class_path, resolve_class

__all__ = ["is_hf_model", "describe_hf", "build_hf"]

_SCALARS = (bool, int, float)


def _pretrained_base() -> type | None:
    if "transformers" not in sys.modules:
        return None
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - broken install
        return None
    return PreTrainedModel


def is_hf_model(model: nn.Module) -> bool:
    base = _pretrained_base()
    return base is not None and isinstance(model, base) and getattr(model, "config", None) is not None


def describe_hf(model: nn.Module, encoder: Any) -> dict[str, Any]:
    """The ``structure`` of an ``hf`` artifact; :class:`UnsafeArtifact` when the model is not rebuilt by its class."""
    fresh = _build_like(model)
    live_modules, fresh_modules = dict(model.named_modules()), dict(fresh.named_modules())
    if [(n, type(m)) for n, m in live_modules.items()] != [(n, type(m)) for n, m in fresh_modules.items()]:
        raise UnsafeArtifact("its module tree differs from what its class builds from its config")
    attrs: dict[str, dict[str, Any]] = {}
    for name, live in live_modules.items():
        fresh_module = fresh_modules[name]
        if set(live._parameters) != set(fresh_module._parameters) or set(live._buffers) != set(fresh_module._buffers):
            raise UnsafeArtifact(f"module {name or 'model'} has other parameters than its class builds")
        changed = {key: val for key, val in live.__dict__.items() if _stored_attr(key, val)
                   and (type(fresh_module.__dict__.get(key)) is not type(val) or fresh_module.__dict__[key] != val)}
        if changed:
            attrs[name] = changed
    state = {key: encoder.tensor(value, key) for key, value in model.state_dict(keep_vars=True).items()}
    return {"cls": class_path(type(model)), "config": encoder.value(model.config, "config")["v"],
            "attrs": attrs, "state": state}


def build_hf(spec: dict[str, Any], decoder: Any) -> nn.Module:
    """``cls(config)``, the stored per-module sizes applied, the stored weights loaded (tied weights tied again)."""
    import transformers

    cls = resolve_class(spec["cls"], trust=decoder.trust, base=transformers.PreTrainedModel)
    config = decoder.value({"__t": "hf_config", "v": spec["config"]})
    state = {}
    for state_key, tensor_key in spec.get("state", {}).items():
        check_identifier(state_key, "state_dict key", allow_dots=True)
        state[state_key] = decoder._tensor(tensor_key)
    _check_declared_sizes(cls, config, state)
    model = cls(config)
    modules = dict(model.named_modules())
    for name, attrs in spec.get("attrs", {}).items():
        module = modules.get(name)
        if module is None or not isinstance(attrs, dict):
            raise UnsafeArtifact(f"module {name!r} is not in {type(model).__name__}")
        for key, val in attrs.items():
            if not _stored_attr(check_identifier(key, "attribute name"), val):
                raise UnsafeArtifact(f"attribute {key!r} of {name or 'model'} may not be set from an artifact")
            object.__setattr__(module, key, val)
    _load_weights(model, state, spec.get("state", {}))
    return model


def _stored_attr(key: str, val: Any) -> bool:
    """Plain numbers and flags of a module (sizes, head counts), never internals, hooks or strings."""
    return (type(val) in _SCALARS and not key.startswith("_") and key not in MODULE_INTERNALS
            and not key.startswith("aup_"))


# what the class may allocate beyond the stored weights (non-persistent buffers such as position ids)
_SLACK_ELEMENTS = 1 << 26


def _check_declared_sizes(cls: type, config: Any, state: dict[str, torch.Tensor]) -> None:
    """The config's sizes (vocabulary, layers, widths) against the stored weights, before allocating.

    The class is built on the meta device (shapes, no memory); it may not hold more than twice the
    stored elements plus a small allowance, so a config edited to a huge ``vocab_size`` fails here.
    """
    try:
        with torch.device("meta"):
            shapes = cls(config)
    except Exception as exc:  # noqa: BLE001 - the config does not build its class
        raise UnsafeArtifact(f"{cls.__name__} cannot be built from the stored config "
                             f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
    declared = sum(t.numel() for t in list(shapes.parameters()) + list(shapes.buffers()))
    stored = sum(t.numel() for t in state.values())
    if declared > 2 * stored + _SLACK_ELEMENTS:
        raise UnsafeArtifact(f"the stored config declares {declared} elements for {cls.__name__}, the file "
                             f"stores {stored}")


def _build_like(model: nn.Module) -> nn.Module:
    """The model's class built from its config, on the meta device (no memory for weights) when possible."""
    try:
        with torch.device("meta"):
            return type(model)(model.config)
    except Exception:  # noqa: BLE001 - an __init__ that needs real tensors: build on the CPU
        return type(model)(model.config)


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], keys: dict[str, str]) -> None:
    """Set every parameter and buffer to the stored tensor (its shape and dtype), then re-tie shared ones."""
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise UnsafeArtifact(f"the stored weights do not match {type(model).__name__} (missing {missing}, "
                             f"unexpected {extra})")
    shared: dict[str, nn.Parameter] = {}
    for state_key, value in state.items():
        owner_name, _, attr = state_key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if attr in owner._parameters:
            old = owner._parameters[attr]
            param = shared.get(keys[state_key])
            if param is None:
                param = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)
                shared[keys[state_key]] = param
            owner._parameters[attr] = param
        elif attr in owner._buffers:
            owner._buffers[attr] = value
        else:
            raise UnsafeArtifact(f"{state_key!r} is neither a parameter nor a buffer of {type(model).__name__}")
