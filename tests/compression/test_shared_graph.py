"""One torch-pruning graph per pruner: dependency-aware masks and apply_speedup trace the model once."""
from __future__ import annotations

import torch

import aup
from aup.compression.torch import zoo
from aup.compression.torch.graph import dependency

L1_HALF = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
           "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}


def _counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = dependency.build_graph
    monkeypatch.setattr(dependency, "build_graph", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_dependency_aware_prune_and_shrink_trace_once(monkeypatch):
    calls = _counting(monkeypatch)
    torch.manual_seed(0)
    model = zoo.resnet_small(in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)
    pruner = aup.create_compressor(model, L1_HALF, dependency_aware=True, dummy_input=x)
    pruner.compress()
    with torch.no_grad():
        masked = model(x)
    pruner.apply_speedup(x)
    assert len(calls) == 1  # shared by the dependency sets and the shrink (which builds no graph of its own)
    assert pruner.shrink_report.params_after < pruner.shrink_report.params_before
    assert pruner.shrink_report.max_abs_diff <= 1e-4
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-4)
    assert pruner.graph.current(model) is None  # invalidated: the structure changed


def test_graph_is_rebuilt_when_the_structure_changes():
    model = zoo.DigitsCNN()
    x = torch.randn(1, 1, 8, 8)
    shared = dependency.SharedGraph()
    first = shared.get(model, x)
    assert shared.get(model, x) is first and shared.current(model) is first
    model.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)  # same shape, new module: a new structure
    assert shared.current(model) is None
    assert shared.get(model, x) is not first


def test_groups_are_not_reused_across_concatenation():
    class Cat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(1, 4, 3)
            self.c = torch.nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    graph = dependency.SharedGraph().get(Cat(), torch.randn(1, 1, 6, 6))
    assert graph.aup_groups is None  # concat offsets shift when another group is pruned first
