#!/usr/bin/env python
"""Trial script for the search pruners (net_adapt, simulated_annealing, auto_compress, amc) on the
pretrained digits CNN, with small budgets so that one trial takes seconds to a minute on one core.

Each compressor gets the callables its algorithm needs (public API only): an evaluator (test
accuracy), a short-term fine-tuner (NetAdapt), an epoch trainer with NNI's ADMM callback
(AutoCompress) and a validation loader (AMC). Flow: ``create_compressor`` -> ``compress()`` (the
search) -> fine-tune ``epochs`` epochs with the masks enforced -> ``apply_speedup`` -> evaluate ->
``export_model`` (reports size metrics) -> ``print_result(accuracy)``. The search's working files
go under the trial's model folder (``save_model``) or a temporary directory, never the CWD.
"""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_model import data, pretrained_model  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(message)s")
config = aup.BasicConfig().load(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(config.get("seed", 0))
digits = data()
model = pretrained_model()
folder = aup.output_folder(config, prefix="aup-search-")  # kept with save_model, else removed at exit
work = os.path.join(folder, "search_data")
name = config["compressor"]


def accuracy(m):
    return evaluate(m, digits.x_test, digits.y_test)


def short_term_fine_tuner(m):
    """NetAdapt's short-term fine-tuning: one pass over a quarter of the training set."""
    optimizer = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    quarter = len(digits.y_train) // 4
    train_epoch(m, digits.x_train[:quarter], digits.y_train[:quarter], optimizer, seed=0)


def trainer(m, optimizer, criterion, epoch, callback=None):
    """NNI 2.0 trainer contract: one epoch, ``callback()`` between backward and step (ADMM)."""
    m.train()
    perm = torch.randperm(len(digits.y_train), generator=torch.Generator().manual_seed(epoch))
    for start in range(0, len(perm), 64):
        idx = perm[start:start + 64]
        optimizer.zero_grad()
        criterion(m(digits.x_train[idx]), digits.y_train[idx]).backward()
        if callback is not None:
            callback()
        optimizer.step()


val_loader = [(digits.x_test[i:i + 64], digits.y_test[i:i + 64]) for i in range(0, len(digits.y_test), 64)]
dummy = digits.x_train[:1]
if name == "net_adapt":
    compressor = aup.create_compressor(model, config, short_term_fine_tuner, accuracy, sparsity_per_iteration=0.1,
                                       experiment_data_dir=work)
elif name == "simulated_annealing":
    compressor = aup.create_compressor(model, config, accuracy, start_temperature=1.0, stop_temperature=0.1,
                                       cool_down_rate=0.9, experiment_data_dir=work, seed=0)
elif name == "auto_compress":
    compressor = aup.create_compressor(model, config, trainer, accuracy, dummy, num_iterations=2,
                                       admm_num_iterations=2, admm_training_epochs=1, start_temperature=1.0,
                                       stop_temperature=0.3, experiment_data_dir=work, seed=0)
elif name == "amc":
    compressor = aup.create_compressor(model, config, lambda loader, m: accuracy(m), val_loader, flops_ratio=0.5,
                                       channel_round=2, train_episode=40, warmup=10, n_calibration_batches=4,
                                       hidden1=64, hidden2=64, bsize=32, output_dir=work, seed=0)
else:
    raise SystemExit(f"search_digits.py handles net_adapt, simulated_annealing, auto_compress and amc, not {name!r}")

model = compressor.compress()  # simulated_annealing returns a pruned copy (as NNI 2.0); the others the same model
searched = accuracy(model)
optimizer = torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.001), momentum=0.9)  # gentle: keep the searched weights
for epoch in range(int(config.get("epochs", 1))):
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch,
                loss_hook=compressor.distill_loss)
compressor.apply_speedup(dummy)
final = accuracy(model)
compressor.export_model("digits_compressed.pt", folder_name=folder, dummy_input=dummy)
flops, params, _ = compressor.count_flops_params(dummy, verbose=False)
aup.log_metrics(accuracy=final, accuracy_after_search=searched)
print(f"accuracy_after_search={searched:.4f} accuracy={final:.4f} macs={flops:.0f} params={params:.0f}")
aup.print_result(final)
