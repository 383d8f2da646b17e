"""``masking.pruned_channels``: the one answer to "which output channels does this mask remove"."""
from __future__ import annotations

from pathlib import Path

import torch

from aup.compression.torch.masking import filter_mask, pruned_channels


def test_filter_mask_fine_grained_one_dim_and_bool() -> None:
    like = torch.empty(4, 3, 2, 2)
    keep = torch.tensor([True, False, True, False])
    assert pruned_channels(filter_mask(keep, like)).tolist() == [False, True, False, True]
    fine = torch.ones(4, 3, 2, 2)
    fine[1] = 0
    fine[2, 0, 0, 0] = 0  # one zero element does not remove a channel
    assert pruned_channels(fine).tolist() == [False, True, False, False]
    assert pruned_channels(torch.tensor([1.0, 0.0, 1.0])).tolist() == [False, True, False]
    assert pruned_channels(fine != 0).tolist() == [False, True, False, False]
    signed = torch.tensor([[-1.0, 1.0], [0.0, 0.0]])  # a row summing to zero is not a removed filter
    assert pruned_channels(signed).tolist() == [False, True]


def test_no_module_writes_its_own_channel_test() -> None:
    """The idioms the pruners, searches and shrink used to spell out for a mask are gone."""
    root = Path(pruned_channels.__code__.co_filename).parent
    idioms = ("flatten(1).abs().sum(1) == 0", "per_filter(mask).amax(1) == 0", ".ne(0).any(1)")
    found = [f"{path}: {idiom}" for path in root.rglob("*.py") for idiom in idioms if idiom in path.read_text()]
    assert not found, found
