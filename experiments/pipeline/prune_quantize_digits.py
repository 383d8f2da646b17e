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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aup  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_model import start_trial  # noqa: E402

trial = start_trial(sys.argv[1])
model, optimizer, digits = trial.model, trial.optimizer, trial.digits

compressor = aup.create_compressor(model, trial.config, optimizer=optimizer, dummy_input=trial.dummy)
compressor.compress()
for epoch in range(trial.epochs):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch,
                loss_hook=compressor.distill_loss)
accuracy = evaluate(model, digits.x_test, digits.y_test)

compressor.export_model("digits_pipeline.pt", folder_name=trial.output_folder(), dummy_input=trial.dummy)
aup.log_metrics(accuracy=accuracy, baseline_score=trial.dense_accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
