"""torch-pruning's dependency graph traced on the meta device: shapes only, no arithmetic.

The graph depends only on which ops connect which modules, so meta (shape-only) parameters, buffers
and inputs give the graph of a real trace (``torch.func.functional_call`` keeps the model's own
modules as the graph's keys). On the meta device torch computes the shapes of most element-wise ops
(batch norm, ReLU6, ...) with Python reference implementations, 0.3-0.9 ms per call against 25 us
for a convolution: that bookkeeping was three quarters of a meta trace of ResNet-50. So for the
trace, modules whose output has their input's shape and channels and whose only autograd input
besides their own parameters is that input (batch, layer and group norm, zero-preserving
activations) run as one ``clone``: the autograd graph keeps the same edges, torch-pruning maps the
node to the same module (the norms) or sees an element-wise op (activations) as before, and the
trace costs a few milliseconds.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
import torch_pruning as tp
from torch import nn

# exact classes whose forward is the stock one: one autograd op, shape-preserving, channel-wise,
# f(0) = 0 (so a zero channel stays removable, whatever autograd name the stand-in's node carries).
# Not Identity or eval-mode Dropout: they add no node to the graph, a clone would.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Tanh)


def meta_graph(model: nn.Module, dummy_input: Any) -> tp.DependencyGraph | None:
    """The graph traced with meta parameters, buffers and inputs (the modules themselves, so the
    graph's keys are the model's modules); None when the model does not run that way."""
    from torch.func import functional_call

    state = {k: torch.empty_like(v, device="meta").requires_grad_(v.requires_grad)
             for k, v in model.named_parameters(remove_duplicate=False)}
    state.update({k: torch.empty_like(v, device="meta") for k, v in model.named_buffers(remove_duplicate=False)})

    def forward(m: nn.Module, x: Any) -> Any:
        if isinstance(x, Mapping):
            return functional_call(m, state, (), x, strict=True)
        return functional_call(m, state, tuple(x) if isinstance(x, (tuple, list)) else (x,), strict=True)

    try:
        with torch.enable_grad(), _shape_only_stand_ins(model):  # torch-pruning follows the autograd graph
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=_to_meta(dummy_input),
                                                          forward_fn=forward, verbose=False)
    except Exception:  # noqa: BLE001 - value-dependent forward or a plain tensor attribute: trace for real
        return None
    # parameters used outside their module are matched by identity, which the meta copies lose
    return None if graph.unwrapped_parameters else graph


def _stands_in(module: nn.Module) -> bool:
    """Whether ``module`` may run as a ``clone`` of its input in a meta trace."""
    kind = type(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):  # BatchNorm1d/2d/3d: the stock forward only
        return kind.forward is nn.modules.batchnorm._BatchNorm.forward
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):  # mapped to their module by torch-pruning too
        return kind.forward in (nn.LayerNorm.forward, nn.GroupNorm.forward)
    if kind is nn.Hardtanh:
        return module.min_val <= 0 <= module.max_val
    return kind in _ACTIVATIONS


class _CloneOnMeta:
    """Forward stand-in: a meta input that autograd tracks comes back as its clone (one graph node
    with the input as its only edge); anything else runs the module's own forward."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and isinstance(x, torch.Tensor) and x.is_meta and x.grad_fn is not None:
            return x.clone()
        return self.forward(x, *args, **kwargs)


@contextlib.contextmanager
def _shape_only_stand_ins(model: nn.Module) -> Iterator[None]:
    """Give the stand-in modules a :class:`_CloneOnMeta` forward (an instance attribute) for the trace."""
    swapped: list[tuple[nn.Module, Any]] = []
    try:
        for module in model.modules():
            if _stands_in(module):
                swapped.append((module, module.__dict__.get("forward")))
                module.__dict__["forward"] = _CloneOnMeta(module.forward)
        yield
    finally:
        for module, own in swapped:
            if own is None:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = own


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, Mapping):
        return {k: _to_meta(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to_meta(v) for v in x)
    return x
