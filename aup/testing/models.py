"""Tiny reference models for tests and examples: built in code, seconds to train on the digits.

``DigitsCNN`` (two conv + BatchNorm blocks, 8x8 inputs) is the model the compression tests prune;
``NNITestModel`` is NNI 2.0's own compressor test model, so that masks can be compared with NNI's
numbers; ``TokenClassifier`` is the smallest transformer the head/MLP pruner and the language-model
compressors accept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aup.compression.torch.zoo import DigitsCNN

__all__ = ["DigitsCNN", "NNITestModel", "TinyEncoder", "TokenClassifier", "model_for"]


class NNITestModel(nn.Module):
    """NNI 2.0's TorchModel from its compressor tests: conv1 has 5 filters of 1x5x5 (25 weights),
    conv2 10 filters of 5x5x5 (125); the activations are named modules so outputs can be quantized."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 5, 5, 1)
        self.bn1 = nn.BatchNorm2d(5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(5, 10, 5, 1)
        self.bn2 = nn.BatchNorm2d(10)
        self.relu2 = nn.ReLU()
        self.fc1 = nn.Linear(4 * 4 * 10, 100)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu1(self.bn1(self.conv1(x))), 2, 2)
        x = F.max_pool2d(self.relu2(self.bn2(self.conv2(x))), 2, 2)
        x = self.relu3(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


class TinyEncoder(nn.Module):
    """Four 4-feature tokens through one encoder layer (attention, LayerNorms, MLP) and a linear head:
    the smallest model whose ONNX export has attention's shape arithmetic and packed q/k/v weights."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x)).mean(1))


class TokenClassifier(nn.Module):
    """A two-layer transformer encoder (4 heads, MLP 64) over 8 tokens of 8 features -> 10 classes
    (an 8x8 digit read as 8 tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


def model_for(family: str, width: int = 8) -> nn.Module:
    """The reference model of a catalog entry's ``model_family`` (``"cnn"`` or ``"transformer"``)."""
    if family == "transformer":
        return TokenClassifier()
    return DigitsCNN(width=width)
