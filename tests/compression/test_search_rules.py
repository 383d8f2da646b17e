"""The search and tie rules of NNI 2.0 (and the papers where NNI deviates), on hand-set weights.

Each test recomputes the expected outcome with the rule written out here in a few lines, from the
same weights, and compares: NetAdapt's resource per iteration and evaluation count, simulated
annealing's retries and returned copy, the sensitivity pruner's overshoot bound, L1's tie rule, the
dependency-aware rule for a partly excluded set, QAT before training, AMC's channel selection.
No training; small models; deterministic.
"""
from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402


# ----------------------------------------------------------------------------- models
class Chain(nn.Module):
    """conv1 (1->4) -> conv2 (4->8) -> conv3 (8->8) -> global pool -> fc (8->10); 980 Conv/Linear weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 10, bias=False)
        with torch.no_grad():  # filter i of every conv has L1 norm growing with i: a known ranking
            for conv in (self.conv1, self.conv2, self.conv3):
                for i in range(conv.out_channels):
                    conv.weight[i] = (i + 1) / conv.weight[i].numel()
            self.fc.weight.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


def _cfg(name: str, entries: list[dict]) -> dict:
    return {"compression_framework": "torch", "compression_type": "pruning", "compressor": name,
            "config_list": entries}


def _pruned_filters(weight: torch.Tensor) -> int:
    return int((weight.detach().flatten(1).abs().sum(1) == 0).sum())


CONVS = ["conv1", "conv2", "conv3"]


# ----------------------------------------------------------------------------- NetAdapt
def _nni_step(model: nn.Module, generated: dict[str, float], delta: int) -> dict[str, float]:
    """NNI 2.0's proposal per layer: current + delta / (own x (1 - s_prev) + next op's remaining)."""
    ops = [(n, m) for n, m in model.named_modules() if type(m).__name__ in ("Conv2d", "Linear")]
    names = [n for n, _ in ops]
    proposals = {}
    for name in CONVS:
        index = names.index(name)
        weight = ops[index][1].weight
        remaining = weight.numel() - _pruned_filters(weight) * weight[0].numel()
        current = 1 - remaining / weight.numel()
        related = weight.numel() * (1 - generated.get(names[index - 1], 0.0) if index else 1.0)
        following = ops[index + 1][1].weight
        kept = following.numel() - (_pruned_filters(following) * following[0].numel()
                                    if names[index + 1] in CONVS else 0)
        target = current + delta / (related + kept)
        if target < 1:
            proposals[name] = target
    return proposals


def test_net_adapt_follows_nni_resource_rule_iteration_by_iteration(tmp_path):
    model = Chain()
    total = sum(m.weight.numel() for m in model.modules() if type(m).__name__ in ("Conv2d", "Linear"))
    assert total == 980
    step, target = 0.1, 0.3
    delta = int(total * step)
    calls = []

    def score(m):  # prefers the candidate that leaves conv1 and conv2 densest, then conv3's
        return -(10 * _pruned_filters(m.conv1.weight) + 10 * _pruned_filters(m.conv2.weight)
                 + _pruned_filters(m.conv3.weight))

    def evaluator(m):
        calls.append(1)
        return score(m)

    pruner = aup.create_compressor(model, _cfg("net_adapt", [{"sparsity": target, "op_types": ["Conv2d"]}]),
                                   lambda m: None, evaluator, sparsity_per_iteration=step,
                                   experiment_data_dir=str(tmp_path))
    reference, generated = Chain(), {}
    pruner.compress()
    records = pruner.history[1:]
    assert len(records) == math.ceil(target / step - 1e-9)  # nominal stopping: 3 iterations
    evaluations = 0
    for record in records:
        proposals = _nni_step(reference, generated, delta)
        evaluations += len(proposals)
        assert record["evaluations"] == len(proposals)
        scores = {}
        for name, sparsity in proposals.items():
            candidate = copy.deepcopy(reference)
            layer = getattr(candidate, name)
            with torch.no_grad():  # l1 ranking is by index here: the lowest int(n * s) filters go
                layer.weight[: int(layer.out_channels * sparsity)] = 0
            scores[name] = score(candidate)
        chosen = max(scores, key=lambda n: (scores[n], -list(scores).index(n)))  # the first best, as NNI
        assert record["layer"] == chosen
        assert record["layer_sparsity"] == pytest.approx(proposals[chosen])
        generated[chosen] = proposals[chosen]
        layer = getattr(reference, chosen)
        with torch.no_grad():
            layer.weight[: int(layer.out_channels * proposals[chosen])] = 0
        assert _pruned_filters(getattr(pruner.model, chosen).weight) == _pruned_filters(layer.weight)
    assert len(calls) == evaluations  # one evaluation per proposing layer per iteration, none for the start
    for name in CONVS:
        assert _pruned_filters(getattr(pruner.model, name).weight) == _pruned_filters(getattr(reference, name).weight)


def test_net_adapt_first_iteration_numbers_by_hand(tmp_path):
    """980 weights, step 0.1 -> 98 per iteration; conv1: 98/(36+288) -> 1 of 4 filters; conv2: 98/(288+576)
    -> int(8 x 0.113) = 0 filters; conv3: 98/(576+80) -> 1 of 8 filters."""
    proposals = _nni_step(Chain(), {}, 98)
    assert proposals == pytest.approx({"conv1": 98 / 324, "conv2": 98 / 864, "conv3": 98 / 656})
    assert [int(n * proposals[c]) for c, n in (("conv1", 4), ("conv2", 8), ("conv3", 8))] == [1, 0, 1]


# ----------------------------------------------------------------------------- simulated annealing
class _Draw:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_simulated_annealing_retries_until_accepted_and_returns_a_pruned_copy(tmp_path):
    model = Chain()
    before = copy.deepcopy(model.state_dict())
    # start T=1.0, stop 0.85, rate 0.9 -> temperatures 1.0 and 0.9.
    # T=1.0: the first candidate is accepted against -inf (NNI never scores the start vector).
    # T=0.9: 0.2 worse (rejected: draw 0.99 > exp(-0.2/0.9)), again worse, then better -> accepted.
    scores = iter([0.5, 0.3, 0.4, 0.6])
    calls = []

    def evaluator(m):
        calls.append(m)
        return next(scores)

    pruner = aup.create_compressor(model, _cfg("simulated_annealing", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]),
                                   evaluator, start_temperature=1.0, stop_temperature=0.85, cool_down_rate=0.9,
                                   experiment_data_dir=str(tmp_path), seed=0)
    pruner.accept_rng = _Draw(0.99)
    returned = pruner.compress()
    assert len(calls) == 4
    assert [(h["temperature"], h["accepted"]) for h in pruner.history] == [
        (1.0, True), (0.9, False), (0.9, False), (0.9, True)]
    assert pruner.history[-1]["best_score"] == 0.6
    assert all(c is not model for c in calls)  # candidates are copies
    assert returned is not model and returned is pruner.model is pruner.bound_model
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is untouched
    masks = pruner.get_masks()
    assert set(CONVS) <= set(masks)
    assert pruner.sparsity() > 0
    for name in CONVS:
        assert _pruned_filters(getattr(returned, name).weight) == _pruned_filters(masks[name]["weight"])


def test_simulated_annealing_bounds_the_retries(tmp_path):
    calls = []
    pruner = aup.create_compressor(Chain(), _cfg("simulated_annealing", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]),
                                   lambda m: calls.append(1) or -len(calls), start_temperature=1.0,
                                   stop_temperature=0.85, cool_down_rate=0.9, max_tries_per_temperature=3,
                                   experiment_data_dir=str(tmp_path), seed=0)
    pruner.accept_rng = _Draw(0.999999)
    pruner.compress()
    assert len(calls) == 1 + 3  # T=1.0 accepts its first; T=0.9 gives up after 3 ever-worse tries


# ----------------------------------------------------------------------------- sensitivity overshoot
def test_sensitivity_overshoot_is_at_most_one_filter_of_one_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = Chain()
    weights = {n: getattr(model, n).weight.numel() for n in CONVS}
    total = sum(weights.values())
    pruner = aup.create_compressor(model, _cfg("sensitivity", [{"sparsity": 0.5, "op_types": ["Conv2d"]}]),
                                   lambda: 1.0, sparsity_per_iter=0.02)  # steps far below one filter
    pruner.compress()
    largest_filter = max(getattr(model, n).weight[0].numel() for n in CONVS)
    achieved = sum(_pruned_filters(getattr(model, n).weight) * getattr(model, n).weight[0].numel()
                   for n in CONVS) / total
    assert achieved == pytest.approx(pruner.current_sparsity())
    assert 0.5 - 0.001 <= achieved <= 0.5 + largest_filter / total


# ----------------------------------------------------------------------------- L1 ties
def _tied_conv() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 6, 1, bias=False))
    with torch.no_grad():  # L1 norms 1, 2, 2, 2, 5, 6: the 2nd lowest (2) is tied three times
        model[0].weight.copy_(torch.tensor([1.0, 2, 2, 2, 5, 6]).view(6, 1, 1, 1))
    return model


def test_l1_prunes_every_filter_tied_at_the_threshold_as_nni():
    model = _tied_conv()
    pruner = aup.create_compressor(model, _cfg("l1_filter", [{"sparsity": 2 / 6 + 1e-9, "op_types": ["Conv2d"]}]))
    pruner.compress()
    kept = pruner.get_masks()["0"]["weight"].flatten().tolist()
    assert kept == [0, 0, 0, 0, 1, 1]  # NNI: gt(score, 2nd lowest score) keeps only 5 and 6


def test_l1_prune_exactly_keeps_the_count():
    model = _tied_conv()
    pruner = aup.create_compressor(model, _cfg("l1_filter", [{"sparsity": 2 / 6 + 1e-9, "op_types": ["Conv2d"]}]),
                                   prune_exactly=True)
    pruner.compress()
    assert pruner.get_masks()["0"]["weight"].flatten().tolist() == [0, 0, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- partly excluded tied set
def test_a_tied_set_with_an_excluded_member_shares_no_channels():
    torch.manual_seed(0)
    model = zoo.ResNet(zoo.BasicBlock, [2, 1, 1, 1], 10, 3, 8, stem="small")  # stem + 2 blocks share channels
    x = torch.randn(2, 3, 16, 16)
    from aup.compression.torch.graph.dependency import conv_dependency_sets

    tied = next(s for s in conv_dependency_sets(model, x) if len(s) > 2)
    config = [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"exclude": True, "op_names": [tied[0]]}]
    aware = aup.create_compressor(copy.deepcopy(model), _cfg("l1_filter", config), dependency_aware=True, dummy_input=x)
    alone = aup.create_compressor(copy.deepcopy(model), _cfg("l1_filter", config))
    aware.compress()
    alone.compress()
    for name in tied[1:]:  # each prunes its own lowest filters, as without dependency awareness
        assert torch.equal(aware.get_masks()[name]["weight"], alone.get_masks()[name]["weight"])


# ----------------------------------------------------------------------------- QAT before training
def test_qat_untrained_eval_uses_float_weights_then_quantizes_after_training():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(5, 4)
    dense = model(x).detach()
    config = [{"quant_types": ["weight"], "quant_bits": 2, "op_types": ["Linear"]}]
    quantizer = aup.create_compressor(model, {"compression_framework": "torch", "compression_type": "quantization",
                                              "compressor": "qat", "config_list": config})
    quantizer.compress()
    model.eval()
    assert torch.equal(model(x).detach(), dense)  # NNI 2.0: float weights until a training pass
    model.train()
    model(x)
    model.eval()
    assert not torch.allclose(model(x).detach(), dense)  # 2-bit weights from then on
    eager = nn.Sequential(nn.Linear(4, 3))
    eager.load_state_dict({k: v for k, v in model.state_dict().items()})
    early = aup.create_compressor(eager, {"compression_framework": "torch", "compression_type": "quantization",
                                          "compressor": "qat", "config_list": config},
                                  quantize_eval_before_training=True)
    early.compress()
    eager.eval()
    assert not torch.allclose(eager(x).detach(), dense)


# ----------------------------------------------------------------------------- AMC channel selection
def test_amc_keeps_the_channels_the_next_layer_weighs_most():
    from aup.compression.torch.pruners.amc.env import PrunableLayer, next_layer_magnitude

    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.Conv2d(4, 2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([4.0, 3, 2, 1]).view(4, 1, 1, 1))  # producer L1 prefers 0, 1
        model[1].weight.copy_(torch.tensor([[0.1, 0.1, 3.0, 2.0], [0.1, 0.2, -1.0, 1.0]]).view(2, 4, 1, 1))
    layer = PrunableLayer("0", model[0], 4, consumers={"1": [[0], [1], [2], [3]]})
    scores = next_layer_magnitude(layer, dict(model.named_modules()))
    assert scores.tolist() == pytest.approx([0.2, 0.3, 4.0, 3.0])  # sum |W_next[:, c]|
    env = object.__new__(__import__("aup.compression.torch.pruners.amc.env", fromlist=["x"]).ChannelPruningEnv)
    env.channel_score = next_layer_magnitude
    assert env.keep_mask(layer, dict(model.named_modules()), 2).tolist() == [False, False, True, True]
