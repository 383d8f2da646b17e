"""The contract every torch compressor keeps, as a harness and one check anyone can run.

aup's own suite runs :func:`check_contract` on every catalog entry (tests/compression/test_contract.py);
a user who adds a compressor (one class and one catalog entry, docs/architecture.md) or writes one
outside aup runs the same check on theirs. What a compressor needs is found from its constructor's
parameter names (``optimizer``, ``trainer``, ``evaluator``, ``val_loader`` ...) and its config_list
from its catalog schema; budgets stay tiny through the argument names the searches share
(``num_iterations``, ``train_episode`` ...). Random weights, a slice of the digits.

The contract: ``compress()`` returns the bound model (the one passed in, or for simulated annealing the
pruned copy NNI 2.0 returns, leaving the input untouched); the state_dict keys never change; masks are
in NNI's format (``{module: {"weight": mask, "bias": mask or None}}``) with the parameters' shapes; the
achieved sparsity is within one point of the configured target; ``export_model`` -> ``load_compressed``
gives back the same outputs.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aup.compression import catalog, registry
from aup.compression.torch import zoo
from aup.testing.models import model_for

__all__ = ["BATCH", "SMALL_BUDGET", "ContractError", "Harness", "job_config", "entry_config", "target_sparsity",
           "sparsity_tolerance", "run_lifecycle", "check_contract"]

BATCH = 32

# Keyword arguments that keep the searches and schedules small, by the name they share.
SMALL_BUDGET: dict[str, Any] = {
    "num_iterations": 1, "training_epochs": 1, "admm_num_iterations": 1, "admm_training_epochs": 1,
    "start_temperature": 1.0, "stop_temperature": 0.6, "sparsity_per_iteration": 0.1, "sparsity_per_iter": 0.25,
    "train_episode": 2, "warmup": 1, "n_calibration_batches": 2, "n_points_per_layer": 2, "channel_round": 1,
    "hidden1": 8, "hidden2": 8, "bsize": 2, "rmsize": 4, "seed": 0, "statistics_batch_num": 1,
}


class ContractError(AssertionError):
    """A compressor broke its contract; the message says which promise and where."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def job_config(name: str, config_list: list[dict[str, Any]], ctype: str | None = None,
               framework: str = "torch") -> dict[str, Any]:
    """The job config a trial would receive for compressor ``name`` (its type from the catalog)."""
    if ctype is None:
        ctype = next(e.compression_type for e in catalog.entries(framework) if e.name == name)
    return {"compression_framework": framework, "compression_type": ctype, "compressor": name,
            "config_list": config_list}


def entry_config(entry: catalog.Entry) -> list[dict[str, Any]]:
    """One valid config_list entry built from the schema: 50% of the convs (or what the schema names)."""
    schema = entry.schema
    if entry.quant is not None:
        bits = entry.quant.fixed_bits or 8
        return [{"quant_types": ["weight"], "quant_bits": bits,
                 "op_types": list(schema.op_types or ("Conv2d", "Linear"))}]
    default_types = ("Conv2d",) if entry.model_family == "cnn" else ("default",)
    config: dict[str, Any] = {"op_types": list(schema.op_types or default_types)[:1]}
    for key in schema.required:
        config[key] = {"prune_iterations": 1}.get(key, 0.5)
    if not schema.required:  # e.g. per-structure sparsities, all optional: set each of them
        config.update({key: 0.5 for key in schema.keys if key.endswith("sparsity")})
    return [config]


def target_sparsity(config_list: list[dict[str, Any]]) -> float | None:
    """The configured overall target of a one-entry config_list, if it names one."""
    entry = config_list[0]
    value = entry.get("sparsity", entry.get("final_sparsity"))
    return None if value is None else float(value)


def sparsity_tolerance(entry: catalog.Entry, compressor: Any) -> float:
    """One point, or one pruning unit where a unit is bigger: a search that picks per-layer sparsities
    over whole filters cannot land closer than one filter of its largest layer on a model this small."""
    if entry.structured or entry.scores is not None:
        return 0.01
    units = [layer.module.weight[0].numel() for layer in compressor.layers.values()]
    dense = sum(compressor.dense_weight_numel.values())
    return float(max(0.01, max(units, default=0) / dense))


class Harness:
    """The model, data and callables a compressor may ask for, by parameter name."""

    def __init__(self, tmp_path: Any, digits: zoo.DigitsData, family: str = "cnn") -> None:
        torch.manual_seed(0)
        self.x, self.y = digits.x_train[:4 * BATCH], digits.y_train[:4 * BATCH]
        self.model: nn.Module = model_for(family)
        if family == "transformer":  # each 8x8 digit is 8 tokens of 8 features
            self.x = self.x.squeeze(1)
        for module in self.model.modules():  # trained-like BN scales (a fresh net's gammas all tie)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.5, 1.5)
        self.given: nn.Module = self.model
        self.example = self.x[:2]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.tmp_path = Path(tmp_path)
        self.evaluations = 0

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.x[i:i + BATCH], self.y[i:i + BATCH]) for i in range(0, len(self.x), BATCH)]

    def evaluator(self, *args: Any) -> float:
        model = next((a for a in args if isinstance(a, nn.Module)), self.model)
        self.evaluations += 1
        return float(zoo.evaluate(model, self.x, self.y))

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
        """The keyword arguments ``cls`` asks for, by parameter name, from this harness."""
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


def run_lifecycle(entry: catalog.Entry, harness: Harness, config_list: list[dict[str, Any]] | None = None,
                  cls: type | None = None) -> tuple[Any, nn.Module, list[dict[str, Any]]]:
    """Create and compress as a trial would (rounds, an epoch, training steps): (compressor, model, config).

    A catalog entry is built by ``aup.create_compressor`` from its job config; ``cls`` (a class not in the
    catalog) is built directly, with ``entry`` the catalog entry of the kind it stands for (its schema
    gives the config_list, its facts the tolerance).
    """
    import aup

    config_list = entry_config(entry) if config_list is None else config_list
    kwargs = harness.arguments(cls or registry.import_entry(entry))
    if cls is not None:
        compressor = cls(harness.model, config_list, **kwargs)
    else:
        job = job_config(entry.name, config_list, entry.compression_type, entry.framework)
        compressor = aup.create_compressor(harness.model, job, **kwargs)
    harness.given = harness.model
    returned = compressor.compress()
    harness.model = returned
    for _ in compressor.get_prune_iterations():
        compressor.prune_iteration_start()
        harness.train_steps()
    compressor.update_epoch(1)
    if not compressor.speedup_applied:
        harness.train_steps()
    return compressor, returned, config_list


def check_contract(entry: catalog.Entry, harness: Harness, export_dir: str | Path, cls: type | None = None) -> None:
    """Run ``entry``'s compressor (or ``cls``, standing for that kind: see :func:`run_lifecycle`) through a
    trial's lifecycle; ContractError at the first broken promise."""
    from aup.compression import load_compressed

    keys = list(harness.model.state_dict())
    dense = {k: v.clone() for k, v in harness.model.state_dict().items()}
    compressor, returned, config_list = run_lifecycle(entry, harness, cls=cls)
    model = harness.model
    _require(returned is compressor.model, "compress() must return the compressor's bound model")
    if returned is not harness.given:  # a search NNI defines to return a pruned copy: the input is untouched
        _require(all(torch.equal(v, dense[k]) for k, v in harness.given.state_dict().items()),
                 "a compressor returning a copy must leave the model it was given untouched")
    _require(list(model.state_dict()) == keys, "the state_dict keys must not change")
    _check_masks(compressor.get_masks(), dict(model.named_modules()))
    if entry.compression_type == "pruning":
        _check_sparsity(entry, compressor, config_list)
    model.eval()
    with torch.no_grad():
        expected = model(harness.example)
    path = compressor.export_model("model.pt", folder_name=str(Path(export_dir)), dummy_input=harness.example)
    loaded = load_compressed(path).eval()
    _require(list(loaded.state_dict()) == list(model.state_dict()), "the exported model must keep the state_dict keys")
    with torch.no_grad():
        torch.testing.assert_close(loaded(harness.example), expected, rtol=1e-5, atol=1e-4)


def _check_masks(masks: dict[str, Any], modules: dict[str, nn.Module]) -> None:
    for name, mask in masks.items():
        # NNI's keys; a module holding other parameters (attention's in_proj_weight) may mask those too
        _require({"weight", "bias"} <= set(mask), f"masks[{name!r}] needs NNI's keys weight and bias")
        for key, tensor in mask.items():
            param = getattr(modules[name], key, None)
            if tensor is not None:
                _require(isinstance(param, torch.Tensor) and tensor.shape == param.shape,
                         f"masks[{name!r}][{key!r}] must have the parameter's shape")


def _check_sparsity(entry: catalog.Entry, compressor: Any, config_list: list[dict[str, Any]]) -> None:
    _require(bool(compressor.get_masks()) or compressor.speedup_applied, "a pruner must leave masks")
    target = target_sparsity(config_list)
    if target is None:
        return
    achieved, tolerance = compressor.sparsity(), sparsity_tolerance(entry, compressor)
    if entry.exact_sparsity:
        _require(math.isclose(achieved, target, abs_tol=tolerance),
                 f"achieved sparsity {achieved:.4f}, configured {target} (+-{tolerance:.3f})")
    else:  # a target of its own definition: never more than the configured one
        _require(0 < achieved <= target + tolerance, f"achieved sparsity {achieved:.4f} above the target {target}")
