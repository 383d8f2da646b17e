"""The contract every torch compressor in the catalog keeps, checked on each entry without a hand-kept list.

A new catalog entry is covered here as soon as it exists. What each compressor needs is found from
its constructor's parameter names (``optimizer``, ``trainer``, ``evaluator``, ``val_loader`` ...) and
its config_list from its schema in the catalog; budgets are kept tiny through the argument names
the searches share (``num_iterations``, ``train_episode`` ...). Random weights, a slice of the digits.

The contract: ``compress()`` returns the bound model (the one passed in, or for simulated annealing
the pruned copy NNI 2.0 returns, leaving the input untouched); the state_dict keys never change; masks are in NNI's
format (``{module: {"weight": mask, "bias": mask or None}}``) with the parameters' shapes; the
achieved sparsity is within one point of the configured target; ``export_model`` ->
``load_compressed`` gives back the same outputs; a bad config_list is refused naming entry and key.
"""
from __future__ import annotations

import inspect
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression import catalog, load_compressed  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.errors import FieldError  # noqa: E402

ENTRIES = [e for e in catalog.entries("torch") if e.implemented]
BATCH = 32

# Keyword arguments that keep the searches and schedules small, by the name they share.
SMALL_BUDGET: dict[str, Any] = {
    "num_iterations": 1, "training_epochs": 1, "admm_num_iterations": 1, "admm_training_epochs": 1,
    "start_temperature": 1.0, "stop_temperature": 0.6, "sparsity_per_iteration": 0.1, "sparsity_per_iter": 0.25,
    "train_episode": 2, "warmup": 1, "n_calibration_batches": 2, "n_points_per_layer": 2, "channel_round": 1,
    "hidden1": 8, "hidden2": 8, "bsize": 2, "rmsize": 4, "seed": 0, "statistics_batch_num": 1,
}


def _entry_config(entry: catalog.Entry) -> list[dict[str, Any]]:
    """One valid config_list entry built from the schema: 50% of the convs (or what the schema names)."""
    schema = entry.schema
    if entry.quant is not None:
        bits = entry.quant.fixed_bits or 8
        return [{"quant_types": ["weight"], "quant_bits": bits, "op_types": list(schema.op_types or ("Conv2d", "Linear"))}]
    default_types = ("Conv2d",) if entry.model_family == "cnn" else ("default",)
    config: dict[str, Any] = {"op_types": list(schema.op_types or default_types)[:1]}
    for key in schema.required:
        config[key] = {"prune_iterations": 1}.get(key, 0.5)
    if not schema.required:  # e.g. per-structure sparsities, all optional: set each of them
        config.update({key: 0.5 for key, spec in schema.keys.items() if key.endswith("sparsity")})
    return [config]


def _target(config_list: list[dict[str, Any]]) -> float | None:
    entry = config_list[0]
    return entry.get("sparsity", entry.get("final_sparsity"))


class TokenClassifier(nn.Module):
    """A two-layer transformer encoder (4 heads, MLP 64) over 8 tokens of 8 features -> 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


def _tolerance(entry: catalog.Entry, compressor: Any) -> float:
    """One point, or one pruning unit where a unit is bigger: a search that picks per-layer sparsities
    over whole filters cannot land closer than one filter of its largest layer on a model this small."""
    if entry.structured or entry.scores is not None:
        return 0.01
    units = [layer.module.weight[0].numel() for layer in compressor.layers.values()]
    dense = sum(compressor.dense_weight_numel.values())
    return max(0.01, max(units, default=0) / dense)


class Harness:
    """The model, data and callables a compressor may ask for, by parameter name."""

    def __init__(self, tmp_path: Any, digits: zoo.DigitsData, family: str = "cnn") -> None:
        torch.manual_seed(0)
        self.x, self.y = digits.x_train[:4 * BATCH], digits.y_train[:4 * BATCH]
        if family == "transformer":  # each 8x8 digit is 8 tokens of 8 features
            self.model: nn.Module = TokenClassifier()
            self.x = self.x.squeeze(1)
        else:
            self.model = zoo.DigitsCNN(width=8)
        for module in self.model.modules():  # trained-like BN scales (a fresh net's gammas all tie)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.5, 1.5)
        self.example = self.x[:2]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.tmp_path = tmp_path
        self.evaluations = 0

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.x[i:i + BATCH], self.y[i:i + BATCH]) for i in range(0, len(self.x), BATCH)]

    def evaluator(self, *args: Any) -> float:
        model = next((a for a in args if isinstance(a, nn.Module)), self.model)
        self.evaluations += 1
        return zoo.evaluate(model, self.x, self.y)

    def trainer(self, model: nn.Module, optimizer: Any, criterion: Any, epoch: int, callback: Any = None) -> None:
        model.train()
        for x, y in self.batches()[:2]:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            if callback is not None:
                callback()
            optimizer.step()

    def fine_tuner(self, model: nn.Module) -> None:
        return None

    def arguments(self, cls: type) -> dict[str, Any]:
        pool = {"optimizer": self.optimizer, "trainer": self.trainer, "evaluator": self.evaluator,
                "short_term_fine_tuner": self.fine_tuner, "val_loader": self.batches(),
                "dummy_input": self.example, "experiment_data_dir": str(self.tmp_path / "work"),
                "output_dir": str(self.tmp_path / "work"), **SMALL_BUDGET}
        params = inspect.signature(cls).parameters
        return {name: value for name, value in pool.items() if name in params}

    def train_steps(self, n: int = 2) -> None:
        self.model.train()
        for x, y in self.batches()[:n]:
            self.optimizer.zero_grad()
            F.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()


def _compress(entry: catalog.Entry, harness: Harness, cfg: Any) -> Any:
    """Create, compress and run the lifecycle a trial would (rounds, an epoch, training steps)."""
    from aup.compression import registry

    config_list = _entry_config(entry)
    kwargs = harness.arguments(registry.import_entry(entry))
    compressor = aup.create_compressor(harness.model, cfg(entry.name, config_list, entry.compression_type), **kwargs)
    given = harness.model
    returned = compressor.compress()
    harness.model = returned
    harness.given = given
    for _ in compressor.get_prune_iterations():
        compressor.prune_iteration_start()
        harness.train_steps()
    compressor.update_epoch(1)
    if not compressor.speedup_applied:
        harness.train_steps()
    return compressor, returned, config_list


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_compressor_keeps_the_contract(entry: catalog.Entry, digits: zoo.DigitsData, cfg: Any, tmp_path: Any) -> None:
    harness = Harness(tmp_path, digits, entry.model_family)
    keys = list(harness.model.state_dict())
    dense = {k: v.clone() for k, v in harness.model.state_dict().items()}
    compressor, returned, config_list = _compress(entry, harness, cfg)
    model = harness.model
    assert returned is compressor.model
    if returned is not harness.given:  # a search NNI defines to return a pruned copy: the input is untouched
        assert all(torch.equal(v, dense[k]) for k, v in harness.given.state_dict().items())
    assert list(model.state_dict()) == keys
    masks = compressor.get_masks()
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        # NNI's keys; a module holding other parameters (attention's in_proj_weight) may mask those too
        assert {"weight", "bias"} <= set(mask), name
        for key, tensor in mask.items():
            param = getattr(modules[name], key, None)
            if tensor is None:
                continue
            assert isinstance(param, torch.Tensor) and tensor.shape == param.shape, (name, key)
    if entry.compression_type == "pruning":
        assert masks or compressor.speedup_applied
        target = _target(config_list)
        if target is not None and entry.exact_sparsity:
            assert compressor.sparsity() == pytest.approx(target, abs=_tolerance(entry, compressor))
        elif target is not None:  # a target of its own definition: never more than the configured one
            assert 0 < compressor.sparsity() <= target + _tolerance(entry, compressor)
    model.eval()
    with torch.no_grad():
        expected = model(harness.example)
    path = compressor.export_model("model.pt", folder_name=str(tmp_path / "export"), dummy_input=harness.example)
    loaded = load_compressed(path).eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(harness.example), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: f"{e.framework}-{e.name}")
def test_bad_config_list_names_the_entry_and_the_key(entry: catalog.Entry, cfg: Any) -> None:
    config_list = _entry_config(entry)
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
