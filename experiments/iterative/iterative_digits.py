#!/usr/bin/env python
"""Trial script for the iterative pruners (agp, lottery_ticket, admm, sensitivity) on the digits CNN.

The runner passes the job config path; the config holds the concrete compression keys
(``compression_framework``, ``compression_type``, ``compressor``, ``config_list``, optional
``compressor_args`` such as ``pruning_algorithm`` or ``num_iterations``) and optional training keys
(``lr``, ``epochs``, ``finetune_epochs``). Each compressor is driven the way its seed example shows:

- agp: ``compress()``, then train an epoch and ``update_epoch(epoch)`` for epochs 1..N;
- lottery_ticket: from the *untrained* network, ``for _ in get_prune_iterations(): prune_iteration_start();
  train``;
- admm: ``compress()`` runs the ADMM training with the ``trainer`` below, then fine-tune;
- sensitivity: ``compress(eval_args=[model], finetune_args=[model])`` with a validation split, then fine-tune.

Then ``apply_speedup`` (physical shrink where the masks are structured), test accuracy,
``export_model`` (reports the measured size metrics) and ``print_result(accuracy)``.
Run by hand: ``python iterative_digits.py job.json`` with a job config such as the runner writes
(``jobs/<trial>.json``: ``{"compression_framework": "torch", "compression_type": "pruning",
"compressor": "agp", "config_list": [...], "compressor_args": {...}}``).
"""
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch.zoo import DigitsCNN, evaluate, train_epoch  # noqa: E402
from digits_model import SEED, data, pretrained_model  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
config = aup.BasicConfig().load(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(config.get("seed", SEED))
digits = data()
n_val = len(digits.y_train) // 5  # validation split for the searches; the test set is only reported
x_fit, y_fit = digits.x_train[n_val:], digits.y_train[n_val:]
x_val, y_val = digits.x_train[:n_val], digits.y_train[:n_val]
LR = float(config.get("lr", 0.01))


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def run_agp():
    model = pretrained_model()
    optimizer = sgd(model)
    compressor = aup.create_compressor(model, config, optimizer)
    compressor.compress()
    for epoch in range(1, int(config.get("epochs", 6)) + 1):
        train_epoch(model, x_fit, y_fit, optimizer, seed=epoch,
                    loss_hook=compressor.distill_loss)
        compressor.update_epoch(epoch)
        print(f"epoch {epoch}: sparsity {compressor.sparsity():.3f}, val acc {evaluate(model, x_val, y_val):.4f}")
    return model, compressor


def run_lottery_ticket():
    torch.manual_seed(SEED)
    model = DigitsCNN()  # the ticket is searched from the initial weights
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    compressor = aup.create_compressor(model, config, optimizer=optimizer, lr_scheduler=scheduler)
    compressor.compress()
    for _ in compressor.get_prune_iterations():
        compressor.prune_iteration_start()
        for epoch in range(int(config.get("epochs", 4))):
            train_epoch(model, x_fit, y_fit, optimizer, seed=epoch)
            scheduler.step()
        print(f"round {compressor.curr_prune_iteration}: sparsity {compressor.sparsity():.3f}, "
              f"val acc {evaluate(model, x_val, y_val):.4f}")
    return model, compressor


def admm_trainer(model, optimizer, criterion, epoch, callback):
    """NNI's trainer contract: one epoch, ``callback()`` between backward and step."""
    model.train()
    perm = torch.randperm(len(y_fit), generator=torch.Generator().manual_seed(epoch))
    for start in range(0, len(perm), 64):
        idx = perm[start:start + 64]
        optimizer.zero_grad()
        criterion(model(x_fit[idx]), y_fit[idx]).backward()
        if callback:
            callback()
        optimizer.step()


def fine_tune(model, compressor, epochs):
    optimizer = sgd(model)
    for epoch in range(epochs):
        train_epoch(model, x_fit, y_fit, optimizer, seed=100 + epoch, callback=lambda m: compressor.step(),
                    loss_hook=compressor.distill_loss)


def run_admm():
    model = pretrained_model()
    compressor = aup.create_compressor(model, config, trainer=admm_trainer)
    compressor.compress()
    print(f"ADMM ||W-Z||/||W|| per iteration: {[round(r, 4) for r in compressor.admm.primal_residuals]}")
    print(f"pruned: val acc {evaluate(model, x_val, y_val):.4f}")
    fine_tune(model, compressor, int(config.get("finetune_epochs", 2)))
    return model, compressor


def run_sensitivity():
    model = pretrained_model()

    def evaluator(m):
        return evaluate(m, x_val, y_val)

    def finetuner(m):
        train_epoch(m, x_fit, y_fit, sgd(m), seed=7)

    compressor = aup.create_compressor(model, config, evaluator=evaluator, finetuner=finetuner)
    compressor.compress(eval_args=[model], finetune_args=[model])
    for record in compressor.history:
        print(f"round {record['round']}: sparsity {record['sparsity']:.3f}, val acc "
              f"{record['pruned_acc']:.4f} -> {record['finetuned_acc']:.4f}")
    fine_tune(model, compressor, int(config.get("finetune_epochs", 2)))
    return model, compressor


RUNS = {"agp": run_agp, "lottery_ticket": run_lottery_ticket, "admm": run_admm, "sensitivity": run_sensitivity}
if config["compressor"] not in RUNS:
    sys.exit(f"iterative_digits.py: compressor must be one of {sorted(RUNS)}, got {config['compressor']!r}")
model, compressor = RUNS[config["compressor"]]()
sparsity = compressor.sparsity()

dummy = digits.x_train[:1]
try:
    compressor.apply_speedup(dummy)  # structured masks: the deployed model really is smaller
except ValueError as exc:
    warnings.warn(str(exc))
accuracy = evaluate(model, digits.x_test, digits.y_test)
params = sum(p.numel() for p in model.parameters())

folder = aup.output_folder(config, prefix="aup-digits-")  # kept with save_model, else removed at exit
compressor.export_model("digits_compressed.pt", folder_name=folder, dummy_input=dummy)
aup.log_metrics(accuracy=accuracy)
print(f"accuracy={accuracy:.4f} sparsity={sparsity:.4f} params={params}")
aup.print_result(accuracy)
