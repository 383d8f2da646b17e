"""Per-layer allocation vs uniform sparsity at the same global target, on a six-conv CNN on digits.

``compression.allocation`` splits one searched global sparsity over the layers by a sensitivity
profile. Before a search benefits from it, the split itself must beat the uniform one at equal
size: this measures it without a search.

Protocol, per seed (3), same data: a VGG-style CNN with six 3x3 convs (16, 16, M, 32, 32, M, 64, 64)
trained 6 epochs (Adam 3e-3); then, for global sparsities 0.3 / 0.5 / 0.7 of the convs' weights, L1
filter pruning of every conv with

- ``uniform``: every conv at the global value;
- ``sensitivity (weights)``: the data-free profile (no ``dummy_input``);
- ``sensitivity (outputs)``: the profile on 64 training images passed as ``dummy_input``;

test accuracy right after pruning and after one fine-tune epoch (SGD 0.01, momentum 0.9), and the
conv weights left (each method prunes whole filters, so the achieved share differs slightly from the
target). Prints the medians over the seeds. Run from the repository root:
``PYTHONPATH=. python benchmarks/allocation_digits.py`` (about a minute of CPU on one core).
"""
from __future__ import annotations

import copy
import statistics
import warnings

import torch
from torch import nn

import aup
from aup.compression.torch import zoo

SEEDS = (0, 1, 2)
TARGETS = (0.3, 0.5, 0.7)
METHODS = ("uniform", "sensitivity (weights)", "sensitivity (outputs)")
CFG = (16, 16, "M", 32, 32, "M", 64, 64)


def _trained(seed: int, data: zoo.DigitsData) -> nn.Module:
    torch.manual_seed(seed)
    model = zoo.VGGSmall(10, 1, CFG)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):
        zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=100 * seed + epoch)
    return model


def _conv_weights_left(model: nn.Module) -> int:
    return sum(int((m.weight != 0).sum()) for m in model.modules() if isinstance(m, nn.Conv2d))


def _prune(dense: nn.Module, method: str, target: float, data: zoo.DigitsData) -> tuple[float, float, float]:
    model = copy.deepcopy(dense)
    option = "uniform" if method == "uniform" else "sensitivity"
    config = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
              "config_list": [{"sparsity": target, "op_types": ["Conv2d"]}],
              "compression_allocation": {"method": option, "max_sparsity": 0.9}}
    kwargs = {"dummy_input": data.x_train[:64]} if method.endswith("(outputs)") else {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressor = aup.create_compressor(model, config, optimizer, **kwargs)
        compressor.compress()
    left = _conv_weights_left(model) / _conv_weights_left(dense)
    pruned = zoo.evaluate(model, data.x_test, data.y_test)
    zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=7)
    return pruned, zoo.evaluate(model, data.x_test, data.y_test), left


def main() -> None:
    torch.set_num_threads(1)
    data = zoo.load_digits_tensors(seed=0)
    results: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    dense_accuracy = []
    for seed in SEEDS:
        dense = _trained(seed, data)
        dense_accuracy.append(zoo.evaluate(dense, data.x_test, data.y_test))
        for target in TARGETS:
            for method in METHODS:
                results.setdefault((method, target), []).append(_prune(dense, method, target, data))
    print(f"dense accuracy (median of {len(SEEDS)} seeds): {statistics.median(dense_accuracy):.4f}")
    print(f"{'global':>6}  {'method':<22} {'acc. pruned':>11} {'acc. +1 epoch':>13} {'conv weights left':>17}")
    for target in TARGETS:
        for method in METHODS:
            rows = results[(method, target)]
            pruned, tuned, left = (statistics.median(r[i] for r in rows) for i in range(3))
            print(f"{target:>6.1f}  {method:<22} {pruned:>11.4f} {tuned:>13.4f} {left:>17.3f}")


if __name__ == "__main__":
    main()
