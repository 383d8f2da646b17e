"""DDPG agent of AMC (Lillicrap et al. 2016 as used by He et al. 2018): small torch MLPs.

The actor maps a layer embedding to a preserve ratio in (0, 1); the critic scores (state, action).
Exploration is a truncated normal around the actor's action whose width starts at ``init_delta``
and decays by ``delta_decay`` per episode after the warm-up. Rewards are centred by a moving
average (AMC's variance reduction) before the critic's TD targets.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Actor", "Critic", "DDPG", "ReplayMemory", "Transition", "truncated_normal"]


class Actor(nn.Module):
    def __init__(self, n_states: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_states, hidden1), nn.ReLU(), nn.Linear(hidden1, hidden2), nn.ReLU(),
                                 nn.Linear(hidden2, 1), nn.Sigmoid())

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


class Critic(nn.Module):
    def __init__(self, n_states: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.state_in = nn.Linear(n_states, hidden1)
        self.action_in = nn.Linear(1, hidden1)
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(hidden1, hidden2), nn.ReLU(), nn.Linear(hidden2, 1))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(self.state_in(state) + self.action_in(action))


@dataclass
class Transition:
    state: np.ndarray
    action: float
    reward: float
    next_state: np.ndarray
    terminal: bool


class ReplayMemory:
    """Bounded FIFO of transitions sampled uniformly."""

    def __init__(self, limit: int, rng: random.Random) -> None:
        self.items: deque[Transition] = deque(maxlen=max(1, limit))
        self.rng = rng

    def __len__(self) -> int:
        return len(self.items)

    def append(self, item: Transition) -> None:
        self.items.append(item)

    def sample(self, size: int) -> list[Transition]:
        return self.rng.sample(list(self.items), min(size, len(self.items)))


def truncated_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """A draw of N(mean, sigma) truncated to [low, high] (rejection sampling, clipped as a last resort)."""
    if sigma <= 0:
        return float(np.clip(mean, low, high))
    for _ in range(100):
        value = rng.normal(mean, sigma)
        if low <= value <= high:
            return float(value)
    return float(np.clip(mean, low, high))


class DDPG:
    """Actor-critic with target networks, soft updates (``tau``) and a replay memory."""

    def __init__(self, n_states: int, *, hidden1: int, hidden2: int, lr_c: float, lr_a: float, tau: float,
                 discount: float, bsize: int, memory_limit: int, seed: int | None) -> None:
        with torch.random.fork_rng(devices=[]):  # deterministic init without disturbing the user's RNG
            torch.manual_seed(seed if seed is not None else torch.initial_seed() % 2**31)
            self.actor, self.actor_target = Actor(n_states, hidden1, hidden2), Actor(n_states, hidden1, hidden2)
            self.critic, self.critic_target = Critic(n_states, hidden1, hidden2), Critic(n_states, hidden1, hidden2)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=lr_a)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=lr_c)
        self.tau, self.discount, self.bsize = tau, discount, bsize
        self.memory = ReplayMemory(memory_limit, random.Random(seed))
        self.moving_average: float | None = None
        self.moving_alpha = 0.5

    @torch.no_grad()
    def act(self, state: np.ndarray) -> float:
        """The actor's deterministic action for ``state``."""
        return float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])

    def update(self) -> tuple[float, float]:
        """One gradient step of critic and actor on a replay batch; returns (critic loss, policy loss)."""
        batch = self.memory.sample(self.bsize)
        states = torch.as_tensor(np.stack([t.state for t in batch]), dtype=torch.float32)
        next_states = torch.as_tensor(np.stack([t.next_state for t in batch]), dtype=torch.float32)
        actions = torch.tensor([[t.action] for t in batch], dtype=torch.float32)
        rewards = torch.tensor([[t.reward] for t in batch], dtype=torch.float32)
        terminal = torch.tensor([[float(t.terminal)] for t in batch])
        mean_reward = float(rewards.mean())
        self.moving_average = mean_reward if self.moving_average is None else (
            self.moving_average + (1 - self.moving_alpha) * (mean_reward - self.moving_average))
        rewards = rewards - self.moving_average
        with torch.no_grad():
            next_q = self.critic_target(next_states, self.actor_target(next_states))
            target_q = rewards + self.discount * (1 - terminal) * next_q
        critic_loss = nn.functional.mse_loss(self.critic(states, actions), target_q)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()
        policy_loss = -self.critic(states, self.actor(states)).mean()
        self.actor_optim.zero_grad()
        policy_loss.backward()
        self.actor_optim.step()
        self._soft_update(self.actor_target, self.actor)
        self._soft_update(self.critic_target, self.critic)
        return float(critic_loss.detach()), float(policy_loss.detach())

    @torch.no_grad()
    def _soft_update(self, target: nn.Module, source: nn.Module) -> None:
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1 - self.tau).add_(s, alpha=self.tau)

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict()}
