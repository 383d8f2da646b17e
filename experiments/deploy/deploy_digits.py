#!/usr/bin/env python
"""Trial script: prune (pruner chosen by the search), shrink, quantize, fine-tune, and score the
*deployed* model: the int8 ONNX file that ONNX Runtime runs, not the in-memory fake-quant model.

``export_model(..., format="onnx")`` shrinks the pruned filters, writes the quantized layers as real
int8 (ONNX Runtime static QDQ, calibrated on the batches this trial trained on) and reports its size,
ORT latency and agreement with the in-memory model; ``load_deployed`` runs it, so the score is the
accuracy of what ships.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aup  # noqa: E402
from aup.compression import load_deployed  # noqa: E402
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

path = compressor.export_model("digits.onnx", folder_name=trial.output_folder(), format="onnx")
deployed = load_deployed(path)
accuracy = evaluate(deployed, digits.x_test, digits.y_test)
aup.log_metrics(accuracy=accuracy, accuracy_in_memory=evaluate(model, digits.x_test, digits.y_test),
                baseline_score=trial.dense_accuracy)
print(f"deployed accuracy={accuracy:.4f}")
aup.print_result(accuracy)
