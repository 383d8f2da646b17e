"""Each pruner's defining behaviour: which weights/filters/channels it picks and why.

The conv1/conv2 cases are NNI 2.0's own test cases (tests/test_compressor_torch.py), so the masks
match NNI's on them.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402
from aup.compression.torch.graph.dependency import conv_dependency_sets  # noqa: E402


def filter_sums(masks, name):
    return masks[name]["weight"].sum(dim=(1, 2, 3)).tolist()


W1 = torch.tensor(np.array([np.ones((1, 5, 5)) * i for i in range(5)])).float()  # filter i is all i
W2 = torch.tensor(np.array([[[[i + 1] * 5] * 5] * 5 for i in range(10)])).float()  # filter i is all i+1
TWO_ENTRIES = [{"sparsity": 0.2, "op_types": ["Conv2d"], "op_names": ["conv1"]},
               {"sparsity": 0.6, "op_types": ["Conv2d"], "op_names": ["conv2"]}]


def test_fpgm_prunes_the_geometric_median_filters(cfg, make_nni_model):
    # filters 1..10 on a line: the sums of distances are smallest in the middle (filters 4, 5)
    model = make_nni_model()
    model.conv2.weight.data = W2.clone()
    config_list = [{"sparsity": 0.6, "op_types": ["Conv2d"]}, {"sparsity": 0.2, "op_types": ["Conv2d"]}]
    pruner = aup.create_compressor(model, cfg("fpgm", config_list))
    pruner.compress()
    masks = pruner.get_masks()
    assert filter_sums(masks, "conv2") == [125, 125, 125, 125, 0, 0, 125, 125, 125, 125]  # last entry (0.2) wins
    model = make_nni_model()
    model.conv2.weight.data = W2.clone()
    pruner = aup.create_compressor(model, cfg("fpgm", config_list[:1]))
    pruner.compress()
    masks = pruner.get_masks()
    assert filter_sums(masks, "conv2") == [125, 125, 0, 0, 0, 0, 0, 0, 125, 125]
    assert masks["conv2"]["bias"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]  # bias of pruned filters masked


def test_l1_filter_prunes_smallest_l1_norms_and_their_biases(cfg, make_nni_model):
    model = make_nni_model()
    model.conv1.weight.data = W1.clone()
    model.conv2.weight.data = W2.clone()
    pruner = aup.create_compressor(model, cfg("l1_filter", TWO_ENTRIES))
    pruner.compress()
    masks = pruner.get_masks()
    assert filter_sums(masks, "conv1") == [0, 25, 25, 25, 25]  # int(0.2 * 5) = 1
    assert filter_sums(masks, "conv2") == [0, 0, 0, 0, 0, 0, 125, 125, 125, 125]  # int(0.6 * 10) = 6
    assert masks["conv1"]["bias"].tolist() == [0, 1, 1, 1, 1]
    assert model.conv1.bias[0].item() == 0 and model.conv1.weight[0].abs().sum() == 0


def test_l1_and_l2_disagree_where_the_norms_do(cfg, make_nni_model):
    # filter 0 = one big weight (L1 3, L2 3); filter 1 = many small ones (L1 4.5, L2 ~1.5)
    model = make_nni_model()
    w = torch.ones(5, 1, 5, 5) * 10
    w[0] = 0
    w[0, 0, 0, 0] = 3.0
    w[1] = 0.18
    model.conv1.weight.data = w
    config = [{"sparsity": 0.2, "op_names": ["conv1"]}]
    l1 = aup.create_compressor(copy.deepcopy(model), cfg("l1_filter", config))
    l1.compress()
    l2 = aup.create_compressor(copy.deepcopy(model), cfg("l2_filter", config))
    l2.compress()
    assert filter_sums(l1.get_masks(), "conv1") == [0, 25, 25, 25, 25]
    assert filter_sums(l2.get_masks(), "conv1") == [25, 0, 25, 25, 25]


def test_slim_uses_one_global_threshold_and_masks_bn_weight_and_bias(cfg):
    class TwoBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 5, 3), nn.BatchNorm2d(5)
            self.conv2, self.bn2 = nn.Conv2d(5, 5, 3), nn.BatchNorm2d(5)

        def forward(self, x):
            return self.bn2(self.conv2(self.bn1(self.conv1(x))))

    for sparsity, expected in ((0.2, [0, 1, 1, 1, 1]), (0.6, [0, 0, 0, 1, 1])):
        model = TwoBN()
        model.bn1.weight.data = torch.arange(5.0)
        model.bn2.weight.data = -torch.arange(5.0)  # |gamma| is what counts
        pruner = aup.create_compressor(model, cfg("slim", [{"sparsity": sparsity, "op_types": ["BatchNorm2d"]}]))
        pruner.compress()
        masks = pruner.get_masks()
        for bn in ("bn1", "bn2"):
            assert masks[bn]["weight"].tolist() == expected
            assert masks[bn]["bias"].tolist() == expected
    # global, not per layer: a layer with all-small gammas loses more channels than the target
    model = TwoBN()
    model.bn1.weight.data = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05])
    model.bn2.weight.data = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    pruner = aup.create_compressor(model, cfg("slim", [{"sparsity": 0.4, "op_types": ["BatchNorm2d"]}]))
    pruner.compress()
    masks = pruner.get_masks()
    assert masks["bn1"]["weight"].tolist() == [0, 0, 0, 0, 1] and masks["bn2"]["weight"].sum() == 5


def test_taylor_fo_ranks_filters_by_squared_weight_times_gradient(cfg, make_nni_model):
    model = make_nni_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = aup.create_compressor(model, cfg("taylor_fo_weight_filter", TWO_ENTRIES), optimizer, statistics_batch_num=1)
    pruner.compress()
    assert not pruner.masks_calculated  # dense until the statistics are gathered
    model.conv1.weight.data = W1.clone()
    model.conv2.weight.data = torch.flip(W2, dims=[0])  # filter i is all 10 - i
    y = model(torch.rand(1, 1, 28, 28))
    y.backward(torch.ones_like(y))
    model.conv1.weight.grad.data = torch.tensor([-1.0, 1, -1, 1, -1]).view(5, 1, 1, 1).expand(5, 1, 5, 5).clone()
    model.conv2.weight.grad.data = torch.tensor([(-1.0) ** i for i in range(10)]).view(10, 1, 1, 1).expand(10, 5, 5, 5).clone()
    optimizer.step()
    masks = pruner.get_masks()
    assert pruner.masks_calculated
    assert filter_sums(masks, "conv1") == [0, 25, 25, 25, 25]
    assert filter_sums(masks, "conv2") == [125, 125, 125, 125, 0, 0, 0, 0, 0, 0]


def test_taylor_needs_the_optimizer(cfg, make_nni_model):
    with pytest.raises(ValueError, match="optimizer is required"):
        aup.create_compressor(make_nni_model(), cfg("taylor_fo_weight_filter", TWO_ENTRIES))


class OneConv(nn.Module):
    """Channel 0 always negative (APoZ 1, mean 0); 1 = identity (APoZ ~.5, mean ~.4);
    2 = constant 0.1 (APoZ 0, mean 0.1); 3 = constant 3 (APoZ 0, mean 3)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]).view(4, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([-1.0, 0.0, 0.1, 3.0]))

    def forward(self, x):
        return self.conv(x).mean((2, 3)).sum(1)


@pytest.mark.parametrize("name, pruned", [("activation_apoz_rank_filter", [0, 1]), ("activation_mean_rank_filter", [0, 2])])
def test_activation_pruners_rank_filters_by_their_outputs(cfg, name, pruned):
    torch.manual_seed(0)
    model = OneConv()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    pruner = aup.create_compressor(model, cfg(name, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]), optimizer,
                                   activation="relu", statistics_batch_num=3)
    pruner.compress()
    for step in range(3):
        assert not pruner.masks_calculated
        optimizer.zero_grad()
        model(torch.randn(8, 1, 6, 6)).sum().backward()
        optimizer.step()
    assert pruner.masks_calculated  # computed at the step after the 3rd batch
    keep = pruner.get_masks()["conv"]["weight"].flatten().tolist()
    assert [i for i, k in enumerate(keep) if k == 0] == pruned
    assert pruner.stats["conv"].batches == 3


def test_activation_pruner_without_optimizer_computes_masks_on_step(cfg):
    model = OneConv()
    pruner = aup.create_compressor(model, cfg("activation_apoz_rank_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]))
    pruner.compress()
    model(torch.randn(8, 1, 6, 6))
    pruner.step()
    assert pruner.get_masks()["conv"]["weight"].flatten().tolist() == [0, 0, 1, 1]


def test_level_prunes_exactly_the_smallest_magnitudes(cfg, make_nni_model):
    torch.manual_seed(0)
    model = make_nni_model()
    pruner = aup.create_compressor(model, cfg("level", [{"sparsity": 0.8, "op_types": ["default"]}]))
    pruner.compress()
    masks = pruner.get_masks()
    for name in ("conv1", "conv2", "fc1", "fc2"):
        mask, weight = masks[name]["weight"], getattr(model, name).weight.detach()
        original = pruner.layers[name].module.weight
        assert int((mask == 0).sum()) == int(0.8 * mask.numel())
        assert masks[name]["bias"].sum() == masks[name]["bias"].numel()  # biases untouched
        assert torch.equal(weight, original.detach())
    # the kept elements are all at least as large as the pruned ones (checked on a fresh copy)
    fresh = make_nni_model()
    w = fresh.fc1.weight.detach().abs()
    pruner = aup.create_compressor(fresh, cfg("level", [{"sparsity": 0.5, "op_names": ["fc1"]}]))
    pruner.compress()
    mask = pruner.get_masks()["fc1"]["weight"]
    assert w[mask == 1].min() >= w[mask == 0].max()


def test_compute_masks_is_the_schedule_api_and_only_grows_the_pruned_set(cfg, make_nni_model):
    torch.manual_seed(0)
    model = make_nni_model()
    pruner = aup.create_compressor(model, cfg("fpgm", [{"sparsity": 0.2, "op_types": ["Conv2d"]}]))
    pruner.compress()
    before = pruner.get_masks()["conv2"]["weight"].flatten(1).sum(1) == 0
    masks = pruner.compute_masks({"conv1": 0.4, "conv2": 0.6})
    after = masks["conv2"]["weight"].flatten(1).sum(1) == 0
    assert int(after.sum()) == 6 and bool((after | ~before).all())  # the earlier pruned filters stay pruned
    assert filter_sums(masks, "conv1").count(0) == 2
    with pytest.raises(ValueError, match="not layers of this pruner"):
        pruner.compute_masks({"fc1": 0.5})


def test_dependency_aware_shares_channels_across_residual_adds(cfg):
    torch.manual_seed(0)
    model = zoo.resnet_small(num_classes=10, in_channels=3, base=8)
    x = torch.randn(2, 3, 16, 16)
    state = copy.deepcopy(model.state_dict())
    sets = [s for s in conv_dependency_sets(model, x) if len(s) > 1]
    assert sets, "a ResNet has convs tied by residual adds"
    # tracing leaves the model as it was (weights, BN statistics, mode, no leftover hooks)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    pruner = aup.create_compressor(model, cfg("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]),
                                   dependency_aware=True, dummy_input=x)
    pruner.compress()
    masks = pruner.get_masks()
    for members in sets:
        pruned = [tuple((masks[n]["weight"].flatten(1).sum(1) == 0).tolist()) for n in members]
        assert len(set(pruned)) == 1, f"{members} must lose the same channels"
        assert sum(pruned[0]) == int(0.5 * len(pruned[0]))


def test_dependency_aware_shared_set_then_per_layer_remainder(cfg):
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            a = self.conv1(x)
            return self.head((self.conv2(torch.relu(a)) + a).mean((2, 3)))

    model = Res()
    x = torch.randn(2, 3, 8, 8)
    config = [{"sparsity": 0.5, "op_names": ["conv1"]}, {"sparsity": 0.25, "op_names": ["conv2"]}]
    pruner = aup.create_compressor(model, cfg("l1_filter", config), None, True, x)  # positional extras
    pruner.compress()
    masks = pruner.get_masks()
    p1 = set(i for i, s in enumerate(masks["conv1"]["weight"].flatten(1).sum(1).tolist()) if s == 0)
    p2 = set(i for i, s in enumerate(masks["conv2"]["weight"].flatten(1).sum(1).tolist()) if s == 0)
    assert len(p1) == 4 and len(p2) == 2 and p2 <= p1  # 2 shared (min sparsity), conv1 prunes 2 more alone
    summed = (model.conv1.weight.detach().abs().flatten(1).sum(1) + 0)  # already masked in place
    assert all(summed[i] == 0 for i in p1)


def test_grouped_conv_loses_the_same_number_of_filters_per_group(cfg):
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    pruner = aup.create_compressor(model, cfg("l1_filter", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]))
    pruner.compress()
    pruned = (pruner.get_masks()["0"]["weight"].flatten(1).sum(1) == 0).tolist()
    assert sum(pruned[:4]) == 2 and sum(pruned[4:]) == 2


ALL_ONE_SHOT = ["level", "slim", "fpgm", "l1_filter", "l2_filter", "activation_apoz_rank_filter",
                "activation_mean_rank_filter", "taylor_fo_weight_filter"]


@pytest.mark.parametrize("name", ALL_ONE_SHOT)
def test_achieved_sparsity_is_within_one_point_of_the_target(cfg, name):
    torch.manual_seed(0)
    model = zoo.DigitsCNN(width=16)
    for module in model.modules():  # trained-like BN scales (a fresh net's all-equal gammas tie)
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
    op_types = {"level": ["default"], "slim": ["BatchNorm2d"]}.get(name, ["Conv2d"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    extra = {} if name in ("level", "slim") else {"optimizer": optimizer}
    pruner = aup.create_compressor(model, cfg(name, [{"sparsity": 0.5, "op_types": op_types}]), **extra)
    pruner.compress()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert pruner.masks_calculated
    assert abs(pruner.sparsity() - 0.5) <= 0.01
    zeros = sum(int((layer.module.weight == 0).sum()) for layer in pruner.layers.values())
    total = sum(layer.module.weight.numel() for layer in pruner.layers.values())
    assert abs(zeros / total - 0.5) <= 0.01  # the weights really are zero, not only the masks


@pytest.mark.slow
def test_end_to_end_digits_compress_half_and_fine_tune(pretrained_digits, capsys):
    state, data, dense_acc = pretrained_digits.state, pretrained_digits.data, pretrained_digits.accuracy
    model = zoo.DigitsCNN(width=8)
    model.load_state_dict(state)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    dense_flops, dense_params, _ = aup.compression.count_flops_params(model, (1, 1, 8, 8), verbose=False)
    config = {"compression": {"framework": "torch", "type": "pruning", "compressor": "l1_filter",
                              "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}}
    pruner = aup.compression.create_compressor(model, config, optimizer)
    model = pruner.compress()
    pruned_acc = zoo.evaluate(model, data.x_test, data.y_test)
    for epoch in range(2):
        zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=10 + epoch)
    tuned_acc = zoo.evaluate(model, data.x_test, data.y_test)
    flops, params, _ = pruner.count_flops_params((1, 1, 8, 8), verbose=False)
    print(f"digits l1_filter 50%: dense {dense_acc:.3f} pruned {pruned_acc:.3f} fine-tuned {tuned_acc:.3f}; "
          f"MACs {dense_flops:.0f} -> {flops:.0f}, params {dense_params:.0f} -> {params:.0f}")
    assert abs(pruner.sparsity() - 0.5) <= 0.01
    assert all(layer.module.weight.flatten(1).abs().sum(1).eq(0).sum() == layer.module.out_channels // 2
               for layer in pruner.layers.values())  # still pruned after Adam steps
    assert dense_acc > 0.9 and tuned_acc > 0.9
    assert flops < dense_flops and params < dense_params


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:slim. the global threshold would remove every channel")  # tested above
@pytest.mark.parametrize("name", ALL_ONE_SHOT)
def test_every_pruner_end_to_end_on_digits_at_half_sparsity(cfg, name, pretrained_digits, capsys):
    """Compress the trained CNN at 50%, fine-tune two epochs, shrink what is structured; report accuracy."""
    state, data, dense_acc = pretrained_digits.state, pretrained_digits.data, pretrained_digits.accuracy
    model = zoo.DigitsCNN(width=8)
    model.load_state_dict(state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    op_types = {"level": ["default"], "slim": ["BatchNorm2d"]}.get(name, ["Conv2d"])
    pruner = aup.create_compressor(model, cfg(name, [{"sparsity": 0.5, "op_types": op_types}]), optimizer)
    pruner.compress()
    for epoch in range(2):  # statistics pruners compute their masks during the first steps
        zoo.train_epoch(model, data.x_train, data.y_train, optimizer, seed=20 + epoch)
    masked_acc = zoo.evaluate(model, data.x_test, data.y_test)
    params = sum(p.numel() for p in model.parameters())
    if name != "level":  # structured: physically smaller, same accuracy
        pruner.apply_speedup(data.x_train[:1])
        assert sum(p.numel() for p in model.parameters()) < params
        assert zoo.evaluate(model, data.x_test, data.y_test) == pytest.approx(masked_acc, abs=1e-9)
    with capsys.disabled():
        print(f"\n{name} 50%: dense {dense_acc:.3f} -> compressed + 2 epochs {masked_acc:.3f}, "
              f"params {params} -> {sum(p.numel() for p in model.parameters())}")
    assert pruner.masks_calculated and masked_acc > 0.85


@pytest.mark.parametrize("name", ["fpgm", "l2_filter", "activation_apoz_rank_filter", "activation_mean_rank_filter",
                                  "taylor_fo_weight_filter"])
def test_every_filter_pruner_has_a_dependency_aware_mode(cfg, name):
    torch.manual_seed(0)
    model = zoo.resnet_small(num_classes=10, in_channels=3, base=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = aup.create_compressor(model, cfg(name, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]), optimizer,
                                   dependency_aware=True, dummy_input=torch.randn(2, 3, 16, 16))
    pruner.compress()
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 16, 16)).sum().backward()
        optimizer.step()
    masks = pruner.get_masks()
    tied = [s for s in pruner.dependency_sets() if len(s) > 1]
    assert tied and pruner.masks_calculated and abs(pruner.sparsity() - 0.5) <= 0.01
    for members in tied:
        assert len({tuple((masks[n]["weight"].flatten(1).sum(1) == 0).tolist()) for n in members}) == 1


def test_slim_keeps_one_channel_of_a_layer_the_global_threshold_would_empty_and_shrinks(cfg):
    torch.manual_seed(0)
    model = zoo.DigitsCNN(width=16)
    model.bn1.weight.data.uniform_(0.1, 0.2)  # every bn1 gamma below every bn2 gamma
    model.bn2.weight.data.uniform_(0.5, 1.5)
    model.eval()
    pruner = aup.create_compressor(model, cfg("slim", [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]))
    with pytest.warns(UserWarning, match="every channel of bn1"):
        pruner.compress()
    masks = pruner.get_masks()
    assert int(masks["bn1"]["weight"].sum()) == 1  # the strongest bn1 channel survives
    assert int(masks["bn1"]["weight"].argmax()) == int(model.bn1.weight.detach().abs().argmax())
    assert torch.equal(masks["conv1"]["weight"].flatten(1).sum(1) > 0, masks["bn1"]["weight"] > 0)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
    params = sum(p.numel() for p in model.parameters())
    pruner.apply_speedup(x[:1])
    assert sum(p.numel() for p in model.parameters()) < params and model.conv1.out_channels == 1
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-4)


def test_slim_sparsity_training_pushes_gammas_down_before_masking(cfg):
    torch.manual_seed(0)
    model = zoo.DigitsCNN(width=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = aup.create_compressor(model, cfg("slim", [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]), optimizer,
                                   scale=0.5, sparsifying_training_batches=3)
    pruner.compress()
    assert not pruner.masks_calculated
    gamma0 = model.bn1.weight.detach().clone()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for step in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        assert pruner.masks_calculated == (step == 2)  # masks right after the last sparsifying step
    assert float(model.bn1.weight.detach().abs().max()) < float(gamma0.abs().min())  # L1 shrank every gamma
