"""NNI 2.0 ``config_list`` matching on a torch model (the rules: :mod:`aup.compression.config_match`).

For every module of ``model.named_modules()`` the *last* entry whose ``op_types`` and ``op_names``
both match wins (a missing key matches everything); if that entry has ``exclude: true`` the module is
left alone. ``"default"`` in ``op_types`` stands for NNI's weighted layer types. Type names compare
case-insensitively. Parameter-less modules (ReLU, pooling) are legal ``op_names``: output
quantization needs them, and Auptimizer wrongly rejected them by looking at ``state_dict`` keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import nn

from aup.compression import config_match
from aup.errors import FieldError

DEFAULT_OP_TYPES: tuple[str, ...] = (
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear", "Bilinear", "PReLU", "Embedding", "EmbeddingBag",
)

# (name, module) -> None when the compressor can handle it, else the reason it cannot
ModuleCheck = Callable[[str, nn.Module], "str | None"]


@dataclass
class LayerConfig:
    """One module picked by the config_list, with the entry that won and its index."""

    name: str
    module: nn.Module
    entry_index: int
    config: dict[str, Any]

    @property
    def type_name(self) -> str:
        return type(self.module).__name__


def expand_op_types(op_types: Iterable[str]) -> set[str]:
    """Lower-cased op type names with ``"default"`` expanded to the weighted layer types."""
    expanded: set[str] = set()
    for op_type in op_types:
        if op_type == "default":
            expanded.update(t.lower() for t in DEFAULT_OP_TYPES)
        else:
            expanded.add(op_type.lower())
    return expanded


def type_names(module: nn.Module) -> set[str]:
    """Lower-cased names of the module's class and its ``nn.Module`` base classes.

    A subclass counts as its bases (``NonDynamicallyQuantizableLinear``, the attention output
    projection, is a ``Linear``; a user's ``class MyConv(nn.Conv2d)`` is a ``Conv2d``).
    """
    names = {cls.__name__.lower() for cls in type(module).__mro__
             if isinstance(cls, type) and issubclass(cls, nn.Module) and cls is not nn.Module}
    # a replacement that stands for a torch layer (the head-pruned attention is a MultiheadAttention)
    return names | {alias.lower() for alias in getattr(type(module), "aup_op_types", ())}


def _type_match(module: nn.Module, op_types: Sequence[str]) -> bool:
    return bool(type_names(module) & expand_op_types(op_types))


def match_module(name: str, module: nn.Module, config_list: Sequence[Mapping[str, Any]]) -> tuple[int, dict] | None:
    """The winning ``(entry index, entry)`` for a module, or None (no match or excluded)."""
    return config_match.match_entry(name, module, config_list, _type_match)


def select_modules(model: nn.Module, config_list: Sequence[Mapping[str, Any]]) -> list[LayerConfig]:
    """All modules the config_list picks, in ``named_modules()`` order (no validation)."""
    return [LayerConfig(*picked) for picked in config_match.select(model.named_modules(), config_list, _type_match)]


def check_op_names(model: nn.Module, config_list: Sequence[Mapping[str, Any]], compressor: str = "") -> None:
    """Every ``op_names`` entry must be a module of the model (ValueError with a suggestion).

    Inside an aup trial the mismatch also goes to the runner (a ``model_mismatch`` channel record
    with the model's layers), which stops the experiment instead of failing every trial.
    """
    names = [name for name, _ in model.named_modules() if name]
    error = config_match.unknown_op_name(names, config_list)
    if error is not None:  # the runner's record carries the layers itself
        _report_mismatch(model, compressor, config_match.unknown_op_name(names, config_list, list_layers=False)
                         or error)
        raise error


def _report_mismatch(model: nn.Module, compressor: str, error: FieldError) -> None:
    """Inside a trial, tell the runner (with the model's layers) before ``error`` is raised."""
    from aup.compression.model_check import report_mismatch

    layers = [(name, type(module).__name__) for name, module in model.named_modules() if name]
    report_mismatch(compressor, error.entry, str(error), layers)


def validate_against_model(
    model: nn.Module,
    config_list: Sequence[Mapping[str, Any]],
    *,
    compressor: str,
    check: ModuleCheck | None = None,
    require_any: bool = True,
) -> list[LayerConfig]:
    """Check op names and layer types against ``model`` and return the selected layers.

    ``check(name, module)`` returns why the compressor cannot handle a selected module (e.g. fpgm
    on a Linear); the error names the winning entry. ``require_any``: a config_list that picks no
    layer at all is an error (compressing nothing would still be reported as a compressed trial).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_op_names(model, config_list, compressor)
    config_match.warn_unmatched_types(set().union(*(type_names(m) for m in model.modules())), config_list, 2)
    selected = select_modules(model, config_list)
    for layer in selected:
        error = config_match.refusal(compressor, layer.name, layer.type_name, layer.entry_index,
                                     check(layer.name, layer.module) if check is not None else None)
        if error is not None:
            _report_mismatch(model, compressor, error)
            raise error
    if require_any and not selected and config_list:
        error = config_match.nothing_selected(compressor, (type(m).__name__ for m in model.modules()))
        _report_mismatch(model, compressor, error)
        raise error
    return selected
