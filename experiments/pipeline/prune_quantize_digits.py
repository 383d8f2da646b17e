#!/usr/bin/env python
"""Trial script for a compression pipeline (e.g. l1 filter pruning, then QAT) on the digits CNN.

``create_compressor`` on a job config with ``compression_pipeline`` returns one compressor for all
stages: ``compress()`` prunes, physically shrinks the structured stage (which needs ``dummy_input``)
and attaches the quantizer to the smaller model; the optimizer passed in keeps working (it is
re-pointed at the shrunk parameters). One fine-tuning loop trains the pruned, quantized model;
``export_model`` writes one artifact (integer weights of the shrunk layers) and reports its sizes.
"""
import os
import sys
import tempfile

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
optimizer = torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.005), momentum=0.9)
dummy = digits.x_train[:1]

compressor = aup.create_compressor(model, config, optimizer=optimizer, dummy_input=dummy)
compressor.compress()
for epoch in range(int(config.get("n_iterations", config.get("epochs", 1)))):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
accuracy = evaluate(model, digits.x_test, digits.y_test)

folder = config["folder_name"] if config.get("save_model") else tempfile.mkdtemp(prefix="aup-digits-")
compressor.export_model("digits_pipeline.pt", folder_name=folder, dummy_input=dummy)
aup.log_metrics(accuracy=accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
