"""Every catalog compressor keeps the written contract of its kind (aup.compression.contracts).

The hooks are abstract on the framework bases, so a class that forgets one cannot be built (the
error names the hook); the Protocols list the rest of what the runner, schedules and views call.
"""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import aup.compression.catalog as catalog
import aup.compression.registry as registry
from aup.compression import contracts
from aup.compression.torch.pruners.base import Pruner
from aup.compression.torch.pruners.structured import FilterPruner


def _members(protocol: type) -> set[str]:
    names = set()
    for klass in protocol.__mro__:
        if klass in (object, contracts.Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")} | set(getattr(klass, "__annotations__", {}))
    return names


def _protocol(entry: catalog.Entry) -> type:
    if entry.framework == "tensorflow":
        return contracts.KerasPruner
    return contracts.Pruner if entry.compression_type == "pruning" else contracts.Quantizer


@pytest.mark.parametrize("entry", [e for e in catalog.ENTRIES if e.framework == "torch" and e.implemented],
                         ids=lambda e: f"{e.framework}-{e.name}")
def test_catalog_class_keeps_its_contract(entry: catalog.Entry) -> None:
    cls = registry.import_entry(entry)
    protocol = entry.name != "transformer" and _protocol(entry)  # the transformer pruner slices blocks itself
    missing = sorted(m for m in _members(protocol or contracts.Compressor) if not hasattr(cls, m))
    assert not missing, f"{cls.__name__} lacks {missing}"
    assert not getattr(cls, "__abstractmethods__", None), f"{cls.__name__} leaves {cls.__abstractmethods__} abstract"
    for base_name, hook in contracts.HOOKS.items():
        if base_name in {k.__name__ for k in cls.__mro__[1:]} and hook not in (contracts.Pruner, contracts.Quantizer):
            assert all(hasattr(cls, m) for m in _members(hook)), (cls.__name__, hook.__name__)
    if issubclass(cls, Pruner):  # a criterion implements calc_mask; a schedule or search calc_masks; AMC its
        # whole policy (compute_masks)
        assert any(getattr(cls, hook) is not getattr(Pruner, hook) for hook in ("calc_mask", "calc_masks",
                                                                                 "compute_masks")), cls.__name__


def test_a_filter_criterion_without_its_hook_is_refused_when_built() -> None:
    class Forgetful(FilterPruner):
        compressor_name = "forgetful"

    model = nn.Sequential(nn.Conv2d(1, 4, 3))
    with pytest.raises(TypeError, match="filter_importance"):
        Forgetful(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])


def test_a_toy_criterion_is_one_hook() -> None:
    class LargestWeight(FilterPruner):
        compressor_name = "largest_weight"

        def filter_importance(self, name: str, module: nn.Module) -> torch.Tensor:
            return self.masked_weight(name, module).flatten(1).abs().amax(1)

    model = nn.Sequential(nn.Conv2d(1, 4, 3))
    pruner = LargestWeight(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    assert isinstance(pruner, contracts.Pruner) and isinstance(pruner, contracts.FilterCriterion)
    pruner.compress()
    assert int(pruner.get_masks()["0"]["weight"].flatten(1).amax(1).sum()) == 2


def test_contracts_import_neither_torch_nor_keras() -> None:
    source = inspect.getsource(contracts)
    runtime = source.split("if TYPE_CHECKING:")[0]
    assert "import torch" not in runtime and "import keras" not in runtime
