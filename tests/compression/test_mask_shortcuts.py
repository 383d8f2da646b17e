"""Shortcuts the filter pruners take with their masks must not change any mask."""
from __future__ import annotations

import torch
from torch import nn

from aup.compression.torch.masking import MaskStore
from aup.compression.torch.pruners.filter_norm import L1FilterPruner


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))


def test_store_knows_all_ones_masks_until_set_and_after_reset():
    conv = nn.Conv2d(1, 4, 3)
    store = MaskStore()
    store.attach("c", conv)
    assert store.is_ones("c") and store.is_ones("c", "bias")
    mask = torch.ones_like(conv.weight)
    mask[1] = 0
    store.set("c", weight=mask, copy=False)
    assert not store.is_ones("c") and store.is_ones("c", "bias")
    assert store.masks["c"]["weight"] is mask  # handed over, not copied
    assert float(conv.weight.detach()[1].abs().sum()) == 0.0
    store.set("c", weight=mask)
    assert store.masks["c"]["weight"] is not mask  # copied by default
    store.reset()
    assert store.is_ones("c")


def test_to_nni_without_copy_shares_the_stored_tensors():
    conv = nn.Conv2d(1, 4, 3)
    store = MaskStore()
    store.attach("c", conv)
    stored = store.masks["c"]["weight"].data_ptr()
    assert store.to_nni(copy=False)["c"]["weight"].data_ptr() == stored
    assert store.to_nni()["c"]["weight"].data_ptr() != stored


def test_second_round_keeps_first_round_filters_and_matches_a_fresh_pruner():
    model = _model()
    pruner = L1FilterPruner(model, [{"sparsity": 0.25, "op_types": ["Conv2d"]}])
    first = pruner.compute_masks()
    gone = first["0"]["weight"].flatten(1).amax(1) == 0
    second = pruner.compute_masks({"0": 0.5, "3": 0.5})
    now_gone = second["0"]["weight"].flatten(1).amax(1) == 0
    assert bool((now_gone | ~gone).all()) and int(now_gone.sum()) == 4  # grows the pruned set
    # the same second round computed from masks read back (no shortcut) gives the same result
    other = L1FilterPruner(_model(), [{"sparsity": 0.25, "op_types": ["Conv2d"]}])
    other.compute_masks()
    for name, entry in other.masks.masks.items():
        other.masks.set(name, weight=entry["weight"].clone())  # new tensors: the keep-vector cache misses
    again = other.compute_masks({"0": 0.5, "3": 0.5})
    for name in ("0", "3"):
        assert torch.equal(again[name]["weight"], second[name]["weight"])
    assert torch.equal(second["1"]["weight"], (~now_gone).float())  # the BatchNorm after conv 0 follows
