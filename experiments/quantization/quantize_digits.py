#!/usr/bin/env python
"""Trial script for every quantizer on the pretrained digits CNN (public API only).

Flow: load the cached pretrained model -> ``create_compressor`` -> ``compress()`` (fake quantization
attached, trained through a straight-through estimator) -> fine-tune -> evaluate the quantized
model -> ``export_model`` (integer weights + scales; reports ``weight_bits`` and the sizes) ->
``print_result(accuracy)``. ``quant_bits`` may be searched by the experiment.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aup  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_model import start_trial  # noqa: E402

trial = start_trial(sys.argv[1])
model, optimizer, digits = trial.model, trial.optimizer, trial.digits

compressor = aup.create_compressor(model, trial.config, optimizer, dummy_input=trial.dummy)
compressor.compress()
for epoch in range(trial.epochs):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch,
                loss_hook=compressor.distill_loss)
accuracy = evaluate(model, digits.x_test, digits.y_test)  # with fake quantization attached

compressor.export_model("digits_quantized.pt", folder_name=trial.output_folder(), dummy_input=trial.dummy)
aup.log_metrics(accuracy=accuracy, baseline_score=trial.dense_accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
