#!/usr/bin/env python
"""Trial: heads and MLP channels removed, then a searched precision per layer, scored on the deployed file.

The job config holds a two-stage ``compression_pipeline``: the ``transformer`` pruner (searched
``head_sparsity`` / ``mlp_sparsity``), then ``qat`` weight quantization with a precision per layer
from {32, 8, 4} (32 = float). ``export_model(..., format="onnx")`` writes the shrunk model at those
precisions (4-bit layers as MatMulNBits, 8-bit as int8 QDQ) and reports its ``model_bytes``, ORT
``latency_ms`` and ``weight_bits`` as shipped; the score is the accuracy of that file in ONNX Runtime.
The first trial also records the one-shot per-layer 4-bit sensitivity (``aup show`` prints it).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aup  # noqa: E402
from aup.compression import load_deployed, quantization_sensitivity  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_transformer import start_trial  # noqa: E402

trial = start_trial(sys.argv[1])
model, optimizer, digits = trial.model, trial.optimizer, trial.digits
quantization_sensitivity(model, lambda m: evaluate(m, digits.x_test, digits.y_test), bits=4)

compressor = aup.create_compressor(model, trial.config, optimizer=optimizer, dummy_input=trial.dummy)
compressor.compress()
for epoch in range(int(trial.config.get("epochs", 2))):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)

path = compressor.export_model("digits_transformer.onnx", folder_name=trial.output_folder(), format="onnx")
accuracy = evaluate(load_deployed(path), digits.x_test, digits.y_test)
aup.log_metrics(accuracy=accuracy, accuracy_in_memory=evaluate(model, digits.x_test, digits.y_test),
                baseline_score=trial.dense_accuracy)
print(f"deployed accuracy={accuracy:.4f}")
aup.print_result(accuracy)
