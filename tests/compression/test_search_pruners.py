"""Search pruners: simulated annealing, NetAdapt, AutoCompress, AMC on digits with tiny budgets.

Each test checks what makes the algorithm itself (Metropolis acceptance, NetAdapt's shrinking
resource, AutoCompress's rounds ending in a physically smaller model, AMC's budget) plus the shared
contract: structured masks that ``apply_speedup`` shrinks exactly, files only in the given directory.
"""
from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch

import aup
from aup.compression.torch import zoo
from aup.compression.torch.base import count_flops_params
from aup.compression.torch.pruners._search import metropolis_accept
from aup.compression.torch.pruners.simulated_annealing import rescale_sparsities


CONV50 = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]


@pytest.fixture(scope="module")
def trained(digits: zoo.DigitsData) -> torch.nn.Module:
    """A wider digits CNN than the session's (16/32 channels): the search budgets here are set for it."""
    torch.manual_seed(0)
    model = zoo.DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for epoch in range(3):
        zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
    return model


@pytest.fixture
def model(trained: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(trained)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run in an empty directory, to check that nothing is written there."""
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


def _accuracy(digits):
    return lambda m: zoo.evaluate(m, digits.x_test, digits.y_test)


def _assert_exact_shrink(compressor, model, digits) -> None:
    """apply_speedup removes the masked filters and leaves the outputs unchanged."""
    x = digits.x_test[:16]
    model.eval()
    with torch.no_grad():
        before = model(x)
    compressor.apply_speedup(x[:1])
    assert compressor.shrink_report.removed, compressor.shrink_report.notes
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-4)


# ----------------------------------------------------------------------------- simulated annealing
def test_metropolis_rule_frequency_matches_exp_minus_delta_over_t():
    rng = np.random.default_rng(0)
    for delta, temperature in ((0.2, 1.0), (1.0, 0.5)):
        hits = sum(metropolis_accept(delta, temperature, rng) for _ in range(20000))
        assert abs(hits / 20000 - math.exp(-delta / temperature)) < 0.015
    assert metropolis_accept(0.0, 1.0, rng)


class _FixedDraw:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.slow
@pytest.mark.parametrize("draw, accepted", [(0.80, True), (0.84, False)])
def test_sa_accepts_worse_candidate_with_metropolis_probability(cfg, model, draw, accepted, cwd, tmp_path):
    scores = iter([0.9] + [0.7] * 50)  # the start point, then every candidate is worse by 0.2
    pruner = aup.create_compressor(model, cfg("simulated_annealing", CONV50), lambda m: next(scores),
                                   start_temperature=1.0, stop_temperature=0.95, cool_down_rate=0.9,
                                   experiment_data_dir=str(tmp_path / "sa"), seed=0, schedule="one_per_temperature")
    pruner.accept_rng = _FixedDraw(draw)  # exp(-0.2 / 1.0) = 0.8187
    pruner.compress()
    step = pruner.history[1]
    assert step["temperature"] == 1.0 and step["score"] == 0.7
    assert step["accepted"] is accepted
    assert pruner.history[-1]["best_score"] == 0.9
    assert os.listdir(cwd) == []
    assert {"search_history.json", "best_config_list.json"} <= set(os.listdir(tmp_path / "sa"))


def test_sa_rescaling_meets_target_and_prunes_larger_layers_more():
    counts = {"small": 100, "mid": 1000, "large": 10000}
    sparsities = rescale_sparsities(np.array([0.9, 0.1, 0.5]), counts, 0.5)
    overall = sum(sparsities[n] * c for n, c in counts.items()) / sum(counts.values())
    assert overall == pytest.approx(0.5)
    assert sparsities["small"] < sparsities["mid"] < sparsities["large"]


@pytest.mark.slow
def test_sa_search_masks_and_shrinks_model(cfg, model, digits, cwd, tmp_path):
    pruner = aup.create_compressor(model, cfg("simulated_annealing", CONV50), _accuracy(digits),
                                   start_temperature=1.0, stop_temperature=0.5, experiment_data_dir=str(tmp_path), seed=1,
                                   schedule="one_per_temperature", in_place=True)
    pruner.compress()
    assert pruner.n_steps == len(pruner.history) - 1 == 7
    assert pruner.sparsity() == pytest.approx(0.5, abs=0.05)
    masks = pruner.get_masks()
    assert set(masks) >= {"conv1", "conv2", "bn1", "bn2"}  # BN channels of pruned filters are masked too
    _assert_exact_shrink(pruner, model, digits)
    assert os.listdir(cwd) == []


# ----------------------------------------------------------------------------- NetAdapt
class ThreeConv(torch.nn.Module):
    """Two equally large convs compete for every NetAdapt step (conv1 is too small to lose a step)."""

    def __init__(self) -> None:
        super().__init__()
        layers = []
        for cin in (1, 16, 16):
            layers += [torch.nn.Conv2d(cin, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.fc = torch.nn.Linear(16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(self.features(x), 2), 1))


@pytest.mark.slow
def test_net_adapt_resource_drops_every_iteration(cfg, digits, cwd, tmp_path):
    torch.manual_seed(0)
    model = ThreeConv()
    evaluated = []

    def fine_tune(m):
        optimizer = torch.optim.Adam(m.parameters(), 1e-3)
        zoo.train_epoch(m, digits.x_train[:256], digits.y_train[:256], optimizer, seed=0)

    def evaluator(m):
        evaluated.append(1)
        return zoo.evaluate(m, digits.x_test, digits.y_test)

    pruner = aup.create_compressor(model, cfg("net_adapt", CONV50), fine_tune, evaluator,
                                   sparsity_per_iteration=0.15, experiment_data_dir=str(tmp_path),
                                   resource="configured_layers")
    pruner.compress()
    remaining = [h["remaining_weights"] for h in pruner.history]
    total = remaining[0]
    step = int(total * 0.15)
    assert len(remaining) >= 3
    for before, after in zip(remaining, remaining[1:-1]):
        assert before - after >= step  # each iteration removes at least sparsity_per_iteration of the total
    assert remaining[-1] < remaining[-2]
    assert remaining[-1] <= total * 0.5  # stops at the target
    assert pruner.sparsity() >= 0.5
    iterations = len(remaining) - 1
    assert len(evaluated) >= 1 + 2 * (iterations - 1)  # both large convs were candidates each iteration
    assert {h["layer"] for h in pruner.history[1:]} <= {"features.3", "features.6"}
    assert {"net_adapt_history.json", "model_current.pth", "best_config_list.json"} <= set(os.listdir(tmp_path))
    _assert_exact_shrink(pruner, model, digits)
    assert os.listdir(cwd) == []


# ----------------------------------------------------------------------------- AutoCompress
@pytest.mark.slow
def test_auto_compress_rounds_end_physically_smaller(cfg, model, digits, cwd, tmp_path):
    def trainer(m, optimizer, criterion, epoch, callback=None):
        m.train()
        for start in range(0, 512, 64):
            optimizer.zero_grad()
            criterion(m(digits.x_train[start:start + 64]), digits.y_train[start:start + 64]).backward()
            if callback is not None:
                callback()
            optimizer.step()

    params_before = sum(p.numel() for p in model.parameters())
    pruner = aup.create_compressor(model, cfg("auto_compress", CONV50), trainer, _accuracy(digits),
                                   digits.x_test[:1], num_iterations=2, admm_num_iterations=2,
                                   admm_training_epochs=1, start_temperature=1.0, stop_temperature=0.6,
                                   experiment_data_dir=str(tmp_path), seed=0)
    assert pruner.round_sparsity == pytest.approx(1 - 0.5 ** 0.5)
    pruner.compress()
    assert [h["round"] for h in pruner.history] == [1, 2]
    assert pruner.speedup_applied
    assert model.conv1.out_channels < 16 and model.conv2.out_channels < 32
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert pruner.sparsity() >= 0.45
    assert zoo.evaluate(model, digits.x_test, digits.y_test) > 0.5
    path = pruner.export_model("model.pth", folder_name=str(tmp_path / "out"))
    assert os.path.exists(path)
    assert {"round_1", "round_2", "auto_compress_history.json"} <= set(os.listdir(tmp_path))
    assert os.listdir(cwd) == []


def test_auto_compress_needs_dummy_input(cfg, digits):
    model = zoo.DigitsCNN()
    with pytest.raises(ValueError, match="dummy_input"):
        aup.create_compressor(model, cfg("auto_compress", CONV50), lambda *a, **k: None, _accuracy(digits), None)


# ----------------------------------------------------------------------------- AMC
def _val_loader(digits):
    return [(digits.x_test[i:i + 64], digits.y_test[i:i + 64]) for i in range(0, len(digits.y_test), 64)]


def _loader_accuracy(loader, m):
    return zoo.evaluate(m, torch.cat([b[0] for b in loader]), torch.cat([b[1] for b in loader]))


AMC_SMALL = dict(flops_ratio=0.5, channel_round=2, train_episode=8, warmup=3, n_calibration_batches=3,
                 hidden1=32, hidden2=32, bsize=16, seed=0)


@pytest.mark.slow
def test_amc_ratios_respect_flops_budget(cfg, model, digits, cwd, tmp_path):
    dense, _, _ = count_flops_params(model, digits.x_test[:1], verbose=False)
    loader = _val_loader(digits)
    pruner = aup.create_compressor(model, cfg("amc", [{"op_types": ["Conv2d", "Linear"]}]), _loader_accuracy,
                                   loader, output_dir=str(tmp_path), **AMC_SMALL)
    pruner.compress()
    budget = 0.5 * dense
    assert pruner.env.total_flops == pytest.approx(dense)
    for record in pruner.history:  # every episode's policy fits the budget
        assert record["flops"] <= budget * 1.0001
        assert all(0.2 - 1e-9 <= r <= 1.0 for r in record["ratios"].values())
        assert all(k % 2 == 0 for k in record["channels"].values())  # channel_round
    assert set(pruner.best_ratios) == {"conv1", "conv2", "fc1"}  # fc2 produces the outputs
    _assert_exact_shrink(pruner, model, digits)
    shrunk, _, _ = count_flops_params(model, digits.x_test[:1], verbose=False)
    assert shrunk <= budget * 1.05
    assert shrunk == pytest.approx(pruner.best["flops"])
    assert {"amc_history.json", "best_policy.json", "ddpg_agent.pt"} <= set(os.listdir(tmp_path))
    assert os.listdir(cwd) == []


@pytest.mark.slow
def test_amc_least_squares_refit_restores_consumer_outputs(cfg, model, digits):
    loader = _val_loader(digits)
    pruner = aup.create_compressor(model, cfg("amc", [{"op_types": ["Conv2d", "Linear"]}]), _loader_accuracy,
                                   loader, **AMC_SMALL)
    env = pruner.build_env()
    ratios = {0: 0.5, 1: 0.5, 2: 1.0}
    plain, refit = copy.deepcopy(model), copy.deepcopy(model)
    masks = env.masks_for(plain, ratios)
    env.apply(plain, masks)
    env.reconstruct(refit, masks)
    env.apply(refit, masks)
    x, y = env.samples["conv2"]

    def error(m):
        w = m.conv2.weight.detach().flatten(1).double()
        kept = masks["conv1"]["weight"].flatten(1).sum(1) > 0
        cols = kept.repeat_interleave(9)
        return float(((x[:, cols] @ w[:, cols].T) - y).norm())

    assert error(refit) < 0.9 * error(plain)  # least squares on the calibration samples beats plain zeroing


@pytest.mark.slow
def test_amc_works_on_mobilenetv2_and_resnet(cfg, digits):
    loader = _val_loader(digits)
    for net in (zoo.mobilenetv2_small(in_channels=1), zoo.resnet_small(in_channels=1)):
        dense, _, _ = count_flops_params(net, digits.x_test[:1], verbose=False)
        pruner = aup.create_compressor(net, cfg("amc", [{"op_types": ["Conv2d", "Linear"]}]), _loader_accuracy,
                                       loader, **{**AMC_SMALL, "train_episode": 2, "warmup": 2})
        pruner.compress()
        net.eval()
        pruner.apply_speedup(digits.x_test[:1])
        shrunk, _, _ = count_flops_params(net, digits.x_test[:1], verbose=False)
        assert shrunk <= 0.5 * dense * 1.05


# ----------------------------------------------------------------------------- argument errors
@pytest.mark.parametrize("name, args, kwargs, match", [
    ("simulated_annealing", (lambda m: 0.0,), {"base_algo": "l3"}, "base_algo must be one of"),
    ("simulated_annealing", (lambda m: 0.0,), {"optimize_mode": "max"}, "optimize_mode must be one of"),
    ("simulated_annealing", (lambda m: 0.0,), {"start_temperature": 10, "stop_temperature": 20}, "stop_temperature"),
    ("net_adapt", (lambda m: None, lambda m: 0.0), {"sparsity_per_iteration": 1.5}, "sparsity_per_iteration"),
    ("amc", (lambda l, m: 0.0, [torch.zeros(1, 1, 8, 8)]), {"reward": "acc"}, "reward must be one of"),
])
def test_bad_arguments_are_one_line_value_errors(cfg, name, args, kwargs, match):
    entries = [{"op_types": ["Conv2d"]}] if name == "amc" else CONV50
    model = zoo.DigitsCNN()
    with pytest.raises(ValueError, match=match) as info:
        aup.create_compressor(model, cfg(name, entries), *args, **kwargs)
    assert "\n" not in str(info.value)


def test_filter_base_algo_refuses_linear_layers(cfg):
    with pytest.raises(ValueError, match="prunes only Conv2d"):
        aup.create_compressor(zoo.DigitsCNN(), cfg("simulated_annealing", [{"sparsity": 0.5, "op_types": ["default"]}]),
                              lambda m: 0.0)


@pytest.mark.slow  # a child process (the folder goes at its exit)
def test_a_search_pruner_without_a_data_dir_leaves_no_folder_behind(tmp_path) -> None:
    """Its working files go to a scratch folder removed when the process ends (issue 25 item 8: trials
    left ``aup-<algo>-*`` folders in the temp dir); a folder the user names is kept."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys, tempfile
        tempfile.tempdir = sys.argv[1]
        from aup.compression.torch.pruners._search import working_dir
        print(working_dir(None, "net_adapt"))
        print(working_dir(sys.argv[1] + "/kept", "net_adapt"))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    scratch, kept = done.stdout.split()
    assert scratch.startswith(str(tmp_path / "aup-net_adapt-"))
    assert not os.path.exists(scratch) and os.path.isdir(kept)
