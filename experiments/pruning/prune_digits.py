#!/usr/bin/env python
"""Trial script for every one-shot pruner on the pretrained digits CNN (public API only).

The runner passes the job config path; the config holds the concrete compression keys
(``compression_framework``, ``compression_type``, ``compressor``, ``config_list``, maybe
``compressor_args``) and the searched training keys (``lr``, ``epochs``). Flow: load the cached
pretrained model -> ``create_compressor`` -> ``compress()`` -> fine-tune -> ``apply_speedup`` (physical
shrink of structured pruning) -> evaluate -> ``export_model`` (reports the measured size metrics)
-> ``print_result(accuracy)``.
"""
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_model import data, pretrained_model  # noqa: E402

config = aup.BasicConfig().load(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(config.get("seed", 0))
digits = data()
model = pretrained_model()
optimizer = torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.01), momentum=0.9)

compressor = aup.create_compressor(model, config, optimizer)
compressor.compress()
for epoch in range(int(config.get("n_iterations", config.get("epochs", 1)))):  # n_iterations: hyperband budget
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)

dummy = digits.x_train[:1]
try:
    compressor.apply_speedup(dummy)  # structured pruning: the deployed model really is smaller
except ValueError as exc:  # e.g. nothing to remove physically; the masked model is exported
    warnings.warn(str(exc))
accuracy = evaluate(model, digits.x_test, digits.y_test)

folder = config["folder_name"] if config.get("save_model") else tempfile.mkdtemp(prefix="aup-digits-")
compressor.export_model("digits_compressed.pt", folder_name=folder, dummy_input=dummy)
aup.log_metrics(accuracy=accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
