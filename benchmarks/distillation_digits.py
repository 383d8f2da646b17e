"""How much of the accuracy lost to pruning distillation from the dense model wins back.

For each seed: train the digits CNN (dense), prune 80 % of the filters of both convolutions
(``l1_filter``, sparsity 0.8), fine-tune the masked model for ``--epochs`` epochs with the label loss
only and, from the same pruned start, with ``compressor.distill_loss`` (teacher: the dense model),
then shrink (``apply_speedup``) and evaluate on the held-out digits. Reported per seed and as the
median over seeds: the accuracy gap between plain fine-tuning and dense, and the share of that gap
distillation recovers, ``(acc_distill - acc_plain) / (acc_dense - acc_plain)``.

    python benchmarks/distillation_digits.py            # 3 seeds, 2 epochs, lr 0.01/0.05 x alpha 0.5/0.7 x T 4/8
    python benchmarks/distillation_digits.py --seeds 5 --epochs 1 --lrs 0.05
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from aup.compression import create_compressor
from aup.compression.torch.zoo import DigitsCNN, evaluate, load_digits_tensors, train_epoch

PRUNE = {"compression_framework": "torch", "compression_type": "pruning", "compressor": "l1_filter",
         "config_list": [{"sparsity": 0.8, "op_types": ["Conv2d"]}]}


def dense_model(seed: int, data) -> torch.nn.Module:
    """The digits CNN trained from scratch with ``seed`` (12 epochs of Adam, as the examples do)."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(12):
        train_epoch(model, data.x_train, data.y_train, optimizer, seed=1000 * seed + epoch)
    return model


SECONDS: dict[str, list[float]] = {"plain": [], "distill": []}  # fine-tuning wall time, for the cost ratio


def fine_tuned(dense: torch.nn.Module, data, epochs: int, seed: int, distill: dict | None, lr: float) -> float:
    """Test accuracy after pruning a copy of ``dense``, fine-tuning it and shrinking it."""
    model = copy.deepcopy(dense)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    config = {**PRUNE, "compression_distill": distill} if distill else PRUNE
    compressor = create_compressor(model, config, optimizer)
    compressor.compress()
    start = time.perf_counter()
    for epoch in range(epochs):
        compressor.update_epoch(epoch)
        train_epoch(model, data.x_train, data.y_train, optimizer, seed=seed * 100 + epoch,
                    loss_hook=compressor.distill_loss)
    if epochs:
        SECONDS["distill" if distill else "plain"].append(time.perf_counter() - start)
    compressor.apply_speedup(data.x_train[:1])
    return evaluate(model, data.x_test, data.y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[4.0, 8.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_digits_tensors(seed=0)
    settings = [(a, t) for t in args.temperatures for a in args.alphas]
    rows = []
    for seed in range(args.seeds):
        dense = dense_model(seed, data)
        acc_dense = evaluate(dense, data.x_test, data.y_test)
        for lr in args.lrs:
            acc_plain = fine_tuned(dense, data, args.epochs, seed, None, lr)
            accs = [fine_tuned(dense, data, args.epochs, seed, {"alpha": a, "temperature": t}, lr) for a, t in settings]
            rows.append((seed, lr, acc_dense, acc_plain, accs))
    print(f"l1_filter sparsity 0.8 on both convs, fine-tuned {args.epochs} epoch(s) (SGD, momentum 0.9), "
          f"{args.seeds} seeds; test accuracy on {len(data.y_test)} held-out digits\n")
    print("| lr | dense | fine-tuned | " + " | ".join(f"+ distill a={a:g} T={t:g}" for a, t in settings) + " |")
    print("|---" * (3 + len(settings)) + "|")
    for lr in args.lrs:
        mine = [r for r in rows if r[1] == lr]
        cells = []
        for k in range(len(settings)):
            shares = [(r[4][k] - r[3]) / (r[2] - r[3]) for r in mine if r[2] > r[3]]
            median = statistics.median(shares) if shares else float("nan")
            cells.append(f"{statistics.median(r[4][k] for r in mine):.4f} (gap share {median:+.2f})")
        print(f"| {lr:g} | {statistics.median(r[2] for r in mine):.4f} | {statistics.median(r[3] for r in mine):.4f} | "
              + " | ".join(cells) + " |")
    print("\nmedians over seeds; gap share = (distilled - fine-tuned) / (dense - fine-tuned), median over seeds")
    print(f"fine-tuning time with distillation / without (medians, same run): "
          f"{statistics.median(SECONDS['distill']) / statistics.median(SECONDS['plain']):.2f}x")


if __name__ == "__main__":
    main()
