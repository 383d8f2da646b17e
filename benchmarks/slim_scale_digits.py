"""Network slimming at 50% on the digits CNN, with and without sparsity training (``scale``).

Slim ranks every configured BatchNorm's |gamma| against ONE global threshold. Without the paper's L1
penalty on gamma, the scales of different layers are not comparable: on the digits CNN the global
threshold takes every channel of bn1 (its gammas sit slightly below bn2's), and the model falls to
chance until it is fine-tuned. With sparsity training (the paper's method; ``scale`` and
``sparsifying_training_batches``, NNI 2.3's knobs) the L1 subgradient is added to the gamma gradients
while the model trains, and the masks are taken after the last sparsifying batch.

Protocol, per seed, same data and optimizer (Adam, lr 3e-3), DigitsCNN(width=16):

- dense: 4 epochs;
- plain: the dense model, slim 50% at once (NNI 2.0), then 1 fine-tune epoch;
- scale=S: 4 epochs with the slim pruner attached (S added to the gamma gradients for all of
  them), masks after the last batch, then 1 fine-tune epoch.

Prints accuracies per seed and the median gap to dense. Run from the repository root:
``PYTHONPATH=. python benchmarks/slim_scale_digits.py`` (about 30 s of CPU on one core).
"""
from __future__ import annotations

import statistics
import warnings

import torch

import aup
from aup.compression.torch import zoo

EPOCHS = 4
SCALES = (0.01, 0.03)
SEEDS = (0, 1, 2)
CONFIG = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "slim",
          "config_list": [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]}


def _train(model: torch.nn.Module, data: zoo.DigitsData, optimizer: torch.optim.Optimizer, epochs: int,
           first_seed: int) -> None:
    for epoch in range(epochs):
        zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=first_seed + epoch)


def run(data: zoo.DigitsData, seed: int, scale: float | None) -> tuple[float, list[str]]:
    """Accuracy after 50% slim and one fine-tune epoch (``scale`` None: the dense accuracy)."""
    torch.manual_seed(seed)
    model = zoo.DigitsCNN(width=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if scale:
            batches = EPOCHS * ((len(data.y_train) + 63) // 64)
            aup.create_compressor(model, CONFIG, optimizer, scale=scale, sparsifying_training_batches=batches).compress()
        _train(model, data, optimizer, EPOCHS, 10 * seed)
        if scale is None:
            return zoo.evaluate(model, data.x_test, data.y_test), []
        if not scale:
            aup.create_compressor(model, CONFIG, optimizer).compress()
        _train(model, data, optimizer, 1, 10 * seed + EPOCHS)
    notes = sorted({str(w.message).split(";")[0] for w in caught if str(w.message).startswith("slim")})
    return zoo.evaluate(model, data.x_test, data.y_test), notes


def main() -> None:
    torch.set_num_threads(1)
    data = zoo.load_digits_tensors(seed=0)
    dense = {seed: run(data, seed, None)[0] for seed in SEEDS}
    print(f"dense, {EPOCHS} epochs: " + ", ".join(f"{dense[s]:.3f}" for s in SEEDS))
    for scale in (0.0, *SCALES):
        label = "plain (no sparsity training)" if not scale else f"scale={scale} for {EPOCHS} epochs"
        results = {seed: run(data, seed, scale) for seed in SEEDS}
        gaps = [100 * (dense[s] - results[s][0]) for s in SEEDS]
        warned = sorted({n for _, notes in results.values() for n in notes})
        print(f"slim 50% {label:30s} + 1 fine-tune epoch: "
              + ", ".join(f"{results[s][0]:.3f}" for s in SEEDS)
              + f"; median {statistics.median(gaps):.1f} points below dense"
              + (f"; warned: {' | '.join(warned)}" if warned else ""))


if __name__ == "__main__":
    main()
