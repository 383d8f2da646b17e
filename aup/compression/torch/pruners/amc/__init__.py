"""``amc``: AutoML for Model Compression (He et al., ECCV 2018, arXiv 1802.03494), NNI 2.0's ``AMCPruner``.

A DDPG agent (:mod:`.agent`) walks the prunable layers (:mod:`.env`) and picks each one's preserve
ratio from a layer embedding; actions are clipped so that the FLOPs budget (``flops_ratio`` of the
dense MACs) stays reachable and rounded to ``channel_round`` channels. At the end of an episode the
channels are pruned on a copy (channel selection, least-squares refit of the next layers on
calibration samples from ``val_loader``) and ``evaluator(val_loader, model)`` gives the reward
(``acc_reward``: accuracy; ``acc_flops_reward``: -error * log(FLOPs)). ``warmup`` episodes use
random actions; later ones add truncated-normal noise of width ``init_delta * delta_decay**k``.
After ``train_episode`` episodes the best policy is applied to the model as structured masks (conv
or linear filters plus their BatchNorm / depthwise channels), which ``apply_speedup`` shrinks.

Channel selection (``channel_criterion``) is by default the AMC paper's and NNI 2.0's: keep the
channels whose weights in the *next* layers have the largest magnitude, then refit those layers by
least squares. ``channel_criterion`` may instead name a weight filter criterion of the catalog
(``"l1"``, ``"l2"``, ``"fpgm"``), which then scores the producing layer's own filters (aup used L1
filter norms before it followed the paper).

``model_type`` and ``dataset`` only named NNI's supported MobileNet set-ups; any traceable model
works here, so they are accepted and ignored, as are ``suffix``, ``window_length``, ``epsilon``,
``max_episode_length`` and ``debug`` (kept for signature compatibility). ``output_dir`` None (the
default) uses a temporary directory instead of NNI's ``'./logs'``.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from aup.compression.torch.pruners._search import (
    BASE_ALGOS, check_callable, check_choice, check_number, is_structured, make_base_pruner, progress, working_dir,
    write_json,
)
from aup.compression.torch.pruners.base import Pruner
from aup.compression.torch.pruners.amc.agent import DDPG, Transition, truncated_normal
from aup.compression.torch.pruners.amc.env import ChannelPruningEnv, ChannelScore, PrunableLayer, analyse_model, next_layer_magnitude

__all__ = ["AMCPruner"]

REWARDS = ("acc_reward", "acc_flops_reward")
FILTER_CRITERIA = tuple(a for a in BASE_ALGOS if is_structured(a))  # data-free filter scores: l1, l2, fpgm


def _inputs(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class AMCPruner(Pruner):
    """``AMCPruner(model, config_list, evaluator, val_loader, suffix=None, model_type='mobilenet',
    dataset='cifar10', flops_ratio=0.5, lbound=0.2, rbound=1.0, reward='acc_reward', n_calibration_batches=60,
    n_points_per_layer=10, channel_round=8, hidden1=300, hidden2=300, lr_c=1e-3, lr_a=1e-4, warmup=100,
    discount=1.0, bsize=64, rmsize=100, window_length=1, tau=0.01, init_delta=0.5, delta_decay=0.99,
    max_episode_length=1e9, output_dir=None, debug=False, train_episode=800, epsilon=50000, seed=None,
    channel_criterion='next_layer')``.
    """

    compressor_name: ClassVar[str] = "amc"
    supported_op_types: ClassVar[tuple[str, ...] | None] = ("Conv2d", "Linear")

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Callable[[Any, nn.Module], float],
                 val_loader: Any, suffix: str | None = None, model_type: str = "mobilenet", dataset: str = "cifar10",
                 flops_ratio: float = 0.5, lbound: float = 0.2, rbound: float = 1.0, reward: str = "acc_reward",
                 n_calibration_batches: int = 60, n_points_per_layer: int = 10, channel_round: int = 8,
                 hidden1: int = 300, hidden2: int = 300, lr_c: float = 1e-3, lr_a: float = 1e-4, warmup: int = 100,
                 discount: float = 1.0, bsize: int = 64, rmsize: int = 100, window_length: int = 1, tau: float = 0.01,
                 init_delta: float = 0.5, delta_decay: float = 0.99, max_episode_length: float = 1e9,
                 output_dir: str | None = None, debug: bool = False, train_episode: int = 800, epsilon: int = 50000,
                 seed: int | None = None, channel_criterion: str = "next_layer") -> None:
        super().__init__(model, config_list)
        n = self.compressor_name
        self.channel_criterion = check_choice(n, "channel_criterion", channel_criterion,
                                              ("next_layer", *FILTER_CRITERIA))
        self.evaluator = check_callable(n, "evaluator", evaluator)
        if val_loader is None:
            raise ValueError(f"{n}: val_loader is required (batches for rewards and least-squares calibration)")
        self.val_loader = val_loader
        self.flops_ratio = float(check_number(n, "flops_ratio", flops_ratio, 0, 1, True, False))
        self.lbound = float(check_number(n, "lbound", lbound, 0, 1, True, False))
        self.rbound = float(check_number(n, "rbound", rbound, 0, 1, True, False))
        if self.lbound > self.rbound:
            raise ValueError(f"{n}: lbound must be <= rbound ({self.rbound}), got {lbound!r}")
        self.reward_name = check_choice(n, "reward", reward, REWARDS)
        self.n_calibration_batches = check_number(n, "n_calibration_batches", n_calibration_batches, 1, integer=True)
        self.n_points_per_layer = check_number(n, "n_points_per_layer", n_points_per_layer, 1, integer=True)
        self.channel_round = check_number(n, "channel_round", channel_round, 1, integer=True)
        self.agent_args = dict(
            hidden1=check_number(n, "hidden1", hidden1, 1, integer=True),
            hidden2=check_number(n, "hidden2", hidden2, 1, integer=True),
            lr_c=float(check_number(n, "lr_c", lr_c, 0, low_open=True)),
            lr_a=float(check_number(n, "lr_a", lr_a, 0, low_open=True)),
            tau=float(check_number(n, "tau", tau, 0, 1, True)), discount=float(check_number(n, "discount", discount, 0, 1)),
            bsize=check_number(n, "bsize", bsize, 1, integer=True))
        self.rmsize = check_number(n, "rmsize", rmsize, 1, integer=True)
        self.warmup = check_number(n, "warmup", warmup, 0, integer=True)
        self.train_episode = check_number(n, "train_episode", train_episode, 1, integer=True)
        self.init_delta = float(check_number(n, "init_delta", init_delta, 0))
        self.delta_decay = float(check_number(n, "delta_decay", delta_decay, 0, 1))
        self.seed = seed
        self.model_type, self.dataset = model_type, dataset  # accepted for compatibility, not needed
        self._output_arg = output_dir
        self.output_dir: str | None = None
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.env: ChannelPruningEnv | None = None

    # ------------------------------------------------------------------ set-up
    def _calibration(self) -> list[torch.Tensor]:
        batches = []
        for batch in self.val_loader:
            batches.append(_inputs(batch))
            if len(batches) >= self.n_calibration_batches:
                break
        if not batches:
            raise ValueError(f"{self.compressor_name}: val_loader yielded no batch")
        return batches

    def build_env(self) -> ChannelPruningEnv:
        """Analyse the model (torch-pruning trace), collect calibration samples, set up the FLOPs model."""
        calibration = self._calibration()
        self.dummy_input = self.dummy_input if self.dummy_input is not None else calibration[0][:1]
        layers, skipped = analyse_model(self.model, self.dummy_input, list(self.layers))
        for name, reason in skipped.items():
            progress("amc: %s stays dense: %s", name, reason)
        if not layers:
            raise ValueError(f"{self.compressor_name}: no prunable layer among {sorted(self.layers)} "
                             f"({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
        self.env = ChannelPruningEnv(self.model, layers, calibration, flops_ratio=self.flops_ratio, lbound=self.lbound,
                                     rbound=self.rbound, channel_round=self.channel_round,
                                     n_points_per_layer=self.n_points_per_layer, seed=self.seed,
                                     channel_score=self._channel_score(layers))
        floor = self.env.flops({i: self.env.min_ratio(i) for i in range(len(layers))})
        if floor > self.env.budget * 1.0001:
            progress("amc: even the smallest widths (lbound=%.2f) leave %.0f%% of the FLOPs; the budget %.0f%% "
                     "cannot be met", self.lbound, 100 * floor / self.env.total_flops, 100 * self.flops_ratio)
        return self.env

    def _channel_score(self, layers: list[PrunableLayer]) -> ChannelScore:
        """The paper's next-layer magnitude, or a catalog filter criterion called on the producer."""
        if self.channel_criterion == "next_layer":
            return next_layer_magnitude
        convs = [layer.name for layer in layers if isinstance(layer.module, nn.Conv2d)]
        if not convs:
            raise ValueError(f"{self.compressor_name}: channel_criterion={self.channel_criterion!r} scores conv "
                             "filters and no prunable layer is a Conv2d; use channel_criterion='next_layer'")
        criterion = make_base_pruner(self.model, self.channel_criterion, convs)
        return lambda layer, modules: criterion.filter_importance(layer.name, modules[layer.name])

    # ------------------------------------------------------------------ search
    def compress(self) -> nn.Module:
        """Train the agent for ``train_episode`` episodes, then prune with the best policy found."""
        if self.masks_calculated:
            return self.model
        self.output_dir = working_dir(self._output_arg, self.compressor_name)
        env = self.env or self.build_env()
        rng = np.random.default_rng(self.seed)
        agent = DDPG(len(env.static[0]) + 3, memory_limit=self.rmsize * len(env.layers), seed=self.seed,
                     **self.agent_args)
        started = time.perf_counter()
        for episode in range(self.train_episode):
            record = self._episode(env, agent, episode, rng)
            self.history.append(record)
            if self.best is None or record["reward"] > self.best["reward"]:
                self.best = record
            progress("amc: episode %d/%d reward %.4f acc %.4f flops %.1f%% best %.4f (%.1fs)", episode + 1,
                     self.train_episode, record["reward"], record["accuracy"], 100 * record["flops_ratio"],
                     self.best["reward"], time.perf_counter() - started)
        self._save(agent)
        self.apply_policy(self.best["ratios"])
        return self.model

    def _episode(self, env: ChannelPruningEnv, agent: DDPG, episode: int, rng: np.random.Generator) -> dict[str, Any]:
        decided: dict[int, float] = {}
        states, previous = [], 0.0
        for index in range(len(env.layers)):
            state = env.state(index, decided, previous)
            if episode < self.warmup:
                action = float(rng.uniform(self.lbound, self.rbound))
            else:
                delta = self.init_delta * self.delta_decay ** (episode - self.warmup)
                action = truncated_normal(agent.act(state), delta, self.lbound, self.rbound, rng)
            decided[index] = env.clip_action(index, action, decided)
            states.append(state)
            previous = decided[index]
        accuracy, flops = self.evaluate_policy(decided)
        reward = self.reward(accuracy, flops)
        final_state = env.state(len(env.layers) - 1, decided, previous)
        for index, state in enumerate(states):
            last = index == len(states) - 1
            agent.memory.append(Transition(state, decided[index], reward,
                                           final_state if last else states[index + 1], last))
        if episode >= self.warmup:
            for _ in range(len(env.layers)):
                agent.update()
        return {"episode": episode + 1, "ratios": dict(decided), "accuracy": accuracy, "flops": flops,
                "flops_ratio": flops / env.total_flops, "reward": reward,
                "channels": {env.layers[i].name: env.channels(i, r) for i, r in decided.items()}}

    def evaluate_policy(self, ratios: dict[int, float]) -> tuple[float, float]:
        """Prune a copy at ``ratios`` (selection + least squares) and return (accuracy, FLOPs)."""
        import copy

        assert self.env is not None
        clone = copy.deepcopy(self.model)
        masks = self.env.masks_for(clone, ratios)
        self.env.reconstruct(clone, masks)
        self.env.apply(clone, masks)
        return float(self.evaluator(self.val_loader, clone)), self.env.flops(ratios)

    def reward(self, accuracy: float, flops: float) -> float:
        """``acc_reward``: accuracy in [0, 1] (percentages are scaled); ``acc_flops_reward``: -error * log(FLOPs)."""
        acc = accuracy / 100 if accuracy > 1 else accuracy
        if self.reward_name == "acc_reward":
            return acc
        return -(1 - acc) * math.log(max(flops, 1.0))

    def apply_policy(self, ratios: dict[int, float]) -> None:
        """Prune the user's model at ``ratios``: refit the consumers, attach the structured masks."""
        assert self.env is not None
        masks = self.env.masks_for(self.model, ratios)
        self.env.reconstruct(self.model, masks)
        self._attach_masks()
        for name, entry in masks.items():
            self.masks.attach(name, dict(self.model.named_modules())[name])
            self.masks.set(name, weight=entry.get("weight"), bias=entry.get("bias"))
        self.masks_calculated = True
        self.best_ratios = {self.env.layers[i].name: r for i, r in ratios.items()}

    def compute_masks(self, sparsities: dict[str, float] | None = None) -> dict[str, Any]:
        """AMC's masks come from its search; ``compress()`` computes them."""
        if not self.masks_calculated:
            self.compress()
        return self.get_masks()

    def _save(self, agent: DDPG) -> None:
        assert self.output_dir is not None and self.best is not None
        write_json(os.path.join(self.output_dir, "amc_history.json"),
                   [{k: v for k, v in r.items() if k != "ratios"} for r in self.history])
        write_json(os.path.join(self.output_dir, "best_policy.json"),
                   {k: v for k, v in self.best.items() if k != "ratios"})
        torch.save(agent.state_dict(), os.path.join(self.output_dir, "ddpg_agent.pt"))
