"""``WeightOnlyQuantizer``: the shared part of ``rtn`` and ``gptq`` (k-bit weights in groups, for LLMs).

Each selected ``Linear`` (or transformers' GPT-2 ``Conv1D``, whose weight is stored transposed,
``[in, out]``: its groups run along the inputs all the same) stores its weight on a group-wise
integer grid: ``group_size`` consecutive input columns of a row share one scale (and, when
asymmetric, one integer zero point), ``value = (q - zero) * scale`` with ``q`` in ``[0, 2**bits)``;
symmetric grids use ``zero = 2**(bits-1)`` (the layout of ONNX Runtime's ``MatMulNBits``). Activations stay float. ``weight_grid(name)`` hands the
grid to the deployment writer (:mod:`..ort_mixed`), so the deployed ``MatMulNBits`` holds exactly the
in-memory weights (4-bit storage for 2-4 bits, 8-bit storage for 5-8 bits; group sizes 16-256 run
on ORT's CPU kernels, one group per row always does).

``config_list`` keys: ``quant_bits`` (2..8, default 4), ``group_size`` (default 32; 0 or a value of
at least the layer's input size: one group per row; otherwise it must divide the input size),
``symmetric`` (default true), plus NNI's ``op_types`` / ``op_names`` / ``exclude``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from aup.compression.torch.layerwise import get_weight, is_linear, stores_transposed
from aup.compression.torch.obs import Grid, grid_for, quantize_on_grid
from aup.compression.torch.quantization.base import QuantLayer, Quantizer

__all__ = ["GroupSpec", "WeightOnlyQuantizer", "DEFAULT_GROUP_SIZE"]

DEFAULT_GROUP_SIZE = 32


@dataclass(frozen=True)
class GroupSpec:
    """A :class:`~.primitives.QuantSpec` for group-wise grids (same interface, tensor scale/zero).

    ``transposed``: the weight is stored ``[in, out]`` (GPT-2's ``Conv1D``); ``codes`` and ``dequantize``
    take and give that layout, the grid stays ``[out, n_groups]`` and the artifact is told
    (``group_axis`` 0)."""

    grid: Grid
    transposed: bool = False

    @property
    def bits(self) -> int:
        return self.grid.bits

    def as_dict(self) -> dict[str, Any]:
        axis = {"group_axis": 0} if self.transposed else {}
        return {"bits": self.grid.bits, "scale": self.grid.scale.clone(), "zero_point": self.grid.zero.clone(), **axis}

    def _stored(self, out_in: torch.Tensor) -> torch.Tensor:
        return out_in.t() if self.transposed else out_in

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        w = self._stored(x.detach().double())
        q = torch.round(w / self.grid.expand(self.grid.scale) + self.grid.expand(self.grid.zero))
        return self._stored(q.clamp_(0, 2 ** self.grid.bits - 1).to(torch.int64))

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        q = self._stored(q.double())
        return self._stored((q - self.grid.expand(self.grid.zero)) * self.grid.expand(self.grid.scale)).float()


class WeightOnlyQuantizer(Quantizer):
    """Group-wise k-bit weights; subclasses decide how the grid and the rounded weights are found."""

    compressor_name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, dummy_input: Any = None) -> None:
        super().__init__(model, config_list, optimizer, dummy_input)
        self.group_sizes: dict[str, int] = {}
        for layer in self.layers:
            if "input" in layer.quant_types or "output" in layer.quant_types:
                raise ValueError(f"{self.compressor_name}: quantizes weights only; {layer.name!r} asks for "
                                 f"{list(layer.quant_types)}")
            if not is_linear(layer.module):
                raise ValueError(f"{self.compressor_name}: quantizes Linear layers (and transformers' Conv1D) "
                                 f"only; {layer.name!r} is a {type(layer.module).__name__}")
            self.group_sizes[layer.name] = self._group_size(layer)
        self._cache: dict[str, tuple[Any, torch.Tensor]] = {}

    def _group_size(self, layer: QuantLayer) -> int:
        columns = get_weight(layer.module).shape[1]
        size = int(layer.config.get("group_size", DEFAULT_GROUP_SIZE))
        if size == 0 or size >= columns:
            return columns
        if columns % size:
            raise ValueError(f"{self.compressor_name}: group_size {size} does not divide the input size {columns} "
                             f"of {layer.name!r} (use a divisor, or 0 for one group per row)")
        return size

    def symmetric(self, layer: QuantLayer) -> bool:
        return bool(layer.config.get("symmetric", True))

    def grid_of(self, layer: QuantLayer, weight: torch.Tensor) -> Grid:
        """The grid ``weight`` is rounded onto (RTN: its own groups' ranges; GPTQ: the fitted grid)."""
        return grid_for(weight, layer.bits["weight"], self.group_sizes[layer.name], self.symmetric(layer))

    def quantize_weight(self, layer: QuantLayer, weight: torch.Tensor, *, export: bool = False
                        ) -> tuple[torch.Tensor, GroupSpec]:
        key = (weight.data_ptr(), weight._version, id(getattr(self, "fitted", {}).get(layer.name)))
        cached = self._cache.get(layer.name)
        if cached is not None and cached[0][0] == key and not (torch.is_grad_enabled() and weight.requires_grad):
            return cached[1], cached[0][1]
        transposed = stores_transposed(layer.module)  # Conv1D: [in, out]
        out_in = weight.detach().t() if transposed else weight.detach()
        grid = self.grid_of(layer, out_in)
        rounded = quantize_on_grid(out_in, grid)
        rounded = rounded.t() if transposed else rounded
        fake = weight + (rounded - weight).detach()  # straight-through: the gradient reaches the float weight
        spec = GroupSpec(grid, transposed)
        self._cache[layer.name] = ((key, spec), rounded)
        return fake, spec

    def weight_grid(self, module_name: str) -> Any:
        """The grid of ``module_name``'s weight (``WeightGrid``: bits, group_size, scales [out, n_groups],
        zero_points or None when symmetric, symmetric), or None for a layer this quantizer does not hold."""
        layer = next((layer for layer in self.layers if layer.name == module_name), None)
        if layer is None:
            return None
        from aup.compression.torch.deploy.nbits import WeightGrid

        grid = self.grid_of(layer, get_weight(layer.module))
        return WeightGrid(bits=grid.bits, group_size=grid.group_size, scales=grid.scale.float(),
                          zero_points=None if grid.symmetric else grid.zero.to(torch.uint8),
                          symmetric=grid.symmetric)

    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """The plain model holding the grid weights; every layer ships as ``MatMulNBits`` on this grid
        (4-bit storage for 2-4 bits, 8-bit for 5-8), activations stay float."""
        low = {layer.name: layer.bits["weight"] for layer in self.layers}
        grids = {name: self.weight_grid(name) for name in low}
        with self.exported_view():
            yield self.model, [], {"low_bits": low, "grids": grids, "weight_only": True}
