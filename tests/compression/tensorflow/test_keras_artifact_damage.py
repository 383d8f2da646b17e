"""The Keras artifact checks declared sizes against the stored arrays and names the file when damaged.

Same family as issue 21's torch memory bomb: ``np.zeros(prod(shape))`` came before looking at the
bitmap, and ``np.unpackbits(count=...)`` pads a short bitmap with zeros instead of failing.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keras_helpers import needs_keras, small_cnn

pytestmark = [pytest.mark.slow, needs_keras]


def _saved(keras: Any, tmp_path: Path) -> Path:
    from aup.compression.tensorflow import artifact

    keras.utils.set_random_seed(0)
    model = small_cnn(keras)
    kernel = model.get_layer("fc").kernel
    kernel.assign(np.where(np.random.default_rng(0).random(kernel.shape) < 0.9, 0.0, kernel.numpy()))
    path = tmp_path / "m.aup.npz"
    artifact.save_artifact(path, model)
    return path


def _edit_meta(path: Path, edit) -> None:
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    edit(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _sparse_index(meta: dict) -> int:
    return next(i for i, w in enumerate(meta["weights"]) if w["encoding"] == "sparse")


@pytest.mark.parametrize("shape", [[268435456, 8], [-1, 10], ["64", 10]])
def test_a_declared_shape_larger_than_the_stored_bitmap_is_refused(keras, tmp_path, shape):
    import aup

    path = _saved(keras, tmp_path)
    _edit_meta(path, lambda meta: meta["weights"][_sparse_index(meta)].update(shape=shape))
    with pytest.raises(ValueError) as exc_info:
        aup.compression.load_compressed(path)
    message = str(exc_info.value)
    assert str(path) in message and "\n" not in message
    assert "bitmap of" in message or "malformed shape" in message


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7, 0.99])
def test_a_truncated_keras_artifact_names_the_file(keras, tmp_path, fraction):
    import aup

    path = _saved(keras, tmp_path)
    assert aup.compression.load_compressed(path) is not None
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ValueError) as exc_info:
        aup.compression.load_compressed(path)
    assert str(path) in str(exc_info.value) and "\n" not in str(exc_info.value)
