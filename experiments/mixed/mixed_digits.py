#!/usr/bin/env python
"""Trial script: per-layer precision x filter sparsity on the digits CNN, scored on the deployed file.

The job config holds a ``compression_pipeline``: ``l1_filter`` with a searched sparsity per
convolution, then ``qat`` with a searched weight precision per layer from {32, 8, 4} (32 = float).
``compress()`` prunes, shrinks and attaches the quantizer to the smaller model; one fine-tuning epoch
follows; ``export_model(..., format="onnx")`` writes the mixed-precision file (float layers, int8 QDQ
layers, 4-bit MatMulNBits / int4 convolution weights) and reports its ``model_bytes``, ORT
``latency_ms`` and ``weight_bits`` as shipped. The score is the accuracy of that file in ONNX Runtime.

The first trial also measures the one-shot quantization sensitivity (test accuracy of the
pretrained model with only one layer at 4 bits); the runner stores it on the experiment and
``aup show`` prints it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aup  # noqa: E402
from aup.compression import load_deployed, quantization_sensitivity  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_model import start_trial  # noqa: E402

trial = start_trial(sys.argv[1])
model, optimizer, digits = trial.model, trial.optimizer, trial.digits
quantization_sensitivity(model, lambda m: evaluate(m, digits.x_test, digits.y_test), bits=4)

compressor = aup.create_compressor(model, trial.config, optimizer=optimizer, dummy_input=trial.dummy)
compressor.compress()
for epoch in range(trial.epochs):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)

path = compressor.export_model("digits_mixed.onnx", folder_name=trial.output_folder(), format="onnx")
accuracy = evaluate(load_deployed(path), digits.x_test, digits.y_test)
aup.log_metrics(accuracy=accuracy, accuracy_in_memory=evaluate(model, digits.x_test, digits.y_test),
                baseline_score=trial.dense_accuracy)
print(f"deployed accuracy={accuracy:.4f}")
aup.print_result(accuracy)
