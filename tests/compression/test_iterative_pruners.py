"""What makes each iterative pruner that algorithm: AGP's cubic schedule, the lottery ticket's
rewinding, ADMM's convergence to the sparse projection, the sensitivity pruner's use of its curves.

Small models, a slice of the digits data, fixed seeds, one thread (the CI machine is shared).
"""
from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.pruners.admm import admm_optimize  # noqa: E402
from aup.compression.torch.pruners.magnitude import smallest_magnitude_mask  # noqa: E402
from aup.compression.torch.pruners.sensitivity import max_prune_ratio  # noqa: E402

N_TRAIN = 384


@pytest.fixture(scope="module")
def digits(pretrained_digits):
    """A slice of the training set keeps the schedules' training short; the test set is whole."""
    d = pretrained_digits.data
    return zoo.DigitsData(d.x_train[:N_TRAIN], d.y_train[:N_TRAIN], d.x_test, d.y_test)


@pytest.fixture(scope="module")
def pretrained_state(pretrained_digits):
    return pretrained_digits.state


def pretrained(state):
    model = zoo.DigitsCNN(width=8)
    model.load_state_dict(state)
    return model


class PlainCNN(nn.Module):
    """Convs with biases and no BatchNorm: masked filters output exactly zero, so they shrink."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def layer_sparsity(masks, name):
    mask = masks[name]["weight"]
    return float((mask == 0).sum()) / mask.numel()


def zero_filters(masks, name):
    return int((masks[name]["weight"].flatten(1).abs().sum(1) == 0).sum())


# ----------------------------------------------------------------------------- AGP

def cubic(epoch, initial=0.1, final=0.8, start=1, end=7, freq=2):
    """Zhu & Gupta's schedule with NNI 2.0's span, written out independently of the pruner."""
    if epoch >= end:
        return final
    span = ((end - start - 1) // freq) * freq
    return final + (initial - final) * (1 - (epoch - start) / span) ** 3


@pytest.mark.slow
def test_agp_sparsity_at_each_epoch_follows_the_cubic_formula(cfg, digits, pretrained_state):
    model = pretrained(pretrained_state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    entry = {"initial_sparsity": 0.1, "final_sparsity": 0.8, "start_epoch": 1, "end_epoch": 7, "frequency": 2,
             "op_types": ["default"]}
    pruner = aup.create_compressor(model, cfg("agp", [entry]), optimizer, pruning_algorithm="level")
    pruner.compress()
    assert pruner.sparsity() == 0.0  # epoch 0 is before start_epoch
    expected = 0.0
    previous_zeros = None
    for epoch in range(1, 10):
        pruner.update_epoch(epoch)
        if epoch >= 1 and (epoch - 1) % 2 == 0:  # on the frequency grid from start_epoch
            expected = cubic(epoch)
        masks = pruner.get_masks()
        for name in ("conv1", "conv2", "fc1", "fc2"):
            numel = masks[name]["weight"].numel()
            assert layer_sparsity(masks, name) == pytest.approx(int(expected * numel) / numel), (epoch, name)
        zeros = masks["fc1"]["weight"] == 0
        if previous_zeros is not None:
            assert bool((zeros | ~previous_zeros).all())  # the pruned set only grows
        previous_zeros = zeros
        zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
        assert float((model.fc1.weight.detach()[zeros]).abs().sum()) == 0.0  # masks hold during training
    assert [e for e, _ in pruner.history] == [1, 3, 5]  # span 4: final at 5, nothing changes at 7
    assert pruner.history[1][1]["conv1"] == pytest.approx(0.8 - 0.7 * 0.5 ** 3)


@pytest.mark.slow
def test_agp_with_a_filter_criterion_prunes_whole_filters_that_speedup_removes(cfg, digits):
    torch.manual_seed(0)
    model = PlainCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    entry = {"initial_sparsity": 0.0, "final_sparsity": 0.5, "start_epoch": 0, "end_epoch": 3, "frequency": 1,
             "op_types": ["Conv2d"]}
    pruner = aup.create_compressor(model, cfg("agp", [entry]), optimizer=optimizer, pruning_algorithm="l1")
    pruner.compress()
    counts = []
    for epoch in range(1, 4):
        zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
        pruner.update_epoch(epoch)
        masks = pruner.get_masks()
        counts.append((zero_filters(masks, "conv1"), zero_filters(masks, "conv2")))
    # targets 0.4375 (epoch 1, span 2), 0.5, 0.5: int(s * filters) whole filters
    assert counts == [(3, 7), (4, 8), (4, 8)]
    x = digits.x_test[:4]
    masked_out = model(x).detach()
    pruner.apply_speedup(digits.x_test[:1])
    assert (model.conv1.out_channels, model.conv2.out_channels) == (4, 8)
    assert torch.allclose(model(x), masked_out, atol=1e-4)


@pytest.mark.slow
def test_agp_statistics_criterion_waits_for_its_batches(cfg, digits, pretrained_state):
    model = pretrained(pretrained_state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    entry = {"initial_sparsity": 0.25, "final_sparsity": 0.5, "start_epoch": 0, "end_epoch": 2, "op_types": ["Conv2d"]}
    pruner = aup.create_compressor(model, cfg("agp", [entry]), optimizer, pruning_algorithm="apoz")
    pruner.compress()
    assert pruner.sparsity() == 0.0 and pruner.pending  # no activations seen yet
    zoo.train_epoch(model, digits.x_train[:64], digits.y_train[:64], optimizer)
    assert zero_filters(pruner.get_masks(), "conv2") == 4  # int(0.25 * 16) after one batch
    pruner.update_epoch(1)
    assert zero_filters(pruner.get_masks(), "conv2") == 4 and pruner.pending  # fresh statistics first
    zoo.train_epoch(model, digits.x_train[:64], digits.y_train[:64], optimizer)
    assert zero_filters(pruner.get_masks(), "conv2") == 8
    pruner.apply_speedup(digits.x_test[:1])  # BatchNorm channels follow the pruned filters
    assert model.conv2.out_channels == 8 and model.bn2.num_features == 8


def test_agp_argument_errors_are_one_line(cfg):
    entry = [{"final_sparsity": 0.5, "op_types": ["Conv2d"]}]
    with pytest.raises(ValueError, match="optimizer is required"):
        aup.create_compressor(zoo.DigitsCNN(width=8), cfg("agp", entry))
    model = zoo.DigitsCNN(width=8)
    with pytest.raises(ValueError, match="pruning_algorithm: expected one of"):
        aup.create_compressor(model, cfg("agp", entry), torch.optim.SGD(model.parameters(), 0.1), pruning_algorithm="l3")
    with pytest.raises(ValueError, match="cannot compress 'fc1'"):
        aup.create_compressor(model, cfg("agp", [{"final_sparsity": 0.5, "op_types": ["default"]}]),
                              torch.optim.SGD(model.parameters(), 0.1), pruning_algorithm="l1")


# ----------------------------------------------------------------------------- lottery ticket

@pytest.mark.slow
def test_lottery_ticket_rewinds_to_the_saved_initial_weights_and_optimizer_state(cfg, digits):
    torch.manual_seed(1)
    model = zoo.DigitsCNN(width=8)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    config_list = [{"prune_iterations": 3, "sparsity": 0.875, "op_types": ["Conv2d", "Linear"]}]
    pruner = aup.create_compressor(model, cfg("lottery_ticket", config_list), optimizer=optimizer, lr_scheduler=scheduler)
    pruner.compress()
    rounds = list(pruner.get_prune_iterations())
    assert rounds == [0, 1, 2, 3]  # dense round + prune_iterations
    for k in rounds:
        trained_fc1 = model.fc1.weight.detach().clone()
        previous = pruner.get_masks()["fc1"]["weight"]
        pruner.prune_iteration_start()
        masks = pruner.get_masks()
        expected = 1 - 0.5 ** k  # keep ratio (1 - 0.875) ** (1 / 3) = 0.5 per round
        numel = masks["fc1"]["weight"].numel()
        assert layer_sparsity(masks, "fc1") == pytest.approx(int(expected * numel) / numel)
        # the new mask prunes the smallest *trained* weights among the survivors
        assert torch.equal(masks["fc1"]["weight"], smallest_magnitude_mask(trained_fc1 * previous, expected))
        # rewound: every surviving weight is back at its initial value, every buffer too
        for key, value in model.state_dict().items():
            module, _, param = key.rpartition(".")
            mask = masks.get(module, {}).get(param)
            assert torch.equal(value, initial[key] * mask if mask is not None else initial[key]), key
        assert optimizer.state_dict()["state"] == {}  # momentum buffers reset
        assert scheduler.last_epoch == 0 and optimizer.param_groups[0]["lr"] == 0.05
        for epoch in range(2):
            zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)
            scheduler.step()
    assert pruner.sparsity() == pytest.approx(0.875, abs=1e-3)
    with pytest.raises(ValueError, match="all 4 rounds are done"):
        pruner.prune_iteration_start()


@pytest.mark.slow
def test_lottery_ticket_without_reset_keeps_the_trained_weights(cfg, digits):
    torch.manual_seed(1)
    model = zoo.DigitsCNN(width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = aup.create_compressor(
        model, cfg("lottery_ticket", [{"prune_iterations": 2, "sparsity": 0.5, "op_types": ["Linear"]}]),
        optimizer, reset_weights=False)
    pruner.compress()
    pruner.prune_iteration_start()
    zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer)
    trained = model.fc2.weight.detach().clone()
    pruner.prune_iteration_start()
    mask = pruner.get_masks()["fc2"]["weight"]
    assert torch.equal(model.fc2.weight.detach(), trained * mask)


# ----------------------------------------------------------------------------- ADMM

def make_trainer(digits, calls):
    def trainer(model, optimizer, criterion, epoch, callback):
        calls.append((type(optimizer).__name__, optimizer.param_groups[0]["lr"], type(criterion).__name__, epoch))
        model.train()
        perm = torch.randperm(len(digits.y_train), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(perm), 32):
            idx = perm[start:start + 32]
            optimizer.zero_grad()
            criterion(model(digits.x_train[idx]), digits.y_train[idx]).backward()
            callback()
            optimizer.step()
    return trainer


@pytest.mark.slow
def test_admm_auxiliary_variables_converge_to_the_sparse_projection(cfg, digits, pretrained_state):
    calls: list = []
    model = pretrained(pretrained_state)
    config_list = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    pruner = aup.create_compressor(model, cfg("admm", config_list), make_trainer(digits, calls),
                                   num_iterations=5, training_epochs=1, row=0.2)
    pruner.compress()
    assert calls == [("Adam", 1e-3, "CrossEntropyLoss", 0)] * 5  # NNI's own optimizer and loss
    result = pruner.admm
    # Z lies in the sparse set (half the filters exactly zero), and W is pulled onto it
    for name, filters in (("conv1", 8), ("conv2", 16)):
        assert int((result.Z[name].flatten(1).abs().sum(1) == 0).sum()) == filters // 2
    residuals = result.primal_residuals
    assert residuals[-1] < 0.2 * residuals[0] and residuals[-1] < 0.1
    # the final masks are the base algorithm's (l1) on the final weights: the ones Z keeps
    masks = pruner.get_masks()
    for name in ("conv1", "conv2"):
        assert torch.equal(masks[name]["weight"].flatten(1)[:, 0] != 0, result.Z[name].flatten(1).abs().sum(1) != 0)

    x = digits.x_test[:8]
    masked_out = model.eval()(x).detach()
    pruner.apply_speedup(digits.x_test[:1])  # l1 filters (and their BatchNorm channels) really go
    assert (model.conv1.out_channels, model.conv2.out_channels) == (4, 8)
    assert torch.allclose(model(x), masked_out, atol=1e-4)

    # without the penalty pulling W (row ~ 0) the weights stay far from the sparse set
    weak = pretrained(pretrained_state)
    layers = {"conv1": weak.conv1, "conv2": weak.conv2}
    weak_result = admm_optimize(weak, layers, {"conv1": 0.5, "conv2": 0.5}, make_trainer(digits, []),
                                num_iterations=2, training_epochs=1, row=1e-6, base_algo="l1")
    assert weak_result.primal_residuals[-1] > 3 * residuals[-1]


@pytest.mark.slow
def test_admm_level_base_projects_elementwise(cfg, digits, pretrained_state):
    model = pretrained(pretrained_state)
    pruner = aup.create_compressor(model, cfg("admm", [{"sparsity": 0.75, "op_names": ["fc1"]}]),
                                   trainer=make_trainer(digits, []), num_iterations=2, training_epochs=1,
                                   row=0.05, base_algo="level")
    pruner.compress()
    z = pruner.admm.Z["fc1"]
    assert int((z == 0).sum()) == int(0.75 * z.numel())
    assert layer_sparsity(pruner.get_masks(), "fc1") == pytest.approx(int(0.75 * z.numel()) / z.numel())


def test_admm_argument_errors(cfg):
    model = zoo.DigitsCNN(width=8)
    with pytest.raises(ValueError, match="trainer is required"):
        aup.create_compressor(model, cfg("admm", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]))
    with pytest.raises(ValueError, match="base_algo: expected one of"):
        aup.create_compressor(model, cfg("admm", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]), lambda **k: None,
                              base_algo="taylorfo")


# ----------------------------------------------------------------------------- sensitivity

def test_default_proportion_is_the_largest_sparsity_within_the_threshold():
    curves = {"a": {0.1: 0.95, 0.2: 0.94, 0.3: 0.80, 0.4: 0.5}, "b": {0.1: 0.70, 0.2: 0.6}, "c": {0.1: 0.96, 0.2: 0.95}}
    # NNI's rule: the first sparsity whose accuracy falls below ori - threshold (or the last tested)
    assert max_prune_ratio(0.96, 0.05, curves) == {"a": 0.3, "b": 0.1, "c": 0.2}


def conv_density(model):
    weights = [model.conv1.weight, model.conv2.weight]
    return float(sum(int((w != 0).sum()) for w in weights)) / sum(w.numel() for w in weights)


@pytest.mark.slow
def test_sensitivity_pruner_prunes_by_its_proportions_until_the_target(cfg, pretrained_state, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = pretrained(pretrained_state)
    seen = []

    def only_conv2(ori_acc, threshold, sensitivities):
        seen.append(sorted(sensitivities))
        return {"conv1": 0.0, "conv2": 1.0}

    pruner = aup.create_compressor(model, cfg("sensitivity", [{"sparsity": 0.4, "op_types": ["Conv2d"]}]),
                                   lambda m: conv_density(m), base_algo="level", sparsity_proportion_calc=only_conv2,
                                   sparsity_per_iter=0.2, acc_drop_threshold=1.0, checkpoint_dir="ckpt")
    pruner.compress(eval_args=[model])
    # analysed before each round; 0.2 of the weights per round (the last rounds close the gap that
    # int(sparsity * numel) leaves) until 0.4 overall
    assert seen == [["conv1", "conv2"]] * len(pruner.history)
    assert [h["sparsity"] for h in pruner.history][:2] == pytest.approx([0.2, 0.4], abs=2e-3)
    assert pruner.current_sparsity() == pytest.approx(0.4, abs=1e-3)
    masks = pruner.get_masks()
    assert layer_sparsity(masks, "conv1") == 0.0
    weights = model.conv1.weight.numel() + model.conv2.weight.numel()
    assert layer_sparsity(masks, "conv2") == pytest.approx(0.4 * weights / model.conv2.weight.numel(), abs=1e-3)
    # curves: level pruning of a layer removes ever more of the conv weights, never fewer
    for curve in pruner.sensitivities.values():
        values = [curve[s] for s in sorted(curve)]
        assert values == sorted(values, reverse=True)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert len(files) == 3 * len(pruner.history) and files[0].startswith("Iter_1_") and any(f.endswith("_sensitivity.csv") for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing else in the working directory


@pytest.mark.slow
def test_sensitivity_pruner_stops_and_undoes_a_round_past_the_accuracy_threshold(cfg, pretrained_state, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = pretrained(pretrained_state)
    pruner = aup.create_compressor(model, cfg("sensitivity", [{"sparsity": 0.8, "op_types": ["Conv2d"]}]),
                                   lambda: conv_density(model), base_algo="l1", sparsity_per_iter=0.2,
                                   acc_drop_threshold=0.3)
    with pytest.warns(UserWarning, match=r"round \d dropped the accuracy"):
        pruner.compress()
    # the "accuracy" here is the fraction of conv weights left: every kept round is within 0.3 of 1.0
    assert pruner.history and all(h["finetuned_acc"] >= 0.7 for h in pruner.history)
    assert conv_density(model) == pytest.approx(1 - pruner.sparsity())  # the undone round left no zeros
    assert 0.1 < pruner.sparsity() <= 0.3 < 0.8
    assert list(tmp_path.iterdir()) == []  # no checkpoint_dir: no files


@pytest.mark.slow
def test_sensitivity_pruner_on_digits_reaches_target_and_shrinks(cfg, digits):
    torch.manual_seed(0)
    model = PlainCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(3):
        zoo.train_epoch(model, digits.x_train, digits.y_train, optimizer, seed=epoch)

    def evaluator(m):
        return zoo.evaluate(m, digits.x_test, digits.y_test)

    def finetuner(m):
        zoo.train_epoch(m, digits.x_train, digits.y_train, torch.optim.SGD(m.parameters(), 0.01, momentum=0.9))

    pruner = aup.create_compressor(model, cfg("sensitivity", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]),
                                   evaluator, finetuner, sparsity_per_iter=0.25, acc_drop_threshold=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.compress(eval_args=[model], finetune_args=[model])
    one_filter = 8 * 9 / (8 * 9 + 16 * 8 * 9)  # the granularity of whole-filter pruning here
    assert pruner.current_sparsity() == pytest.approx(0.5, abs=one_filter)
    assert len(pruner.history) >= 2
    masks = pruner.get_masks()
    pruned = {name: zero_filters(masks, name) for name in ("conv1", "conv2")}
    assert sum(pruned.values()) > 0
    pruner.apply_speedup(digits.x_test[:1])
    assert model.conv1.out_channels == 8 - pruned["conv1"] and model.conv2.out_channels == 16 - pruned["conv2"]
    assert evaluator(model) >= pruner.ori_acc - 0.2


# ----------------------------------------------------------------------------- other models

@pytest.mark.slow
def test_schedules_work_on_models_they_were_not_written_for(cfg):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    model = zoo.resnet_small()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    entry = {"initial_sparsity": 0.0, "final_sparsity": 0.5, "start_epoch": 0, "end_epoch": 2, "op_types": ["Conv2d"]}
    pruner = aup.create_compressor(model, cfg("agp", [entry]), optimizer, pruning_algorithm="fpgm",
                                   dependency_aware=True, dummy_input=x[:1])
    pruner.compress()
    for epoch in (1, 2):
        zoo.train_epoch(model, x, y, optimizer, batch_size=8)
        pruner.update_epoch(epoch)
    out = model.eval()(x[:2]).detach()
    pruner.apply_speedup(x[:1])  # residual sets share their channels, so everything shrinks
    assert model.layer1[0].conv2.out_channels == model.conv1.out_channels == 8
    assert torch.allclose(model(x[:2]), out, atol=1e-4)

    model = zoo.vgg_small()
    pruner = aup.create_compressor(model, cfg("sensitivity", [{"sparsity": 0.3, "op_types": ["Conv2d"]}]),
                                   lambda: -float(nn.functional.cross_entropy(model.eval()(x), y).detach()),
                                   sparsity_per_iter=0.3, acc_drop_threshold=10.0)
    pruner.compress()
    assert pruner.current_sparsity() == pytest.approx(0.3, abs=0.02)
    out = model.eval()(x[:2]).detach()
    pruner.apply_speedup(x[:1])
    assert torch.allclose(model(x[:2]), out, atol=1e-4)
