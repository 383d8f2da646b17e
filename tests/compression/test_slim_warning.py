"""slim's warning when the one global threshold takes most (not all) of a layer's channels."""
from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

import aup  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402

SLIM_50 = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "slim",
           "config_list": [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]}


def _slim_warnings(bn1_gammas: torch.Tensor, bn2_gammas: torch.Tensor) -> tuple[list[str], dict]:
    model = zoo.DigitsCNN(width=16).eval()  # bn1: 16 channels, bn2: 32
    model.bn1.weight.data.copy_(bn1_gammas)
    model.bn2.weight.data.copy_(bn2_gammas)
    pruner = aup.create_compressor(model, SLIM_50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner.compress()
    return [str(w.message) for w in caught if str(w.message).startswith("slim")], pruner.get_masks()


def test_slim_warns_when_a_layer_with_slightly_smaller_gammas_loses_most_channels():
    generator = torch.Generator().manual_seed(0)
    bn2 = 0.96 + 0.14 * torch.rand(32, generator=generator)
    bn1 = torch.cat([0.90 + 0.05 * torch.rand(14, generator=generator), torch.full((2,), 1.2)])
    notes, masks = _slim_warnings(bn1, bn2)
    assert int(masks["bn1"]["weight"].sum()) == 2 and int(masks["bn2"]["weight"].sum()) == 22
    assert len(notes) == 1 and "removes 14 of 16 channels of bn1" in notes[0] and "scale=" in notes[0]


def test_slim_does_not_warn_when_the_layers_gammas_are_comparable():
    generator = torch.Generator().manual_seed(0)
    notes, masks = _slim_warnings(0.9 + 0.2 * torch.rand(16, generator=generator),
                                  0.9 + 0.2 * torch.rand(32, generator=generator))
    assert notes == []
    assert int(masks["bn1"]["weight"].sum()) + int(masks["bn2"]["weight"].sum()) == 24
