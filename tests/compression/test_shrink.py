"""Physical shrink: parameters really drop, masked and shrunk outputs agree, nothing crashes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from aup.compression.torch import zoo
from aup.compression.torch.artifact.files import load_compressed, save_artifact
from aup.compression.torch.shrink.core import ShrinkError, shrink_model


def _randomize_bn(model: nn.Module) -> None:
    """Trained-like BatchNorm statistics, so a forgotten BN shift would show up in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _group_masks(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> dict:
    """L1 filter masks decided per torch-pruning group (so residual groups agree), BN masked too."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    names = {m: n for n, m in model.named_modules()}
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    masks: dict = {}
    for group in graph.get_all_groups(ignored_layers=[last], root_module_types=(nn.Conv2d,)):
        root = group[0].dep.target.module
        if root.groups > 1:  # depthwise roots are handled by the group of the conv feeding them
            continue
        n_ch = root.out_channels
        drop = root.weight.detach().flatten(1).abs().sum(1).argsort()[: int(n_ch * ratio)]
        for item in group:
            module = item.dep.target.module
            if not graph.is_out_channel_pruning_fn(item.dep.handler) or module not in names:
                continue
            local = [i for i, r in zip(item.idxs, item.root_idxs) if r in set(drop.tolist())]
            weight = torch.ones_like(module.weight)
            weight[local] = 0
            bias = None
            if getattr(module, "bias", None) is not None:
                bias = torch.ones_like(module.bias)
                bias[local] = 0
            masks[names[module]] = {"weight": weight, "bias": bias}
    return masks


MODELS = [
    ("digits", zoo.DigitsCNN, (2, 1, 8, 8)),
    ("vgg", zoo.vgg_small, (2, 3, 32, 32)),
    ("resnet", zoo.resnet_small, (2, 3, 32, 32)),
    ("mobilenetv2", zoo.mobilenetv2_small, (2, 3, 32, 32)),
]


@pytest.mark.parametrize("name,factory,shape", MODELS, ids=[m[0] for m in MODELS])
def test_shrink_drops_params_keeps_outputs_and_reloads(tmp_path, name, factory, shape):
    torch.manual_seed(0)
    model = factory().eval()
    _randomize_bn(model)
    x = torch.randn(*shape)
    masks = _group_masks(model, x)
    with torch.no_grad():
        dense_out = model(x)
    report = shrink_model(model, masks, x)
    assert report.params_after < 0.75 * report.params_before, report.to_dict()
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert report.max_abs_diff <= 1e-4
    assert report.removed and report.arch_changes
    assert not report.kept_dense
    with torch.no_grad():
        out = model(x)
    assert out.shape == dense_out.shape  # the classifier's outputs are never removed
    # the artifact of the shrunk model reloads without the class and computes the same outputs
    path = tmp_path / "m.aup"
    dense_bytes = save_artifact(tmp_path / "dense.aup", factory(), example_input=x)["bytes"]
    info = save_artifact(path, model, example_input=x, meta={"arch_changes": report.arch_changes})
    assert info["kind"] == "fx" and info["bytes"] < dense_bytes
    loaded = load_compressed(path)
    assert torch.allclose(loaded(x), out, atol=1e-6)
    assert loaded.aup_meta["arch_changes"] == report.arch_changes


def test_residual_group_pruned_only_where_all_branches_are_masked():
    torch.manual_seed(0)
    model = zoo.resnet_small().eval()
    x = torch.randn(2, 3, 32, 32)
    conv = model.layer2[0].conv2  # its channels are added to the downsample branch's
    mask = torch.ones_like(conv.weight)
    mask[:8] = 0
    masks = {"layer2.0.conv2": {"weight": mask, "bias": None}}
    with torch.no_grad():
        conv.weight.mul_(mask)
        expected = model(x)
    report = shrink_model(model, masks, x)
    assert model.layer2[0].conv2.out_channels == 32  # the shortcut is not masked: nothing removed
    assert report.kept_masked["layer2.0.conv2"] == 8 and "layer2.0.conv2" in report.notes
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_bn_shift_keeps_channel_unless_bn_is_masked_too():
    torch.manual_seed(0)
    model = zoo.DigitsCNN().eval()
    _randomize_bn(model)
    x = torch.randn(4, 1, 8, 8)
    mask = torch.ones_like(model.conv1.weight)
    mask[:4] = 0
    report = shrink_model(model, {"conv1": {"weight": mask, "bias": None}}, x)
    assert model.conv1.out_channels == 16 and report.kept_masked["conv1"] == 4  # bn1 still shifts them
    bn_mask = torch.ones(16)
    bn_mask[:4] = 0
    masks = {"conv1": {"weight": mask, "bias": None}, "bn1": {"weight": bn_mask, "bias": bn_mask.clone()}}
    report = shrink_model(model, masks, x)
    assert model.conv1.out_channels == 12 and model.bn1.num_features == 12 and model.conv2.in_channels == 12
    assert report.removed["conv1"] == 4 and report.max_abs_diff <= 1e-4


def test_element_masks_survive_reindexed():
    torch.manual_seed(0)
    model = zoo.DigitsCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    w2 = (torch.rand_like(model.conv2.weight) > 0.5).float()  # unstructured zeros
    w1 = torch.ones_like(model.conv1.weight)
    w1[[1, 3]] = 0
    bn = torch.ones(16)
    bn[[1, 3]] = 0
    masks = {"conv1": {"weight": w1, "bias": None}, "bn1": {"weight": bn, "bias": bn.clone()},
             "conv2": {"weight": w2, "bias": None}}
    report = shrink_model(model, masks, x)
    new = report.masks["conv2"]["weight"]
    keep = [i for i in range(16) if i not in (1, 3)]
    assert new.shape == model.conv2.weight.shape == (32, 14, 3, 3)
    assert torch.equal(new, w2[:, keep])
    assert torch.equal(model.conv2.weight == 0, new == 0) or bool((model.conv2.weight[new == 0] == 0).all())


def test_inexact_removal_raises_naming_the_layer_and_restores_the_model():
    class ShiftNet(nn.Module):  # conv -> (x + 1) -> conv: a zeroed filter still feeds ones downstream
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv2(self.conv1(x) + 1.0).mean((2, 3)))

    torch.manual_seed(0)
    model = ShiftNet().eval()
    x = torch.randn(2, 1, 6, 6)
    mask = torch.ones_like(model.conv1.weight)
    mask[0] = 0
    bias = torch.ones(4)
    bias[0] = 0
    with pytest.raises(ShrinkError, match="conv2"):
        shrink_model(model, {"conv1": {"weight": mask, "bias": bias}}, x)
    assert model.conv1.out_channels == 4 and model.conv1.weight.shape[0] == 4 and model.conv2.weight.shape[1] == 4
    assert model(x).shape == (2, 2)


def test_unsupported_structures_are_kept_dense_not_crashing():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.norm = nn.LayerNorm(16)  # normalises across channels: removing one changes the others
            self.fc2 = nn.Linear(16, 3)
            self.unused = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc2(self.norm(self.fc1(x)))

    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(3, 8)
    m1 = torch.ones(16, 8)
    m1[:4] = 0
    b1 = torch.ones(16)
    b1[:4] = 0
    masks = {"fc1": {"weight": m1, "bias": b1}, "unused": {"weight": torch.zeros(4, 4), "bias": None}}
    report = shrink_model(model, masks, x)
    assert "LayerNorm" in report.kept_dense["fc1"]
    assert "unused" in report.kept_dense
    assert model.fc1.out_features == 16


def test_untraceable_model_is_kept_dense():
    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x).detach().numpy()  # leaves torch: the dependency graph cannot be traced

    model = Weird()
    report = shrink_model(model, {"fc": {"weight": torch.ones(4, 4), "bias": None}}, torch.randn(2, 4))
    assert "could not trace" in report.kept_dense["fc"]
    assert report.params_after == report.params_before


def test_mask_names_must_bind():
    model = zoo.DigitsCNN()
    with pytest.raises(ValueError, match="not in the model"):
        shrink_model(model, {"module.conv1": {"weight": torch.ones(16, 1, 3, 3), "bias": None}},
                     torch.randn(1, 1, 8, 8))


class _CatFlatten(nn.Module):
    """Concatenation (offset index mappings), a residual add and a flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(10, 10, 1)
        self.head = nn.Linear(10 * 4 * 4, 2)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        return self.head(torch.flatten(self.c(y) + y, 1))


@pytest.mark.parametrize("factory,shape", [(_CatFlatten, (1, 3, 4, 4)), (zoo.resnet_small, (1, 3, 16, 16)),
                                           (zoo.mobilenetv2_small, (1, 3, 16, 16))])
def test_narrowed_group_is_the_group_torch_pruning_builds_for_those_channels(factory, shape):
    import torch_pruning as tp

    from aup.compression.torch.shrink.core import _sub_group

    torch.manual_seed(0)
    model = factory().eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(shape), verbose=False)
    checked = 0
    for module in graph.module2node:
        if not isinstance(module, nn.Conv2d):
            continue
        handler = graph.get_pruner_of_module(module).prune_out_channels
        full = graph.get_pruning_group(module, handler, list(range(module.out_channels)))
        roots = set(range(0, module.out_channels, 3))
        ours = _sub_group(graph, full, roots)
        theirs = graph.get_pruning_group(module, handler, sorted(roots))
        assert [(str(i.dep), sorted(i.idxs), sorted(i.root_idxs)) for i in ours.items] == \
               [(str(i.dep), sorted(i.idxs), sorted(i.root_idxs)) for i in theirs.items]
        checked += 1
    assert checked >= 3
