"""Attach fake quantization to a module without renaming anything.

NNI 2.0 wrapped every quantized layer in a ``QuantizerModuleWrapper`` and moved ``conv.weight`` to
``conv.module.old_weight``, so a saved ``state_dict`` no longer loaded into the plain model.  Here:

* weights: the module *instance* gets its own ``forward`` that, for the duration of one call, puts
  the fake-quantized tensor in the module's parameter slot and then runs the original forward.  The
  trainable full-precision ``Parameter`` stays registered under its name; the conv/linear computes
  with the quantized tensor in forward *and* backward (so the input gradient uses the quantized
  weight), and the STE carries the weight gradient back to the ``Parameter``.
  (``torch.func.functional_call`` would do the same swap but calls ``module(...)`` again, which
  runs the module's hooks a second time, double-quantizing outputs and double-counting EMA
  updates; swapping the slot around the original ``forward`` avoids that.)
* outputs: a forward hook; inputs: a forward pre-hook (first positional tensor argument).
* layers whose parent reads the weight without calling them (``nn.MultiheadAttention`` reads
  ``out_proj.weight`` directly): the swap is installed on the parent's ``forward`` instead, and
  their input/output cannot be quantized (a clear error, not a silent no-op).
* PyTorch's fused transformer fast path (``TransformerEncoderLayer`` / ``MultiheadAttention`` in
  eval mode under ``no_grad``) reads every weight itself and never calls the layers, so while a
  quantizer is attached inside such a module, that module's ``forward`` runs with the fast path
  switched off (:class:`FastPathOff`); it is back on after ``remove()``.

``type(module)`` and ``model.state_dict().keys()`` never change, and every attachment returns a
handle whose ``remove()`` restores the module exactly.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from aup.compression.torch.quantization.primitives import binarize, fake_quant_affine

__all__ = ["WeightOverride", "FastPathOff", "weight_reader", "fast_path_owner", "attach_activation_quant",
           "ActivationQuantHandle"]

# modules with a fused inference kernel that bypasses their children's forward
FAST_PATH_TYPES: tuple[type[nn.Module], ...] = (nn.TransformerEncoder, nn.TransformerEncoderLayer,
                                                nn.MultiheadAttention)

_MISSING = object()


class _QuantizedForward:
    """The instance-level ``forward``: swap in the quantized weight around the original forward.

    An object rather than a closure so that ``copy.deepcopy(model)`` re-binds it to the copied
    module (a closure would keep calling the original module from the copy).
    """

    def __init__(self, module: nn.Module, inner: Callable[..., Any],
                 quant_fn: Callable[[torch.Tensor], torch.Tensor], param: str) -> None:
        self.module = module  # owns the parameter (the host whose forward runs may be its parent)
        self.inner = inner
        self.quant_fn = quant_fn
        self.param = param

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        slots = self.module._parameters
        weight = slots[self.param]
        slots[self.param] = self.quant_fn(weight)
        try:
            return self.inner(*args, **kwargs)
        finally:
            slots[self.param] = weight


class WeightOverride:
    """Make ``module`` compute with ``quant_fn(module.<param>)`` instead of the raw parameter.

    ``host``: the module whose ``forward`` reads the parameter (default ``module`` itself; the
    parent for layers their parent never calls, see :func:`weight_reader`).
    """

    def __init__(self, module: nn.Module, quant_fn: Callable[[torch.Tensor], torch.Tensor],
                 param: str = "weight", host: nn.Module | None = None) -> None:
        if not isinstance(module._parameters.get(param), nn.Parameter):
            raise ValueError(f"module {type(module).__name__} has no parameter {param!r} to quantize")
        host = module if host is None else host
        self.module = host
        self._previous = host.__dict__.get("forward", _MISSING)
        # bound class method, or an earlier instance override (e.g. a pruner's), which keeps working
        host.forward = _QuantizedForward(module, host.forward, quant_fn, param)

    def remove(self) -> None:
        """Restore the module's previous ``forward`` (class method or earlier override)."""
        if self._previous is _MISSING:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self._previous


class _NoFastPathForward:
    """Instance ``forward`` running the original with ``torch.backends.mha`` fast path disabled."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        enabled = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return self.inner(*args, **kwargs)
        finally:
            torch.backends.mha.set_fastpath_enabled(enabled)


class FastPathOff:
    """Run ``module`` (a :data:`FAST_PATH_TYPES` module) without PyTorch's fused fast path."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._previous = module.__dict__.get("forward", _MISSING)
        module.forward = _NoFastPathForward(module.forward)

    def remove(self) -> None:
        if self._previous is _MISSING:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self._previous


def _parent(model: nn.Module, name: str) -> tuple[str, nn.Module | None]:
    parent_name = name.rpartition(".")[0]
    try:
        return parent_name, model.get_submodule(parent_name)
    except AttributeError:
        return parent_name, None


def weight_reader(model: nn.Module, name: str) -> nn.Module | None:
    """The parent that reads module ``name``'s weight without calling it, or None if it is called.

    ``nn.MultiheadAttention`` passes ``out_proj.weight`` to its attention function directly.
    """
    _, parent = _parent(model, name)
    if isinstance(parent, nn.MultiheadAttention) and name.rpartition(".")[2] == "out_proj":
        return parent
    return None


def fast_path_owner(model: nn.Module, name: str) -> tuple[str, nn.Module] | None:
    """The outermost ancestor of ``name`` (or the module itself) with a fused fast path, if any."""
    parts = name.split(".") if name else []
    for depth in range(len(parts) + 1):
        prefix = ".".join(parts[:depth])
        module = model.get_submodule(prefix) if prefix else model
        if isinstance(module, FAST_PATH_TYPES):
            return prefix, module
    return None


class ActivationQuantHandle:
    """Hook handles of :func:`attach_activation_quant`; ``remove()`` detaches them all."""

    def __init__(self, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _spec_fn(spec: Mapping[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frozen fake-quant function of one exported activation spec."""
    if spec.get("mode", "affine") == "sign":
        return lambda x: binarize(x, clip=True)[0]
    scale, zero_point, bits = float(spec["scale"]), float(spec["zero_point"]), int(spec["bits"])
    return lambda x: fake_quant_affine(x, scale, zero_point, bits)


def attach_activation_quant(model: nn.Module, specs: Mapping[str, Mapping[str, Mapping[str, Any]]]
                            ) -> ActivationQuantHandle:
    """Re-attach exported activation quantization to a loaded model.

    ``specs`` is what a quantizer's export put in ``meta["activation_quant"]``:
    ``{module_name: {"input" | "output": {"bits", "scale", "zero_point", "mode"}}}`` where ``mode``
    is ``"affine"`` (QAT: frozen EMA range) or ``"sign"`` (BNN).  The loaded model then computes
    exactly what the quantized model computed at export time, with its ranges frozen.
    """
    modules = dict(model.named_modules())
    handles: list[torch.utils.hooks.RemovableHandle] = []
    for name, per_type in specs.items():
        if name not in modules:
            raise ValueError(f"activation_quant: module {name!r} not found in the loaded model")
        module = modules[name]
        if "input" in per_type:
            fn_in = _spec_fn(per_type["input"])
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, fn=fn_in: _quantize_first_tensor(args, fn)))
        if "output" in per_type:
            fn_out = _spec_fn(per_type["output"])
            handles.append(module.register_forward_hook(lambda _m, _args, out, fn=fn_out: fn(out)))
    return ActivationQuantHandle(handles)


def _quantize_first_tensor(args: tuple[Any, ...], fn: Callable[[torch.Tensor], torch.Tensor]
                           ) -> tuple[Any, ...] | None:
    """Apply ``fn`` to the first positional tensor argument (the layer's input)."""
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            return args[:i] + (fn(arg),) + args[i + 1:]
    return None
