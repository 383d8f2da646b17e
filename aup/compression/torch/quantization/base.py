"""``Quantizer``: the shared machinery of aup's four quantizers.

A subclass says which quant types it implements and how one tensor is fake-quantized
(:meth:`Quantizer.quantize_weight`, :meth:`Quantizer.quantize_activation`); this base selects the
layers from ``config_list`` (NNI 2.0 semantics), attaches the quantization without renaming anything
(:mod:`.hooks`), counts optimizer steps, and exports the weights in their real integer width.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import torch
from torch import nn

from aup import metrics as M
from aup.compression.torch.base import Compressor, ignore_export_arguments
from aup.compression.torch.config_list import validate_against_model
from aup.compression.torch.quantization.config import default_entries, quant_types_of, resolve_bits, validate_quant_config_list
from aup.compression.torch.quantization.hooks import FastPathOff, WeightOverride, fast_path_owner, weight_reader
from aup.compression.torch.quantization.primitives import QuantSpec

if TYPE_CHECKING:
    from aup.compression.torch.deploy.nbits import WeightGrid

__all__ = ["QuantLayer", "Quantizer", "FLOAT_BITS"]

FLOAT_BITS = 32  # ``quant_bits`` 32 means "leave this tensor in float" (per-layer mixed precision)

logger = logging.getLogger(__name__)


@dataclass
class QuantLayer:
    """One selected module, the config entry that won for it, and its bit width per quant type."""

    name: str
    module: nn.Module
    config: dict[str, Any]
    quant_types: tuple[str, ...]
    bits: dict[str, int] = field(default_factory=dict)
    param: str = "weight"  # the quantized parameter: "in_proj_weight" for packed attention projections


class Quantizer(Compressor):
    """Fake quantization during training, integer storage on export.

    Lifecycle (NNI's): ``q = XQuantizer(model, config_list, optimizer=None)``; ``q.compress()``
    attaches the quantization; train (call ``q.step()`` after each optimizer step unless the
    optimizer was passed); ``q.export_model(path)``; ``q.remove()`` restores the plain model.
    """

    compression_type: ClassVar[str] = "quantization"
    compressor_name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, dummy_input: Any = None) -> None:
        validate_quant_config_list(self.compressor_name, config_list)
        super().__init__(model, config_list, optimizer, dummy_input)
        self.steps_done = 0
        self.layers = self._select_layers(default_entries(self.compressor_name, config_list))
        self._handles: list[Any] = []
        self._step_hook = optimizer.register_step_post_hook(self._on_optimizer_step) if optimizer else None

    # ------------------------------------------------------------------ selection
    def _select_layers(self, entries: list[dict[str, Any]]) -> list[QuantLayer]:
        layers = []
        self.float_layers: dict[str, int] = {}  # asked 32 bits: left in float, shipped as float
        selected = validate_against_model(self.model, entries, compressor=self.compressor_name)
        for sel in selected:
            name, module, entry, where = sel.name, sel.module, sel.config, f"config_list[{sel.entry_index}]"
            types = tuple(quant_types_of(self.compressor_name, entry, sel.entry_index))
            param = _weight_param(module)
            if "weight" in types and param is None:
                raise ValueError(f"{where}.quant_types: {self.compressor_name!r} cannot quantize the weight of "
                                 f"{name!r} ({type(module).__name__}): it has no weight parameter")
            bits = {t: resolve_bits(self.compressor_name, entry, t, sel.entry_index) for t in types}
            if any(b == FLOAT_BITS for b in bits.values()):  # 32 = float: that quant type is not applied
                types = tuple(t for t in types if bits[t] != FLOAT_BITS)
                bits = {t: b for t, b in bits.items() if b != FLOAT_BITS}
                if not types:
                    self.float_layers[name] = FLOAT_BITS
                    continue
            layers.append(QuantLayer(name, module, entry, types, bits, param or "weight"))
        return layers

    # ------------------------------------------------------------------ subclass API
    @abc.abstractmethod
    def quantize_weight(self, layer: QuantLayer, weight: torch.Tensor, *, export: bool = False
                        ) -> tuple[torch.Tensor, QuantSpec]:
        """Fake-quantized weight and its integer grid; ``export`` means "final value, no state change"
        (contracts.Quantizer)."""

    def quantize_activation(self, layer: QuantLayer, kind: str, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized input (``kind="input"``) or output (``"output"``) of ``layer``."""
        raise NotImplementedError(f"{self.compressor_name} does not quantize {kind}s")

    def activation_spec(self, layer: QuantLayer, kind: str) -> dict[str, Any] | None:
        """Frozen spec of an activation quantization for export (see ``attach_activation_quant``)."""
        return None

    def after_optimizer_step(self) -> None:
        """Hook run after each counted optimizer step (BNN clips its weights here)."""

    # ------------------------------------------------------------------ attach / detach
    def compress(self) -> nn.Module:
        """Attach fake quantization to the selected layers (idempotent); returns the model."""
        if self._handles:
            return self.model
        self._switch_off_fast_paths()
        for layer in self.layers:
            reader = weight_reader(self.model, layer.name)
            if reader is not None and ("input" in layer.quant_types or "output" in layer.quant_types):
                raise ValueError(f"{self.compressor_name}: cannot quantize the input/output of {layer.name!r}: "
                                 f"its parent {type(reader).__name__} reads its weight without calling it; "
                                 f"quantize its weight only")
            if "weight" in layer.quant_types:
                self._handles.append(WeightOverride(
                    layer.module, lambda w, layer=layer: self.quantize_weight(layer, w)[0], param=layer.param,
                    host=reader))
            if "input" in layer.quant_types:
                self._handles.append(layer.module.register_forward_pre_hook(
                    lambda _m, args, layer=layer: self._quantize_input(layer, args)))
            if "output" in layer.quant_types:
                self._handles.append(layer.module.register_forward_hook(
                    lambda _m, _args, out, layer=layer: self.quantize_activation(layer, "output", out)))
        return self.model

    def _switch_off_fast_paths(self) -> None:
        """Fused transformer kernels would bypass the quantized layers in eval mode: switch them off."""
        owners: dict[str, nn.Module] = {}
        for layer in self.layers:
            found = fast_path_owner(self.model, layer.name)
            if found is not None:
                owners.setdefault(*found)
        for module in owners.values():
            self._handles.append(FastPathOff(module))
        if owners:
            logger.info("%s: PyTorch's fused transformer fast path is off in %s while the quantizer is attached "
                        "(it would skip the quantized layers in eval mode)", self.compressor_name,
                        ", ".join(repr(n or "<model>") for n in owners))

    def _quantize_input(self, layer: QuantLayer, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor):
                return args[:i] + (self.quantize_activation(layer, "input", arg),) + args[i + 1:]
        return None

    def remove(self) -> nn.Module:
        """Detach every override and hook: the model is exactly the plain one again."""
        for handle in reversed(self._handles):
            handle.remove()
        self._handles.clear()
        if not getattr(self, "_in_export_view", False):
            self._recorder.remove()  # what it recorded stays available for export
        return self.model

    unwrap_model = remove

    # ------------------------------------------------------------------ steps
    def _on_optimizer_step(self, *_: Any) -> None:
        self.steps_done += 1
        self.after_optimizer_step()

    def step(self) -> None:
        """Count one optimizer step (``quant_start_step``, BNN clipping) when no optimizer was passed.

        With an ``optimizer`` the count follows ``optimizer.step()`` by itself and this is a no-op,
        so calling both never counts twice.
        """
        if self._step_hook is None:
            self._on_optimizer_step()

    # ------------------------------------------------------------------ export
    def weight_specs(self) -> dict[str, QuantSpec]:
        """``{"<module>.weight": QuantSpec}`` of every quantized weight, as it would be exported."""
        return {f"{layer.name}.{layer.param}":
                self.quantize_weight(layer, getattr(layer.module, layer.param).detach(), export=True)[1]
                for layer in self.layers if "weight" in layer.quant_types}

    def quantized_weights(self) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
        """``(quant, values)``: the artifact's ``quant`` mapping and the fake-quantized weight tensors.

        Each value is ``(q - zero_point) * scale`` for integer ``q`` in ``[0, 2**bits)``, recomputed
        from the codes (in float64, then cast) so what is saved is what a loader reconstructs.
        """
        quant: dict[str, dict[str, Any]] = {}
        values: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for layer in self.layers:
                if "weight" not in layer.quant_types:
                    continue
                fake, spec = self.quantize_weight(layer, getattr(layer.module, layer.param).detach(), export=True)
                key = f"{layer.name}.{layer.param}"
                quant[key] = spec.as_dict()
                values[key] = spec.dequantize(spec.codes(fake)).to(fake.dtype)
        return quant, values

    def activation_specs(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{module: {"input"|"output": spec}}`` for ``meta["activation_quant"]``."""
        specs: dict[str, dict[str, dict[str, Any]]] = {}
        for layer in self.layers:
            for kind in ("input", "output"):
                if kind in layer.quant_types:
                    spec = self.activation_spec(layer, kind)
                    if spec is None:
                        logger.warning("%s: %s of %r never observed; exported unquantized",
                                       self.compressor_name, kind, layer.name)
                    else:
                        specs.setdefault(layer.name, {})[kind] = spec
        return specs

    def weight_bits(self) -> float:
        """Average stored bits per model parameter: quantized weights at their width, the rest at
        their dtype's width (32 for float32 biases, BatchNorm, unquantized layers)."""
        return self._weight_bits({key: spec.bits for key, spec in self.weight_specs().items()})

    def _weight_bits(self, bits_by_param: dict[str, int]) -> float:
        total_bits = total = 0
        for key, param in self.model.named_parameters():
            default = torch.finfo(param.dtype).bits if param.is_floating_point() else torch.iinfo(param.dtype).bits
            total_bits += bits_by_param.get(key, default) * param.numel()
            total += param.numel()
        return total_bits / total if total else 0.0

    def layer_bits(self) -> dict[str, dict[str, int]]:
        """``{module: {quant_type: bits}}`` for the ``layer_bits`` metric (32: left in float)."""
        floats = {name: {"weight": bits} for name, bits in getattr(self, "float_layers", {}).items()}
        return {**floats, **{layer.name: dict(layer.bits) for layer in self.layers}}

    def weight_grid(self, module_name: str) -> WeightGrid | None:
        """The integer grid the deployed file stores ``module_name``'s weight on (one scale and zero point
        per tensor for aup's quantizers), or None when its weight is not quantized."""
        from aup.compression.torch.deploy.nbits import per_row_grid

        layer = next((lay for lay in self.layers if lay.name == module_name and "weight" in lay.quant_types), None)
        if layer is None:
            return None
        weight = getattr(layer.module, layer.param).detach()
        spec = self.quantize_weight(layer, weight, export=True)[1]
        return per_row_grid(spec.bits, spec.scale, spec.zero_point, weight.shape[0], weight[0].numel())

    def asked_weight_bits(self) -> dict[str, int]:
        """``{module: weight bits asked}`` (32 for layers left in float), for the shipped-precision record."""
        asked = dict(getattr(self, "float_layers", {}))
        asked.update({layer.name: layer.bits["weight"] for layer in self.layers if "weight" in layer.bits})
        return asked

    def extra_metrics(self) -> dict[str, Any]:
        return {M.LAYER_BITS: self.layer_bits()}

    def export_model(self, model_path: str, mask_path: str | None = None, folder_name: str = ".",
                     speedup: bool = False, dummy_input: Any = None, format: str | None = None,
                     **ignored: Any) -> str:
        """Save the model with its quantized weights stored as ``bits``-wide integers plus scales.

        Writes ``folder_name/model_path`` through ``aup.compression.torch.artifact.files.save_artifact``
        (the model's own parameter names; ``aup.compression.load_compressed`` rebuilds the model
        with its activation quantization attached); ``format="onnx"`` writes the deployable ONNX
        file instead, each quantized layer at its bits (5-8: real int8, ONNX Runtime static QDQ
        calibrated on batches the model saw; <= 4: 4-bit or 2-bit weights; 32: float; see
        ``aup.compression.torch.deploy.mixed``). ``mask_path`` and ``speedup`` apply to pruning only and are ignored.
        Inside an aup trial the measured size metrics (``weight_bits`` among them) are reported.
        Returns the file path.
        """
        ignore_export_arguments(ignored)
        if speedup or mask_path:
            warnings.warn("export_model: mask_path/speedup apply to pruning; ignored for quantization", stacklevel=2)
        example = self.example_input(dummy_input)
        return self._export(model_path, folder_name, format, example, lambda path: self._write_packed(path, example))

    def _write_packed(self, path: str, example: Any) -> dict[str, int]:
        with self.exported_view() as (quant, specs):
            bits = {key: spec["bits"] for key, spec in quant.items()}
            meta = {"compressor": self.compressor_name, "framework": self.framework,
                    "compression_type": self.compression_type, "config_list": self.config_list,
                    "activation_quant": specs, M.WEIGHT_BITS: self._weight_bits(bits)}
            from aup.compression.torch.artifact.files import save_artifact

            save_artifact(path, self.model, example_input=example, quant=quant, meta=meta)
        return bits

    def quantizes(self) -> bool:
        return True

    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """The plain model holding the quantized weights, for the ONNX export at per-layer precision.

        Weights asked for at most 4 bits ship below 8 bits on this quantizer's own grid (``low_bits``,
        ``grids``: MatMulNBits for linears, int4 for convolutions, see :mod:`..ort_mixed`); other
        layers whose every quantized tensor has at most 8 bits become int8 nodes; 32 (and 9-31) stay
        float. Activation quantization that int8 cannot express (BNN's sign, fewer than 8 bits) stays
        in the graph as frozen fake-quant ops, while 8-bit activations get ORT's calibrated int8
        ranges. With sign activations (BNN) the int8 layers are int8 in their weights only: an int8
        input to the next layer would move its values across the sign threshold (measured: 93% top-1
        agreement on digits instead of 100%).
        """
        from aup.compression.torch.quantization.hooks import attach_activation_quant

        low = {layer.name: layer.bits["weight"] for layer in self.layers if layer.bits.get("weight", 8) <= 4}
        int8 = [layer.name for layer in self.layers
                if layer.name not in low and all(b <= 8 for b in layer.bits.values())]
        grids = {name: grid for name in low if (grid := self.weight_grid(name)) is not None}
        with self.exported_view() as (_quant, specs):
            # a 4-bit layer's activations are not in ORT's int8 QDQ: its 8-bit ones stay as fake-quant too
            kept = {name: {kind: spec for kind, spec in per.items()
                           if spec.get("mode") == "sign" or int(spec["bits"]) < 8 or name in low}
                    for name, per in specs.items()}
            handle = attach_activation_quant(self.model, {k: v for k, v in kept.items() if v})
            sign_outputs = any(spec.get("mode") == "sign" for per in specs.values() for spec in per.values())
            try:
                yield self.model, int8, {"weight_only": sign_outputs, "low_bits": low, "grids": grids}
            finally:
                handle.remove()

    def exported_view(self) -> "_ExportedView":
        """Context manager: the plain model holding the fake-quantized weights, restored on exit."""
        return _ExportedView(self)


def _weight_param(module: nn.Module) -> str | None:
    """The parameter a weight quantizer quantizes: ``weight``, or the packed ``in_proj_weight`` of
    ``nn.MultiheadAttention`` (query/key/value projections in one tensor)."""
    if isinstance(module._parameters.get("weight"), nn.Parameter):
        return "weight"
    if isinstance(module._parameters.get("in_proj_weight"), nn.Parameter):
        return "in_proj_weight"
    return None


class _ExportedView:
    """Temporarily detach the hooks and write the fake-quantized weights into the parameters."""

    def __init__(self, quantizer: Quantizer) -> None:
        self.quantizer = quantizer
        self.saved: dict[str, torch.Tensor] = {}
        self.was_attached = False

    def __enter__(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
        q = self.quantizer
        quant, values = q.quantized_weights()
        specs = q.activation_specs()
        self.was_attached = bool(q._handles)
        q._in_export_view = True
        try:
            q.remove()
        finally:
            q._in_export_view = False
        params = dict(q.model.named_parameters())
        with torch.no_grad():
            for key, value in values.items():
                self.saved[key] = params[key].detach().clone()
                params[key].copy_(value)
        return quant, specs

    def __exit__(self, *exc: Any) -> None:
        q = self.quantizer
        params = dict(q.model.named_parameters())
        with torch.no_grad():
            for key, value in self.saved.items():
                params[key].copy_(value)
        if self.was_attached:
            q.compress()
