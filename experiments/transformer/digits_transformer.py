"""A small transformer classifier on scikit-learn's digits, read as 8 tokens of 8 pixels (one per row).

``DigitsTransformer``: each 8-pixel row is a token, embedded to 32 features with a learned position
embedding, two ``nn.TransformerEncoderLayer`` (4 heads, MLP 64, batch first), mean pooling and a
linear head.  Like ``digits_model.py`` the pretrained weights are trained once on first use (about
half a minute on one core) and cached under ``$AUP_CACHE`` (default ``~/.cache/aup``) behind a file
lock, so parallel trials wait for one training instead of racing.  Nothing is downloaded.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aup.compression.torch.zoo import DigitsData, evaluate  # noqa: E402
from digits_model import cache_dir, cached_pretrained, data  # noqa: E402

PRETRAIN_EPOCHS = 30
SEED = 0
CACHE_NAME = f"digits_transformer_e{PRETRAIN_EPOCHS}_s{SEED}_torch{torch.__version__.split('+')[0]}.pt"


class DigitsTransformer(nn.Module):
    """(N, 1, 8, 8) digits -> 8 row tokens -> 2-layer transformer encoder -> 10 classes."""

    def __init__(self, d_model: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.position = nn.Parameter(torch.zeros(1, 8, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, mlp, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1, 2)) + self.position  # (N, 8 rows, 8 pixels) -> (N, 8, d)
        return self.head(self.encoder(tokens).mean(1))


def pretrained_model() -> DigitsTransformer:
    """A DigitsTransformer holding the cached pretrained weights (trained here on first use)."""
    return cached_pretrained(DigitsTransformer, CACHE_NAME, PRETRAIN_EPOCHS)  # type: ignore[return-value]


@dataclass
class Trial:
    """Job config, data, pretrained model, its optimizer, a one-sample dummy input, dense accuracy."""

    config: Any
    digits: DigitsData
    model: DigitsTransformer
    optimizer: torch.optim.Optimizer
    dummy: torch.Tensor
    dense_accuracy: float

    def output_folder(self) -> str:
        import aup

        return aup.output_folder(self.config, prefix="aup-tfm-")  # kept with save_model, else scratch


def start_trial(config_path: str) -> Trial:
    import aup

    config = aup.BasicConfig().load(config_path)
    torch.set_num_threads(1)
    torch.manual_seed(config.get("seed", 0))
    digits = data()
    model = pretrained_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.get("lr", 1e-3))
    dense = evaluate(model, digits.x_test, digits.y_test)
    return Trial(config, digits, model, optimizer, digits.x_train[:1], dense)


if __name__ == "__main__":
    digits = data()
    print(f"pretrained digits transformer: {cache_dir() / CACHE_NAME}, test accuracy "
          f"{evaluate(pretrained_model(), digits.x_test, digits.y_test):.4f}")
