#!/usr/bin/env python
"""Trial script for every quantizer on the pretrained digits CNN (public API only).

Flow: load the cached pretrained model -> ``create_compressor`` -> ``compress()`` (fake quantization
attached, trained through a straight-through estimator) -> fine-tune -> evaluate the quantized
model -> ``export_model`` (integer weights + scales; reports ``weight_bits`` and the sizes) ->
``print_result(accuracy)``. ``quant_bits`` may be searched by the experiment.
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

compressor = aup.create_compressor(model, config, optimizer, dummy_input=dummy)
compressor.compress()
for epoch in range(int(config.get("n_iterations", config.get("epochs", 1)))):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
accuracy = evaluate(model, digits.x_test, digits.y_test)  # with fake quantization attached

folder = config["folder_name"] if config.get("save_model") else tempfile.mkdtemp(prefix="aup-digits-")
compressor.export_model("digits_quantized.pt", folder_name=folder, dummy_input=dummy)
aup.log_metrics(accuracy=accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
