"""The Keras pruners keep the written contract (aup.compression.contracts.KerasPruner)."""
from __future__ import annotations

from typing import Any

import pytest

from aup.compression import catalog, contracts, registry
from keras_helpers import needs_keras

pytestmark = [pytest.mark.slow, needs_keras]  # imports Keras and TensorFlow


@pytest.mark.parametrize("entry", list(catalog.entries("tensorflow")), ids=lambda e: e.name)
def test_keras_catalog_class_keeps_its_contract(entry: catalog.Entry) -> None:
    cls = registry.import_entry(entry)
    members = {n for n in vars(contracts.KerasPruner) if not n.startswith("_")} | {"compress", "compressor_name"}
    assert all(hasattr(cls, m) for m in members) and not cls.__abstractmethods__


def test_a_keras_pruner_without_calc_mask_is_refused_when_built(keras: Any) -> None:
    from aup.compression.tensorflow.base import KerasPruner

    class Forgetful(KerasPruner):
        compressor_name = "forgetful"

    with pytest.raises(TypeError, match="calc_mask"):
        Forgetful(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), [{"sparsity": 0.5, "op_types": ["Dense"]}])
