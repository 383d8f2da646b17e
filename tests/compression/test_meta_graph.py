"""The dependency graph is traced on the meta device (no forward computed) when the model allows it."""
from __future__ import annotations

import re

import torch
import torch_pruning as tp
from torch import nn

import aup
from aup.compression.torch import zoo
from aup.compression.torch.graph import dependency

L1_HALF = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
           "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}


class _Cat(nn.Module):
    """Concatenation and a residual add: index mappings with offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(10, 10, 1)
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        return self.head((self.c(y) + y).mean((2, 3)))


class _ValueBranch(nn.Module):
    """The forward reads a value: cannot run on shape-only tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) if float(y.detach().sum()) > -1e9 else y


class _Unwrapped(nn.Module):
    """A parameter used outside any prunable module (torch-pruning matches it by identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        return self.conv(x) * self.scale


class _NormMLP(nn.Module):
    """Linear layers around LayerNorm, GroupNorm and GELU (all run as stand-ins on meta)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gn = nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)
        self.fc1, self.ln, self.act, self.fc2 = nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4)

    def forward(self, x):
        y = self.gn(self.conv(x)).mean((2, 3))
        return self.fc2(self.act(self.ln(self.fc1(y))))


def _signature(graph: tp.DependencyGraph) -> list:
    """Every conv's and linear's group: dependencies, indices, root indices. Element-wise ops are compared by
    position, not by their autograd name (the meta trace runs zero-preserving activations as a
    clone, see ``meta_trace``)."""
    out = []
    for module in graph.module2node:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handler = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
            channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            group = graph.get_pruning_group(module, handler, list(range(channels)))
            out.append([(re.sub(r"(_ElementWiseOp_\d+)\(\w+\)", r"\1", str(i.dep)), list(i.idxs), list(i.root_idxs))
                        for i in group.items])
    return out


class _Gated(nn.Module):
    """A sigmoid (not zero-preserving) and a BatchNorm subclass with its own forward: both run for real."""

    class _ScaledBN(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.gate = nn.Conv2d(3, 4, 3), self._ScaledBN(4), nn.Sigmoid()
        self.act, self.drop, self.head = nn.ReLU(), nn.Dropout(), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.drop(self.gate(self.act(self.bn(self.conv(x))))))


def test_meta_graph_has_the_groups_of_a_real_trace():
    for model, x in ((zoo.resnet_small(in_channels=1).eval(), torch.randn(1, 1, 16, 16)),
                     (zoo.mobilenetv2_small(num_classes=10).eval(), torch.randn(1, 3, 32, 32)),
                     (_Cat().eval(), torch.randn(1, 3, 8, 8)), (_NormMLP().eval(), torch.randn(1, 3, 6, 6))):
        meta = dependency.meta_graph(model, x)
        assert meta is not None
        real = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
        assert _signature(meta) == _signature(real)
        assert all(not p.is_meta for p in model.parameters())  # the model keeps its real weights


def test_meta_trace_stands_in_only_for_zero_preserving_stock_modules():
    model = _Gated().eval()
    x = torch.randn(1, 3, 8, 8)
    names = [str(n.module) for n in dependency.meta_graph(model, x).module2node.values()]
    assert any("SigmoidBackward0" in n for n in names)  # still the real op: it maps zero to 0.5
    assert any("NativeBatchNormBackward0" in n for n in names)  # the subclass' own forward ran
    assert _signature(dependency.meta_graph(model, x)) == \
           _signature(tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False))
    assert "forward" not in model.bn.__dict__ and "forward" not in model.act.__dict__  # stand-ins removed


def test_models_that_need_values_are_traced_for_real():
    for model in (_ValueBranch(), _Unwrapped()):
        x = torch.randn(1, 1, 8, 8)
        assert dependency.meta_graph(model, x) is None
        graph = dependency.build_graph(model, x)
        assert model.conv if isinstance(model, _Unwrapped) else model.a in graph.module2node


def test_meta_trace_leaves_masks_and_calibration_inputs_real():
    """No meta tensor left behind, and aup's trace is not a calibration batch."""
    torch.manual_seed(0)
    model = zoo.resnet_small(in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)
    pruner = aup.create_compressor(model, L1_HALF, dependency_aware=True, dummy_input=x)
    pruner.compress()  # masks attached (forward pre-hooks) before the graph is traced
    assert all(m is None or not m.is_meta for entry in pruner.masks.masks.values() for m in entry.values())
    from aup.compression.torch.deploy.settings import CalibrationRecorder

    recorders = [h for h in model._forward_pre_hooks.values() if isinstance(h, CalibrationRecorder)]
    assert all(r.first is None for r in recorders)  # aup's own forward passes are not calibration data
    with torch.no_grad():
        masked = model(x)
    pruner.apply_speedup(x)
    assert pruner.shrink_report.params_after < pruner.shrink_report.params_before
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-4)


def test_value_dependent_model_still_shrinks_exactly():
    torch.manual_seed(0)
    model = _ValueBranch().eval()
    x = torch.randn(1, 1, 10, 10)
    pruner = aup.create_compressor(model, {**L1_HALF, "config_list": [{"sparsity": 0.5, "op_names": ["a"]}]},
                                   dummy_input=x)
    pruner.compress()
    with torch.no_grad():
        masked = model(x)
    pruner.apply_speedup(x)
    assert model.a.out_channels == 2
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-4)

