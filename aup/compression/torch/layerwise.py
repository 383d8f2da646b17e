"""Sequential layer-wise calibration for the one-shot LLM compressors (Wanda, SparseGPT, RTN, GPTQ).

The papers compress a network layer after layer, each layer calibrated on the inputs it receives
from the *already compressed* layers before it. Here that order is found, not assumed: one forward
pass records the order in which the selected layers run and which of them read the very same input
tensor (a Llama block's q/k/v projections, its gate/up projections); such layers form one group.
Then, group after group, the calibration batches run through the model (stopping right after the
group's last layer) with hooks accumulating each layer's input statistics (``X X^T``, or only the
column sums of squares for Wanda), and the group is compressed before the next pass. Nothing stores
activations, so memory is one ``in x in`` matrix per layer of the current group.

Layers are ``nn.Linear`` and Hugging Face's ``Conv1D`` (GPT-2; weight stored ``[in, out]``);
:func:`get_weight` / :func:`set_weight` give every algorithm the ``[out, in]`` view.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

__all__ = ["is_linear", "stores_transposed", "get_weight", "set_weight", "InputStats", "run_batches", "sequential",
           "layer_groups", "linear_check"]


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear`` or Hugging Face's ``Conv1D`` (a transposed linear layer)."""
    return isinstance(module, nn.Linear) or _is_hf_conv1d(module)


def stores_transposed(module: nn.Module) -> bool:
    """Whether the layer keeps its weight as ``[in, out]`` (Hugging Face's ``Conv1D``)."""
    return _is_hf_conv1d(module)


def _is_hf_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(
        getattr(module, "weight", None), nn.Parameter) and module.weight.dim() == 2


def linear_check(name: str, module: nn.Module) -> str | None:
    """Why a one-shot LLM compressor cannot take ``module`` (None when it can)."""
    if not is_linear(module):
        return "it compresses Linear layers (and transformers' Conv1D) only"
    return None


def get_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[out, in]`` (a detached view for Linear, a transposed copy for Conv1D)."""
    weight = module.weight.detach()
    return weight.t().contiguous() if _is_hf_conv1d(module) else weight


def set_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write an ``[out, in]`` weight into the layer in place (its Parameter object is kept)."""
    with torch.no_grad():
        module.weight.copy_(weight.t() if _is_hf_conv1d(module) else weight)


def weight_layout(module: nn.Module, out_in: torch.Tensor) -> torch.Tensor:
    """An ``[out, in]`` tensor (mask) in the layout of the layer's own weight."""
    return out_in.t().contiguous() if _is_hf_conv1d(module) else out_in


@dataclass
class InputStats:
    """Running statistics of one layer's inputs: token count, ``sum x x^T`` (or only ``sum x^2``)."""

    hessian: bool
    tokens: int = 0
    xxt: torch.Tensor | None = None
    sq: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        self.tokens += x.shape[0]
        if self.hessian:
            self.xxt = x.t() @ x if self.xxt is None else self.xxt + x.t() @ x
        sq = (x * x).sum(0)
        self.sq = sq if self.sq is None else self.sq + sq

    def hessian_matrix(self) -> torch.Tensor:
        """``H = 2 X X^T / tokens`` (the layer-wise squared error's Hessian, averaged over tokens)."""
        if self.xxt is None or self.tokens == 0:
            raise ValueError("no calibration input reached this layer")
        return 2 * self.xxt / self.tokens


class _Stop(Exception):
    """Raised after the last layer of a group ran: the rest of the forward pass is not needed."""


def run_batches(model: nn.Module, batches: Sequence[Any]) -> None:
    """Run ``model`` on every batch (a tensor, a tuple of positional tensors, or a dict of keyword tensors)."""
    with torch.no_grad():
        for batch in batches:
            try:
                if isinstance(batch, dict):
                    model(**batch)
                elif isinstance(batch, (tuple, list)):
                    model(*batch)
                else:
                    model(batch)
            except _Stop:
                pass


@contextlib.contextmanager
def _hooks(modules: dict[str, nn.Module], on_input: Callable[[str, torch.Tensor], None],
           stop_after: str | None = None) -> Iterator[None]:
    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(
            lambda _m, args, name=name: on_input(name, args[0])))
    if stop_after is not None:
        def stop(*_: Any) -> None:
            raise _Stop
        handles.append(modules[stop_after].register_forward_hook(stop))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def layer_groups(model: nn.Module, names: Sequence[str], batch: Any) -> list[list[str]]:
    """The selected layers in the order they run, consecutive layers reading the same input grouped.

    A layer that never runs on ``batch`` is an error (it could not be calibrated).
    """
    modules = dict(model.named_modules())
    order: list[tuple[str, torch.Tensor]] = []  # the tensors are kept: an id alone could be reused
    seen: set[str] = set()

    def record(name: str, x: torch.Tensor) -> None:
        if name not in seen:
            seen.add(name)
            order.append((name, x))

    with _hooks({n: modules[n] for n in names}, record):
        run_batches(model, [batch])
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f"layers {missing[:5]} never ran on the calibration batches; they cannot be calibrated")
    groups: list[list[str]] = []
    previous = None
    for name, x in order:
        if groups and x is previous:
            groups[-1].append(name)
        else:
            groups.append([name])
        previous = x
    return groups


@dataclass
class SequentialResult:
    """What the driver saw: the groups it processed, in order."""

    groups: list[list[str]] = field(default_factory=list)


def sequential(model: nn.Module, names: Sequence[str], batches: Sequence[Any],
               process: Callable[[str, nn.Module, InputStats], None], *, hessian: bool) -> SequentialResult:
    """Calibrate and compress ``names`` group by group (module docstring); ``process`` compresses one
    layer in place given its input statistics, before the next group's inputs are gathered."""
    if not batches:
        raise ValueError("no calibration batches")
    modules = dict(model.named_modules())
    result = SequentialResult(layer_groups(model, names, batches[0]))
    for group in result.groups:
        stats = {name: InputStats(hessian) for name in group}
        with _hooks({n: modules[n] for n in group}, lambda n, x: stats[n].add(x), stop_after=group[-1]):
            run_batches(model, batches)
        for name in group:
            process(name, modules[name], stats[name])
    return result
