"""The same pruner on Keras 3's torch backend (a separate process: the backend is chosen at import).

Masks must hold through ``fit``, a hand-written torch autograd loop feeding ``optimizer.apply`` and
``.keras`` save/load, and the metrics must be measured.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_helpers import needs_keras

pytestmark = [pytest.mark.slow, needs_keras,
              pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")]

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r'''
import json, os, sys, tempfile
import keras, numpy as np, torch, aup
from aup.compression.tensorflow.config_list import to_numpy
assert keras.backend.backend() == "torch"
torch.set_num_threads(1)
from sklearn.datasets import load_digits
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
                          keras.layers.Conv2D(16, 3, activation="relu", name="conv2"), keras.layers.Flatten(),
                          keras.layers.Dense(10, name="fc")])
targets = {"conv1": 0.5, "conv2": 0.8, "fc": 0.9}
pruner = aup.create_compressor(model, {"framework": "tensorflow", "type": "pruning", "compressor": "level",
    "config_list": [{"sparsity": s, "op_names": [n]} for n, s in targets.items()]})
pruner.compress()
out = {}
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x[:512], y[:512], epochs=2, verbose=0)
out["fit"] = pruner.layer_sparsity()
optimizer = keras.optimizers.SGD(0.1)
for s in range(0, 256, 32):
    loss = keras.losses.sparse_categorical_crossentropy(y[s:s + 32], model(x[s:s + 32], training=True),
                                                        from_logits=True).mean()
    model.zero_grad()
    loss.backward()
    optimizer.apply([v.value.grad for v in model.trainable_variables], model.trainable_variables)
out["custom_loop"] = pruner.layer_sparsity()
folder = tempfile.mkdtemp()
model.save(os.path.join(folder, "m.keras"))
loaded = keras.models.load_model(os.path.join(folder, "m.keras"))
loaded.fit(x[:256], y[:256], epochs=1, verbose=0)
out["save_load"] = {n: float(np.mean(to_numpy(loaded.get_layer(n).kernel) == 0)) for n in targets}
path = pruner.export_model("e.keras", folder_name=folder)
out["metrics"] = pruner.measure(path.replace(".keras", ".aup.npz"))
print("RESULT " + json.dumps(out))
'''


def test_masks_hold_on_the_torch_backend(tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    targets = {"conv1": 0.5, "conv2": 0.8, "fc": 0.9}
    for stage in ("fit", "custom_loop", "save_load"):
        assert result[stage] == pytest.approx(targets, abs=0.01), stage
    metrics = result["metrics"]
    assert metrics["nonzero_params"] < 0.2 * metrics["param_count"] and metrics["macs"] > 0
    assert metrics["model_bytes"] > 0 and metrics["latency_ms"] > 0
