#!/usr/bin/env python
"""Trial: remove attention heads and MLP channels of the digits transformer, then int8 weights.

The job config holds a two-stage ``compression_pipeline`` (the ``transformer`` pruner with the
searched ``head_sparsity`` / ``mlp_sparsity``, then the ``naive`` int8 quantizer).  ``compress()``
masks the weakest heads and channels (L1), shrinks the model physically and attaches the quantizer
to the smaller model; a short fine-tune recovers accuracy; ``export_model`` writes one artifact
(int8 codes of the shrunk layers) and reports its size, MACs and the achieved sparsity.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aup  # noqa: E402
from aup.compression.torch.zoo import evaluate, train_epoch  # noqa: E402
from digits_transformer import start_trial  # noqa: E402

trial = start_trial(sys.argv[1])
model, optimizer, digits = trial.model, trial.optimizer, trial.digits

compressor = aup.create_compressor(model, trial.config, optimizer=optimizer, dummy_input=trial.dummy)
compressor.compress()
for epoch in range(int(trial.config.get("epochs", 2))):
    compressor.update_epoch(epoch)
    train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch,
                loss_hook=compressor.distill_loss)
accuracy = evaluate(model, digits.x_test, digits.y_test)

compressor.export_model("digits_transformer.aup", folder_name=trial.output_folder(), dummy_input=trial.dummy)
aup.log_metrics(accuracy=accuracy, baseline_score=trial.dense_accuracy)
print(f"accuracy={accuracy:.4f}")
aup.print_result(accuracy)
