"""The Keras 3 level pruner: masks hold through every way of training and through save/load.

Per layer the kernel's zero fraction must stay within one point of the target (0.5 / 0.8 / 0.9) after
``model.fit``, a custom ``GradientTape`` + ``apply_gradients`` loop, a ``tf.function``-compiled step
and ``.keras`` / ``.h5`` save and reload followed by more training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aup
from keras_helpers import TARGETS, level_config, needs_keras, per_layer_config, small_cnn, to_numpy, zero_fraction

pytestmark = [pytest.mark.slow, needs_keras]


def assert_targets(keras: Any, model: Any, targets: dict[str, float] = TARGETS) -> None:
    for name, target in targets.items():
        assert zero_fraction(keras, model.get_layer(name)) == pytest.approx(target, abs=0.01), name


@pytest.fixture()
def pruned(keras: Any) -> tuple[Any, Any]:
    keras.utils.set_random_seed(0)
    model = small_cnn(keras)
    compressor = aup.create_compressor(model, per_layer_config())
    assert compressor.compress() is model  # the same object is pruned (NNI 2.0 returned a new one)
    assert_targets(keras, model)
    return model, compressor


def test_masks_hold_through_fit(keras: Any, digits: tuple, pruned: tuple) -> None:
    model, compressor = pruned
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {n: to_numpy(model.get_layer(n).kernel).copy() for n in TARGETS}
    model.fit(digits[0][:512], digits[1][:512], epochs=2, batch_size=32, verbose=0)
    assert_targets(keras, model)
    for name in TARGETS:  # the kept weights did train, and exactly the masked ones stayed zero
        after = to_numpy(model.get_layer(name).kernel)
        assert not np.allclose(after, before[name])
        assert np.array_equal(after != 0, compressor.get_masks()[name]["weight"])
    assert compressor.layer_sparsity() == pytest.approx(TARGETS, abs=0.01)


def test_masks_hold_through_custom_gradient_tape_loop(keras: Any, digits: tuple, pruned: tuple) -> None:
    import tensorflow as tf

    model, _ = pruned
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for start in range(0, 320, 32):
        x, y = digits[0][start:start + 32], digits[1][start:start + 32]
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert_targets(keras, model)


def test_masks_hold_in_tf_function_and_new_masks_need_no_retrace(keras: Any, digits: tuple, pruned: tuple) -> None:
    import tensorflow as tf

    model, compressor = pruned
    optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    x, y = tf.constant(digits[0][:64]), tf.constant(digits[1][:64])
    for _ in range(5):
        train_step(x, y)
    assert_targets(keras, model)
    traced = train_step.experimental_get_tracing_count()
    higher = {"conv1": 0.7, "conv2": 0.9, "fc": 0.95}
    compressor.compute_masks(higher)  # graph mode reads the mask variables: no retrace
    for _ in range(3):
        train_step(x, y)
    assert train_step.experimental_get_tracing_count() == traced
    assert_targets(keras, model, higher)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_masks_survive_save_and_load(keras: Any, digits: tuple, pruned: tuple, tmp_path: Path, suffix: str) -> None:
    from aup.compression.tensorflow.masking import MaskConstraint

    model, _ = pruned
    path = tmp_path / f"checkpoint{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert all(isinstance(loaded.get_layer(n).kernel.constraint, MaskConstraint) for n in TARGETS)
    assert_targets(keras, loaded)
    loaded.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loaded.fit(digits[0][:256], digits[1][:256], epochs=1, batch_size=32, verbose=0)
    assert_targets(keras, loaded)


def test_user_constraint_is_chained_and_restored_on_export(keras: Any, digits: tuple, tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(
        32, name="fc", kernel_constraint=keras.constraints.NonNeg())])
    compressor = aup.create_compressor(model, level_config([{"sparsity": 0.5, "op_types": ["Dense"]}]))
    compressor.compress()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(digits[0][:128].reshape(-1, 64), np.ones((128, 32), "float32") * -1.0, epochs=2, verbose=0)
    kernel = to_numpy(model.get_layer("fc").kernel)
    assert kernel.min() >= 0.0  # the user's NonNeg still runs (the gradient pushes weights negative)
    assert np.mean(kernel == 0) >= 0.5
    exported = compressor.export_model("plain.keras", folder_name=str(tmp_path))
    reloaded = keras.models.load_model(exported, compile=False)
    assert isinstance(reloaded.get_layer("fc").kernel_constraint, keras.constraints.NonNeg)
    assert isinstance(model.get_layer("fc").kernel.constraint.inner, keras.constraints.NonNeg)  # still masked


def test_nni_matching_last_entry_wins_exclude_and_default(keras: Any) -> None:
    model = small_cnn(keras)
    config_list = [
        {"sparsity": 0.5, "op_types": ["default"]},
        {"sparsity": 0.25, "op_types": ["conv2d"]},  # case-insensitive: torch-style names match Keras classes
        {"exclude": True, "op_names": ["conv2"]},
    ]
    compressor = aup.create_compressor(model, level_config(config_list))
    compressor.compress()
    assert set(compressor.layers) == {"conv1", "fc"}
    assert compressor.layer_sparsity() == pytest.approx({"conv1": 0.25, "fc": 0.5}, abs=0.01)
    assert zero_fraction(keras, model.get_layer("conv2")) == 0.0


def test_nested_model_layers_are_named_outer_slash_inner(keras: Any) -> None:
    inner = small_cnn(keras, name="backbone")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inner(inputs)))
    compressor = aup.create_compressor(model, level_config([{"sparsity": 0.6, "op_names": ["backbone/conv2", "head"]}]))
    compressor.compress()
    assert set(compressor.layers) == {"backbone/conv2", "head"}
    assert zero_fraction(keras, inner.get_layer("conv2")) == pytest.approx(0.6, abs=0.01)


def test_lifecycle_methods_and_masks(keras: Any, pruned: tuple) -> None:
    model, compressor = pruned
    compressor.update_epoch(3)
    compressor.step()
    assert list(compressor.get_prune_iterations()) == [0]
    compressor.prune_iteration_start()
    assert_targets(keras, model)
    masks = compressor.get_masks()
    assert set(masks) == set(TARGETS) and masks["fc"]["bias"] is None
    assert masks["conv2"]["weight"].shape == tuple(model.get_layer("conv2").kernel.shape)
    with pytest.raises(ValueError, match="prunes single weights"):
        compressor.apply_speedup(np.zeros((1, 8, 8, 1), "float32"))
    macs, params, rows = compressor.count_flops_params((1, 8, 8, 1), verbose=False)
    dense_macs = 6 * 6 * 72 + 4 * 4 * 1152 + 2560  # conv1 positions x weights, conv2, fc
    expected = 6 * 6 * 36 + 4 * 4 * int(1152 - int(0.8 * 1152)) + 2560 - int(0.9 * 2560)
    assert macs == expected < dense_macs
    assert {r["name"] for r in rows} == set(TARGETS)


def test_depthwise_conv_and_embedding_layers(keras: Any, digits: tuple, tmp_path: Path) -> None:
    from aup.compression.tensorflow.masking import MaskConstraint

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="fc")(keras.layers.Flatten()(x)))
    compressor = aup.create_compressor(model, level_config([{"sparsity": 0.5, "op_types": ["DepthwiseConv2D"]}]))
    compressor.compress()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits[0][:128], digits[1][:128], epochs=1, verbose=0)
    model.save(tmp_path / "dw.keras")
    loaded = keras.models.load_model(tmp_path / "dw.keras", compile=False)
    assert isinstance(loaded.get_layer("dw").depthwise_constraint, MaskConstraint)
    assert np.mean(to_numpy(loaded.get_layer("dw").kernel) == 0) == pytest.approx(0.5, abs=0.01)

    embed = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(50, 8, name="emb")])
    pruner = aup.create_compressor(embed, level_config([{"sparsity": 0.75, "op_types": ["Embedding"]}]))
    pruner.compress()
    assert pruner.layer_sparsity() == {"emb": 0.75}
    assert pruner.count_flops_params(verbose=False)[0] == 0  # a lookup multiplies nothing
