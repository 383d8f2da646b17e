"""Export of a pruned Keras model: a plain-Keras model file, a compact artifact, masks, metrics.

Also the trial channel: inside an aup trial the pruner reports the size metrics of docs/design.md (and the
dense baseline) itself, under the same names as the torch compressors.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aup
from aup import metrics as M
from keras_helpers import TARGETS, needs_keras, per_layer_config, small_cnn, to_numpy

pytestmark = [pytest.mark.slow, needs_keras]

JOB_CONFIG = {"compression_framework": "tensorflow", "compression_type": "pruning", "compressor": "level",
              "tid": 4, "n_iterations": 2, "save_model": True}


def trained_pruned(keras: Any, digits: tuple) -> tuple[Any, Any]:
    keras.utils.set_random_seed(0)
    model = small_cnn(keras)
    compressor = aup.create_compressor(model, per_layer_config())
    compressor.compress()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits[0][:256], digits[1][:256], epochs=1, batch_size=32, verbose=0)
    return model, compressor


def test_export_writes_plain_keras_model_compact_artifact_and_masks(keras: Any, digits: tuple, tmp_path: Path) -> None:
    from aup.compression.tensorflow import artifact

    model, compressor = trained_pruned(keras, digits)
    config = {**per_layer_config(), **JOB_CONFIG, "folder_name": str(tmp_path / "models")}
    # Auptimizer's TF example passes the whole job config (folder_name included) as keywords
    path = compressor.export_model("compressed.keras", mask_path="masks.npz", **config)
    assert path == str(tmp_path / "models" / "compressed.keras")
    with zipfile.ZipFile(path) as archive:  # no aup class inside: loads with plain Keras anywhere
        assert "aup>MaskConstraint" not in archive.read("config.json").decode()
    reloaded = keras.models.load_model(path, compile=False)
    x = digits[0][:16]
    np.testing.assert_allclose(reloaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)

    packed = tmp_path / "models" / "compressed.aup.npz"
    restored = aup.compression.load_compressed(packed)  # dispatches on the .aup.npz suffix
    np.testing.assert_allclose(restored.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    meta, weights = artifact.read_artifact(packed)
    assert meta["compressor"] == "level" and meta["layer_sparsity"] == pytest.approx(TARGETS, abs=0.01)
    assert {w["encoding"] for w in meta["weights"]} == {"dense", "sparse"}  # biases dense, kernels sparse
    dense_bytes = sum(w.nbytes for w in weights)
    with np.load(packed) as stored:
        payload = sum(stored[k].nbytes for k in stored.files if k != "__meta__")
    assert payload < 0.4 * dense_bytes  # 83 % of the weights pruned: values + 1 bit per element
    assert os.path.getsize(packed) < os.path.getsize(path)

    with np.load(tmp_path / "models" / "masks.npz") as masks:
        assert sorted(masks.files) == ["conv1/kernel", "conv2/kernel", "fc/kernel"]
        assert masks["fc/kernel"].dtype == bool and masks["fc/kernel"].mean() == pytest.approx(0.1, abs=0.01)
        assert np.array_equal(masks["conv2/kernel"], to_numpy(model.get_layer("conv2").kernel) != 0)


def test_h5_export_when_asked_and_masks_restore_onto_a_plain_model(keras: Any, digits: tuple, tmp_path: Path) -> None:
    from aup.compression.tensorflow import artifact

    model, compressor = trained_pruned(keras, digits)
    path = compressor.export_model("compressed.h5", mask_path="masks.npz", folder_name=str(tmp_path))
    assert path.endswith(".h5") and Path(path).exists()
    assert compressor.export_model("weights.bin", folder_name=str(tmp_path), format="keras").endswith(".bin.keras")
    with pytest.raises(ValueError, match="format='onnx' is not supported"):
        compressor.export_model("m.onnx", folder_name=str(tmp_path), format="onnx")
    plain = keras.models.load_model(path, compile=False)
    artifact.restore_masks(plain, tmp_path / "masks.npz")
    plain.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(digits[0][:128], digits[1][:128], epochs=1, verbose=0)
    for name, target in TARGETS.items():
        assert np.mean(to_numpy(plain.get_layer(name).kernel) == 0) == pytest.approx(target, abs=0.01)


def read_metrics(channel: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    return [r["metrics"] for r in records if r["kind"] == "metrics"]


def test_metrics_reach_the_trial_channel_under_the_torch_names(keras: Any, digits: tuple, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    channel = tmp_path / "channel.jsonl"
    monkeypatch.setenv("AUP_CHANNEL", str(channel))
    model, compressor = trained_pruned(keras, digits)  # compress() reports once
    compressor.export_model("compressed.keras", folder_name=str(tmp_path))  # export reports again
    first, last = read_metrics(channel)
    for name in (M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS, M.MODEL_BYTES, M.MODEL_BYTES_GZIP, M.SPARSITY,
                 M.LATENCY_MS, M.WEIGHT_BITS):
        assert isinstance(last[name], (int, float)) and isinstance(first[name], (int, float)), name
        if name != M.SPARSITY:
            assert isinstance(last[f"baseline_{name}"], (int, float)), name
    assert last[M.MODEL_BYTES] == os.path.getsize(tmp_path / "compressed.aup.npz")
    assert last[M.PARAM_COUNT] == last["baseline_param_count"] == model.count_params()
    assert last[M.NONZERO_PARAMS] < 0.3 * last["baseline_nonzero_params"]
    assert last[M.MACS] < 0.3 * last["baseline_macs"]
    assert last[M.MODEL_BYTES] < 0.6 * last["baseline_model_bytes"]  # small model: metadata is ~7 kB of it
    total = sum(np.prod(model.get_layer(n).kernel.shape) for n in TARGETS)
    expected = sum(TARGETS[n] * np.prod(model.get_layer(n).kernel.shape) for n in TARGETS) / total
    assert last[M.SPARSITY] == pytest.approx(expected, abs=0.01)
    assert last[M.LAYER_SPARSITY] == pytest.approx(TARGETS, abs=0.01)


def test_no_channel_no_measuring(keras: Any, digits: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUP_CHANNEL", raising=False)
    _, compressor = trained_pruned(keras, digits)
    assert compressor.report_metrics() is None
    measured = compressor.measure()  # still available on demand
    assert measured[M.SPARSITY] > 0.7 and measured[M.MACS] > 0
