#!/usr/bin/env python
"""Trial script for the Keras 3 level pruner on the pretrained digits CNN (public API only).

Flow: load the cached pretrained model -> ``aup.create_compressor`` -> ``compress()`` -> fine-tune
with ``model.fit`` (the masks hold through it) -> evaluate -> ``export_model`` (a ``.keras`` model
plus the compact sparse artifact; reports the measured size metrics) -> ``print_result(accuracy)``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aup  # noqa: E402
import keras  # noqa: E402
from keras_digits import compile_model, data, evaluate, pretrained_model  # noqa: E402

config = aup.BasicConfig().load(sys.argv[1])
keras.utils.set_random_seed(int(config.get("seed", 0)))
digits = data()
model = pretrained_model()
dense_accuracy = evaluate(model, digits.x_test, digits.y_test)

compressor = aup.create_compressor(model, config)
compressor.compress()
compile_model(model, float(config.get("lr", 1e-3)))
epochs = int(config.get("n_iterations", config.get("epochs", 2)))  # hyperband/bohb budget if any
model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=32, verbose=0)
accuracy = evaluate(model, digits.x_test, digits.y_test)

folder = aup.output_folder(config, prefix="aup-digits-keras-")  # kept with save_model, else removed at exit
compressor.export_model("digits_compressed.keras", folder_name=folder)
aup.log_metrics(accuracy=accuracy, baseline_score=dense_accuracy)
print(f"accuracy={accuracy:.4f} (dense {dense_accuracy:.4f}), layer sparsity {compressor.layer_sparsity()}")
aup.print_result(accuracy)
