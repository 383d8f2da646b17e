"""The contract every torch compressor in the catalog keeps, checked on each entry without a hand-kept list.

A new catalog entry is covered here as soon as it exists. The harness and the check are
``aup.testing.contract`` (users run the same check on their own compressors): what each compressor
needs is found from its constructor's parameter names and its config_list from its catalog schema;
budgets are kept tiny through the argument names the searches share. Random weights, a slice of the
digits. Besides the lifecycle check, a bad config_list is refused naming entry and key.
"""
from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

import aup  # noqa: E402
from aup.compression import catalog  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.errors import FieldError  # noqa: E402
from aup.testing.contract import ContractError, Harness, check_contract, entry_config  # noqa: E402

ENTRIES = [e for e in catalog.entries("torch") if e.implemented]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_compressor_keeps_the_contract(entry: catalog.Entry, digits: zoo.DigitsData, tmp_path: Any) -> None:
    check_contract(entry, Harness(tmp_path, digits, entry.model_family), tmp_path / "export")


def test_the_check_catches_a_broken_promise(digits: zoo.DigitsData, tmp_path: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A pruner whose masks miss the configured sparsity fails the check, naming the promise."""
    from aup.compression.torch.pruners.filter_norm import L1FilterPruner

    original = L1FilterPruner.layer_sparsities
    monkeypatch.setattr(L1FilterPruner, "layer_sparsities", lambda self: {k: v / 2 for k, v in original(self).items()})
    entry = catalog.lookup("torch", "pruning", "l1_filter")
    with pytest.raises(ContractError, match="achieved sparsity"):
        check_contract(entry, Harness(tmp_path, digits), tmp_path / "export")


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: f"{e.framework}-{e.name}")
def test_bad_config_list_names_the_entry_and_the_key(entry: catalog.Entry, cfg: Any) -> None:
    config_list = entry_config(entry)
    config_list.append(dict(config_list[0], not_a_key=1))
    with pytest.raises(FieldError) as caught:
        aup.create_compressor(None, cfg(entry.name, config_list, entry.compression_type, entry.framework))
    error = caught.value
    assert (error.entry, error.key) == (1, "not_a_key")
    assert str(error).startswith("config_list[1]: unknown key 'not_a_key'")


@pytest.mark.slow  # imports every framework, TensorFlow included
def test_every_catalog_entry_is_importable_or_honestly_marked() -> None:
    from aup.compression import registry

    for entry in catalog.ENTRIES:
        if entry.implemented:
            assert isinstance(registry.import_entry(entry), type), entry.name
