"""The reference networks in plain PyTorch (Fujimoto's TD3.py layout).

Layers are named ``l1``, ``l2`` ... in order; the twin critic keeps Q1 in the first
half (``l1`` .. ``l{n+1}``) and Q2 in the second, as TD3.py does with l1-l3 / l4-l6.
The seed-ddpg critic keeps the notebook's names (``fc_s``, ``fc_a``, ``fc1``, ``fc2``).
Initialisation is nn.Linear's default.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _add_layers(module: nn.Module, sizes: Sequence[int], first: int) -> list[str]:
    names = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        name = f"l{first + i}"
        setattr(module, name, nn.Linear(n_in, n_out))
        names.append(name)
    return names


def _mlp(module: nn.Module, names: list[str], x: torch.Tensor) -> torch.Tensor:
    for name in names[:-1]:
        x = F.relu(getattr(module, name)(x))
    return getattr(module, names[-1])(x)


class Actor(nn.Module):
    scale: torch.Tensor  # buffers registered in __init__
    bias: torch.Tensor

    def __init__(self, obs_dim: int, act_dim: int, action_low: Sequence[float], action_high: Sequence[float],
                 hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.names = _add_layers(self, [obs_dim, *hidden, act_dim], first=1)
        low = torch.as_tensor(action_low, dtype=torch.float64)
        high = torch.as_tensor(action_high, dtype=torch.float64)
        # Not part of the state_dict: the box is configuration, not a weight.
        self.register_buffer("scale", (high - low) / 2, persistent=False)
        self.register_buffer("bias", (high + low) / 2, persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(_mlp(self, self.names, obs)) + self.bias


class Critic(nn.Module):
    """TD3's twin critic: two independent Q(s, a) = MLP(concat[s, a])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden, 1]
        self.q1_names = _add_layers(self, sizes, first=1)
        self.q2_names = _add_layers(self, sizes, first=len(sizes))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([obs, action], 1)
        return _mlp(self, self.q1_names, sa), _mlp(self, self.q2_names, sa)

    def Q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return _mlp(self, self.q1_names, torch.cat([obs, action], 1))


class SingleCritic(nn.Module):
    """OurDDPG's critic: one Q(s, a) = MLP(concat[s, a])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.names = _add_layers(self, [obs_dim + act_dim, *hidden, 1], first=1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return _mlp(self, self.names, torch.cat([obs, action], 1))


class DDPGCritic(nn.Module):
    """Lillicrap's critic: the action joins after the first layer."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (400, 300)) -> None:
        super().__init__()
        h1, h2 = hidden
        self.l1 = nn.Linear(obs_dim, h1)
        self.l2 = nn.Linear(h1 + act_dim, h2)
        self.l3 = nn.Linear(h2, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        q = F.relu(self.l1(obs))
        q = F.relu(self.l2(torch.cat([q, action], 1)))
        return self.l3(q)


class SeedCritic(nn.Module):
    """The seed notebook's Q: state and action branches, concatenated."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        branch, width = hidden
        self.fc_s = nn.Linear(obs_dim, branch)
        self.fc_a = nn.Linear(act_dim, branch)
        self.fc1 = nn.Linear(2 * branch, width)
        self.fc2 = nn.Linear(width, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        h = torch.cat([F.relu(self.fc_s(obs)), F.relu(self.fc_a(action))], dim=1)
        return self.fc2(F.relu(self.fc1(h)))


def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak: theta_target <- tau * theta + (1 - tau) * theta_target."""
    for param, target_param in zip(net.parameters(), target.parameters()):
        target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
