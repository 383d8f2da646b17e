"""The pretrained Keras digits CNN the TensorFlow examples start from, trained once and cached.

Nothing is downloaded and no binary is committed: the first trial trains the CNN below on
scikit-learn's bundled 8x8 digits (a few seconds) and saves its weights under ``$AUP_CACHE``
(default ``~/.cache/aup``); later trials load them. A file lock makes parallel trials wait for one
training instead of racing. Layer names follow Auptimizer's MNIST examples (conv1, conv2, fc1, fc2),
so ``op_names`` written for those examples select the same layers here.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

PRETRAIN_EPOCHS = 15
SEED = 0
CACHE_NAME = f"digits_keras_e{PRETRAIN_EPOCHS}_s{SEED}_keras{keras.__version__}_{keras.backend.backend()}.weights.h5"


class Digits(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def data() -> Digits:
    """The fixed 80/20 split of the digits as NHWC float32 images in [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order].astype("int64")
    cut = int(0.8 * len(x))
    return Digits(x[:cut], y[:cut], x[cut:], y[cut:])


def build_model() -> keras.Model:
    """A small CNN (about 38k parameters) with Auptimizer-style layer names."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2"),
    ], name="digits_cnn")


def compile_model(model: keras.Model, lr: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy."""
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def cache_dir() -> Path:
    return Path(os.environ.get("AUP_CACHE", Path.home() / ".cache" / "aup"))


def pretrained_model() -> keras.Model:
    """A fresh model holding the cached pretrained weights (trained here on first use)."""
    path = cache_dir() / CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains, the others wait and load
        if not path.exists():
            model = _pretrain()
            tmp = path.parent / f"tmp-{os.getpid()}.weights.h5"
            model.save_weights(tmp)
            os.replace(tmp, path)
    model = build_model()
    model.load_weights(path)
    return model


def _pretrain() -> keras.Model:
    keras.utils.set_random_seed(SEED)
    digits = data()
    model = build_model()
    compile_model(model, 3e-3)
    model.fit(digits.x_train, digits.y_train, epochs=PRETRAIN_EPOCHS, batch_size=32, verbose=0)
    return model


if __name__ == "__main__":
    digits = data()
    print(f"pretrained Keras digits CNN: {cache_dir() / CACHE_NAME}, "
          f"test accuracy {evaluate(pretrained_model(), digits.x_test, digits.y_test):.4f}")
