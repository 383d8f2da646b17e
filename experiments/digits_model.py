"""The pretrained digits CNN every compression example starts from, trained once and cached.

Nothing is downloaded and no binary is committed: the first trial that needs the model trains
``aup.compression.torch.zoo.DigitsCNN`` on scikit-learn's bundled 8x8 digits (a few seconds on one
CPU core) and saves the weights under ``$AUP_CACHE`` (default ``~/.cache/aup``); later trials load
them. A file lock makes parallel trials wait for one training instead of racing.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from aup.compression.torch.zoo import DigitsCNN, DigitsData, evaluate, load_digits_tensors, train_epoch

PRETRAIN_EPOCHS = 12
SEED = 0
CACHE_NAME = f"digits_cnn_e{PRETRAIN_EPOCHS}_s{SEED}_torch{torch.__version__.split('+')[0]}.pt"


def cache_dir() -> Path:
    """Where the pretrained weights live (``AUP_CACHE`` or ``~/.cache/aup``)."""
    return Path(os.environ.get("AUP_CACHE", Path.home() / ".cache" / "aup"))


def data() -> DigitsData:
    """The fixed train/test split of the digits (same in every trial)."""
    return load_digits_tensors(seed=SEED)


def pretrained_model() -> torch.nn.Module:
    """A fresh DigitsCNN holding the cached pretrained weights (trained here on first use)."""
    torch.manual_seed(SEED)
    return cached_pretrained(DigitsCNN, CACHE_NAME, PRETRAIN_EPOCHS)


def cached_pretrained(build: Callable[[], torch.nn.Module], cache_name: str, epochs: int) -> torch.nn.Module:
    """A fresh ``build()`` model holding the weights cached under ``cache_name``.

    The first caller trains them (``epochs`` of Adam on the digits) while the others wait on a file
    lock and then load them, so parallel trials never train the same model twice.
    """
    path = cache_dir() / cache_name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains, the others wait and load
        if not path.exists():
            model = _pretrain(build, epochs)
            tmp = path.with_suffix(".tmp")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
    model = build()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def _pretrain(build: Callable[[], torch.nn.Module], epochs: int) -> torch.nn.Module:
    torch.manual_seed(SEED)
    digits = data()
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
    return model


@dataclass
class Trial:
    """What every compression trial script starts from: its job config, the data, the pretrained
    model, an optimizer over it, and a one-sample dummy input for tracing/shrinking."""

    config: Any
    digits: DigitsData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    dummy: torch.Tensor
    dense_accuracy: float  # test accuracy before compression, logged as ``baseline_score`` so that
    # constraints like ``"score": ">= baseline_score - 0.01"`` can be stated

    @property
    def epochs(self) -> int:
        """Fine-tune epochs: the hyperband/bohb budget (``n_iterations``) if any, else ``epochs``."""
        return int(self.config.get("n_iterations", self.config.get("epochs", 1)))

    def output_folder(self) -> str:
        """``aup_models/<folder_name>`` when the runner asks to keep the model (``save_model``), else a
        scratch folder removed when the trial ends (``aup.output_folder``)."""
        import aup

        return aup.output_folder(self.config, prefix="aup-digits-")


def start_trial(config_path: str, default_lr: float = 0.005) -> Trial:
    """Load the job config, seed, and build the pretrained model and its SGD optimizer (one thread:
    trials run side by side)."""
    import aup

    config = aup.BasicConfig().load(config_path)
    torch.set_num_threads(1)
    torch.manual_seed(config.get("seed", 0))
    digits = data()
    model = pretrained_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.get("lr", default_lr), momentum=0.9)
    dense = evaluate(model, digits.x_test, digits.y_test)  # the model as loaded, before compression
    return Trial(config, digits, model, optimizer, digits.x_train[:1], dense)


def dense_accuracy() -> float:
    """Test accuracy of the pretrained model (the baseline the examples compare against)."""
    digits = data()
    return evaluate(pretrained_model(), digits.x_test, digits.y_test)


if __name__ == "__main__":
    print(f"pretrained digits CNN: {cache_dir() / CACHE_NAME}, test accuracy {dense_accuracy():.4f}")
