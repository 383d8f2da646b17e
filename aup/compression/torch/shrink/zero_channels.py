"""Which output channels of a layer are exactly zero: the rule that keeps a physical shrink exact.

A channel may be removed only when every producer of its dependency group outputs exact zero there
(eval mode): conv/linear filters with zero weights and bias, BatchNorm channels whose output at a
zero input is zero, depthwise convs without bias, and element-wise ops that keep zero at zero.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Element-wise ops (autograd node names) that map 0 to a non-zero value: a zero channel passing
# through them is no longer zero, so it cannot be removed.
_NONZERO_AT_ZERO = ("Sigmoid", "Exp", "Cos", "Hardsigmoid", "Softplus", "Softmax", "LogSoftmax", "Erfc",
                    "LogSigmoid", "Reciprocal", "Div", "Pow", "Log")
# Layer types whose channels are independent of each other, so removing one leaves the others exact.
CHANNELWISE = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU)


def is_tp_op(module: Any) -> bool:
    return type(module).__module__.startswith("torch_pruning")


def is_source(module: Any) -> bool:
    """Layers whose output channel is computed from all input channels (not a per-channel pass)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return not is_depthwise(module)
    return isinstance(module, nn.Linear)


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.out_channels


@torch.no_grad()
def zero_channels(module: Any, has_source: bool, masked: list[bool] | None = None
                   ) -> tuple[torch.Tensor, str | None]:
    """Per output channel: does this producer output exact zero when its zero-channel inputs are zero?"""
    if is_tp_op(module):
        op = str(getattr(module, "_grad_fn", ""))
        if any(bad in op for bad in _NONZERO_AT_ZERO):
            return torch.zeros(0, dtype=torch.bool), f"{op} maps zero to a non-zero value"
        return AllTrue(), None
    if not isinstance(module, CHANNELWISE):
        return torch.zeros(0, dtype=torch.bool), f"{type(module).__name__} mixes channels (not supported)"
    bias = getattr(module, "bias", None)
    bias_zero = bias.detach() == 0 if isinstance(bias, torch.Tensor) else None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _bn_output_at_zero(module) == 0, None
    if isinstance(module, nn.PReLU):
        return AllTrue(), None
    if masked is not None and is_source(module):  # masks were applied: masked filters are zero
        zero = torch.tensor(masked, dtype=torch.bool)
        return (zero & bias_zero if bias_zero is not None else zero), None
    weight = module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if module.groups != 1:
            return torch.zeros(0, dtype=torch.bool), "grouped transposed conv (not supported)"
        weight = weight.transpose(0, 1)
    zero = weight.flatten(1).abs().amax(1) == 0
    if is_depthwise(module) and has_source:
        zero = torch.ones_like(zero)  # its input channel is zero whenever the group's sources are
    return (zero & bias_zero if bias_zero is not None else zero), None


class AllTrue:
    """Channel-independent, zero-preserving op: it never blocks a channel."""

    def __getitem__(self, idx: int) -> bool:
        return True


def _bn_output_at_zero(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Eval-mode BatchNorm output for a constant-zero input channel."""
    n = bn.num_features
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(n)
    var = bn.running_var if bn.running_var is not None else torch.zeros(n)
    weight = bn.weight.detach() if bn.weight is not None else torch.ones(n)
    bias = bn.bias.detach() if bn.bias is not None else torch.zeros(n)
    return bias - mean * weight / torch.sqrt(var + bn.eps)
