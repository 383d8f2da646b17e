"""What the Keras level pruner's masks cost per training step.

The masks are Keras constraints, applied by the optimizer after every update. This trains the
experiments/tensorflow digits CNN one epoch at a time, alternating a dense copy and a pruned copy
(80 % per layer) built from the same weights, and prints the median epoch time of each and their
ratio (interleaved, so machine load hits both alike; CPU time of the process on one TensorFlow
thread, which other processes on a busy machine disturb less than wall time), plus the time of
``compress()`` itself.

    python benchmarks/keras_mask_overhead.py            # 7 rounds of 2 epochs (about a minute)
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # one thread: CPU time is then a fair measure
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments" / "tensorflow"))

import keras  # noqa: E402

import aup  # noqa: E402
from keras_digits import build_model, compile_model, data  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "7"))
CONFIG = {"framework": "tensorflow", "type": "pruning", "compressor": "level",
          "config_list": [{"sparsity": 0.8, "op_types": ["default"]}]}


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = data()
    dense = build_model()
    pruned = build_model()
    pruned.set_weights(dense.get_weights())
    start = time.perf_counter()
    aup.create_compressor(pruned, CONFIG).compress()
    compress_ms = (time.perf_counter() - start) * 1000
    for model in (dense, pruned):
        compile_model(model, 1e-3)
        model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=32, verbose=0)  # trace + warm up
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    order = [("dense", dense), ("pruned", pruned)]
    for _ in range(ROUNDS):
        order.reverse()  # alternate which one goes first
        for name, model in order:
            start = time.process_time()
            model.fit(digits.x_train, digits.y_train, epochs=2, batch_size=32, verbose=0)
            times[name].append(time.process_time() - start)
    dense_s, pruned_s = statistics.median(times["dense"]), statistics.median(times["pruned"])
    print(f"keras {keras.__version__} ({keras.backend.backend()}), {ROUNDS} interleaved rounds of 2 epochs")
    print(f"median 2-epoch fit (CPU s): dense {dense_s:.2f} s, pruned {pruned_s:.2f} s, ratio {pruned_s / dense_s:.2f}x")
    print(f"compress(): {compress_ms:.0f} ms")


if __name__ == "__main__":
    main()
