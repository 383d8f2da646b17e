"""The digits data (scikit-learn's bundled 8x8 digits, no download) and a digits CNN trained on it.

A trained model matters for tests whose result depends on weights that mean something (a pruner
ranking filters, a fine-tune recovering accuracy); 4 epochs on one thread take a few seconds.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from aup.compression.torch import zoo
from aup.compression.torch.zoo import DigitsData, evaluate, load_digits_tensors

__all__ = ["DigitsData", "load_digits_tensors", "evaluate", "Pretrained", "train_digits_cnn"]


class Pretrained(NamedTuple):
    """A trained digits CNN: its weights, the data it saw and its test accuracy."""

    state: dict[str, torch.Tensor]
    data: DigitsData
    accuracy: float
    width: int = 8

    def model(self) -> nn.Module:
        """A fresh DigitsCNN holding the trained weights (each call a new copy)."""
        model = zoo.DigitsCNN(width=self.width)
        model.load_state_dict(self.state)
        return model


def train_digits_cnn(data: DigitsData | None = None, *, width: int = 8, epochs: int = 4,
                     seed: int = 0) -> Pretrained:
    """Train ``DigitsCNN(width)`` with Adam (lr 1e-2) on one thread, deterministic for a seed."""
    data = load_digits_tensors(seed=seed) if data is None else data
    torch.manual_seed(seed)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = zoo.DigitsCNN(width=width)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for epoch in range(epochs):
            zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=epoch)
    finally:
        torch.set_num_threads(previous)
    return Pretrained(copy.deepcopy(model.state_dict()), data, evaluate(model, data.x_test, data.y_test), width)
