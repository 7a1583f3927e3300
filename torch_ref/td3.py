"""TD3 in plain PyTorch, as Fujimoto's TD3.py writes it.

Differences from TD3.py, all for cross-checking: the target-policy noise can be
passed in (standard normal draws, shape of the action), the action box may be
asymmetric, ``train(..., record=True)`` returns the intermediate quantities, and
two settings the DDPG variants have (critic L2 weight decay, a reward scale) exist here
too, with defaults that leave TD3.py's arithmetic unchanged (0 and 1), and so do three
settings that express other libraries' variants of the update (SBX's TD3), each defaulting
to TD3.py's: ``critic_loss_scale`` (1; the critic loss is multiplied by it),
``target_update`` ("delayed": targets move after the delayed actor step; "every_update":
on every update, after the critic step and before the actor step) and ``actor_q`` ("q1":
the actor ascends Q1; "min": the minimum of the two critics).
Names follow jax_td3's so the two read alike: ``obs``/``next_obs`` for TD3.py's
``state``/``next_state``, ``gamma`` for ``discount``, ``step`` for ``total_it``.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F

from torch_ref.networks import Actor, Critic, soft_update


class Batch(NamedTuple):
    """(obs, action, next_obs, reward, not_done); reward and not_done are (B, 1)."""

    obs: torch.Tensor
    action: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    not_done: torch.Tensor


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Called right after a backward pass, which set every parameter's grad.
    return {name: cast(torch.Tensor, p.grad).detach().clone() for name, p in module.named_parameters()}


class TD3:
    def __init__(self, obs_dim: int, act_dim: int, action_low: Sequence[float], action_high: Sequence[float],
                 hidden: Sequence[int] = (256, 256), critic_hidden: Sequence[int] | None = None,
                 gamma: float = 0.99, tau: float = 0.005, policy_noise: float = 0.2, noise_clip: float = 0.5,
                 policy_freq: int = 2, actor_lr: float = 3e-4, critic_lr: float = 3e-4,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 critic_weight_decay: float = 0.0, reward_scale: float = 1.0, critic_loss_scale: float = 1.0,
                 target_update: str = "delayed", actor_q: str = "q1", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.actor = Actor(obs_dim, act_dim, action_low, action_high, hidden).to(device, dtype)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, betas=adam_betas, eps=adam_eps)

        self.critic = Critic(obs_dim, act_dim, critic_hidden or hidden).to(device, dtype)
        self.critic_target = copy.deepcopy(self.critic)
        # PyTorch's Adam weight_decay adds wd * p to the gradient before the moments (L2, not AdamW).
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, betas=adam_betas,
                                                 eps=adam_eps, weight_decay=critic_weight_decay)

        self.low = torch.as_tensor(action_low, device=device, dtype=dtype)
        self.high = torch.as_tensor(action_high, device=device, dtype=dtype)
        self.action_scale = (self.high - self.low) / 2
        self.gamma = gamma
        self.tau = tau
        self.policy_noise = policy_noise  # in units of the action scale, like noise_clip
        self.noise_clip = noise_clip
        self.policy_freq = policy_freq
        self.reward_scale = reward_scale
        self.critic_loss_scale = critic_loss_scale
        if target_update not in ("delayed", "every_update") or actor_q not in ("q1", "min"):
            raise ValueError(f"unknown target_update {target_update!r} or actor_q {actor_q!r}")
        self.target_update = target_update
        self.actor_q = actor_q
        self.device, self.dtype = device, dtype
        self.step = 0

    def select_action(self, obs: Any) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(obs).reshape(1, -1), device=self.device, dtype=self.dtype)
        with torch.no_grad():
            return self.actor(obs).cpu().numpy().flatten()

    def train(self, batch: Batch, noise: torch.Tensor | None = None, record: bool = False) -> dict[str, Any]:
        """One update. Returns detached losses; with ``record``, also the target action, target Q,
        current Qs and gradients (cloned right after each backward)."""
        self.step += 1
        obs, action, next_obs, reward, not_done = batch
        info: dict[str, Any] = {}

        with torch.no_grad():
            # Select action according to the target policy and add clipped noise.
            if noise is None:
                noise = torch.randn_like(action)
            clip = self.noise_clip * self.action_scale
            noise = (noise * (self.policy_noise * self.action_scale)).clamp(-clip, clip)
            next_action = (self.actor_target(next_obs) + noise).clamp(self.low, self.high)

            # Compute the target Q value.
            target_Q1, target_Q2 = self.critic_target(next_obs, next_action)
            target_Q = torch.min(target_Q1, target_Q2)
            target_Q = reward * self.reward_scale + not_done * self.gamma * target_Q

        # Get current Q estimates.
        current_Q1, current_Q2 = self.critic(obs, action)

        # Compute critic loss (critic_loss_scale is 1 in TD3.py; multiplying by 1 is exact).
        critic_loss = self.critic_loss_scale * (F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q))

        # Optimize the critic.
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        info["critic_loss"] = critic_loss.detach()
        if record:
            info.update(target_action=next_action, target_q=target_Q,
                        current_q=torch.stack([current_Q1.detach(), current_Q2.detach()]),
                        critic_grads=grads_of(self.critic))
        self.critic_optimizer.step()

        if self.target_update == "every_update":
            # Targets on every update, before the actor step (SBX's order; TD3.py's is below).
            soft_update(self.critic, self.critic_target, self.tau)
            soft_update(self.actor, self.actor_target, self.tau)

        # Delayed policy updates.
        if self.step % self.policy_freq == 0:
            # Compute actor loss.
            if self.actor_q == "min":
                actor_Q = torch.min(*self.critic(obs, self.actor(obs)))
            else:
                actor_Q = self.critic.Q1(obs, self.actor(obs))
            actor_loss = -actor_Q.mean()

            # Optimize the actor.
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            info["actor_loss"] = actor_loss.detach()
            if record:
                info.update(actor_q=actor_Q.detach(), actor_grads=grads_of(self.actor))
            self.actor_optimizer.step()

            # Update the frozen target models.
            if self.target_update == "delayed":
                soft_update(self.critic, self.critic_target, self.tau)
                soft_update(self.actor, self.actor_target, self.tau)
        return info
