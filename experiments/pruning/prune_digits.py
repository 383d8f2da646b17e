#!/usr/bin/env python
"""Trial script for every one-shot pruner on the pretrained digits CNN (public API only).

The runner passes the job config path; the config holds the concrete compression keys
(``compression_framework``, ``compression_type``, ``compressor``, ``config_list``, maybe
``compressor_args``) and the searched training keys (``lr``, ``epochs``). Flow: load the cached
pretrained model -> ``create_compressor`` -> ``compress()`` (the pruner reports its size) -> fine-tune,
reporting the accuracy after every epoch but the last (``early_stop`` decides on these) -> ``apply_speedup`` (physical
shrink of structured pruning) -> evaluate -> ``export_model`` (reports the measured size metrics)
-> ``print_result(accuracy)``. When the experiment's compression section has ``distill`` options,
fine-tuning also learns from the dense model's outputs (``compressor.distill_loss``; a no-op otherwise).
"""
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aup  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_model import start_trial  # noqa: E402

trial = start_trial(sys.argv[1], default_lr=0.01)
model, optimizer, digits = trial.model, trial.optimizer, trial.digits

# per-layer allocation (compression.allocation) profiles the layers on real inputs when it gets a batch
extra = {"dummy_input": digits.x_train[:64]} if "compression_allocation" in trial.config else {}
compressor = aup.create_compressor(model, trial.config, optimizer, **extra)
compressor.compress()
for epoch in range(trial.epochs):  # n_iterations: the hyperband/bohb budget
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch, loss_hook=compressor.distill_loss)
    if epoch + 1 < trial.epochs:  # an intermediate result per epoch: early stopping decides on them
        aup.print_result(evaluate(model, digits.x_test, digits.y_test))

try:
    compressor.apply_speedup(trial.dummy)  # structured pruning: the deployed model really is smaller
except ValueError as exc:  # e.g. nothing to remove physically; the masked model is exported
    warnings.warn(str(exc))
accuracy = evaluate(model, digits.x_test, digits.y_test)

compressor.export_model("digits_compressed.pt", folder_name=trial.output_folder(), dummy_input=trial.dummy)
aup.log_metrics(accuracy=accuracy, baseline_score=trial.dense_accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
