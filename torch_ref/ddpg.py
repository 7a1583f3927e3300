"""The DDPG variants in plain PyTorch: DDPG (Lillicrap settings), OurDDPG, and the seed notebook's.

All three share one ``train``: target from the target actor and target critic (no
noise), one critic step, then every ``policy_freq``-th iteration (every iteration by
default) one actor step on the new critic and Polyak on both targets. They differ in
the critic network, its loss, reward scaling and Adam settings. ``critic_loss_scale`` and
``target_update`` are TD3's (``torch_ref.td3``); ``actor_q`` is accepted for the same
interface and changes nothing (with one critic, Q1 is the minimum).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from torch_ref.networks import Actor, DDPGCritic, SeedCritic, SingleCritic, soft_update
from torch_ref.td3 import TD3, Batch, grads_of


class DDPG:
    critic_cls: type[torch.nn.Module] = DDPGCritic

    def __init__(self, obs_dim: int, act_dim: int, action_low: Sequence[float], action_high: Sequence[float],
                 hidden: Sequence[int] = (400, 300), critic_hidden: Sequence[int] | None = None,
                 gamma: float = 0.99, tau: float = 0.001, policy_freq: int = 1, actor_lr: float = 1e-4,
                 critic_lr: float = 1e-3, critic_weight_decay: float = 1e-2,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8, reward_scale: float = 1.0,
                 loss: str = "mse", critic_loss_scale: float = 1.0, target_update: str = "delayed",
                 actor_q: str = "q1", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.actor = Actor(obs_dim, act_dim, action_low, action_high, hidden).to(device, dtype)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, betas=adam_betas, eps=adam_eps)

        self.critic = self.critic_cls(obs_dim, act_dim, critic_hidden or hidden).to(device, dtype)
        self.critic_target = copy.deepcopy(self.critic)
        # PyTorch's Adam weight_decay adds wd * p to the gradient before the moments (L2, not AdamW).
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, betas=adam_betas,
                                                 eps=adam_eps, weight_decay=critic_weight_decay)

        self.gamma = gamma
        self.tau = tau
        self.policy_freq = policy_freq
        self.reward_scale = reward_scale
        self.critic_loss_scale = critic_loss_scale
        if target_update not in ("delayed", "every_update") or actor_q not in ("q1", "min"):
            raise ValueError(f"unknown target_update {target_update!r} or actor_q {actor_q!r}")
        self.target_update = target_update
        self.loss = F.smooth_l1_loss if loss == "huber" else F.mse_loss
        self.device, self.dtype = device, dtype
        self.step = 0

    select_action = TD3.select_action

    def train(self, batch: Batch, noise: torch.Tensor | None = None, record: bool = False) -> dict[str, Any]:
        """One update (``noise`` is accepted for a uniform interface and unused: no target smoothing)."""
        self.step += 1
        obs, action, next_obs, reward, not_done = batch
        info: dict[str, Any] = {}

        # Compute the target Q value.
        with torch.no_grad():
            next_action = self.actor_target(next_obs)
            target_Q = self.critic_target(next_obs, next_action)
            target_Q = reward * self.reward_scale + not_done * self.gamma * target_Q

        # Get current Q estimate and the critic loss.
        current_Q = self.critic(obs, action)
        critic_loss = self.critic_loss_scale * self.loss(current_Q, target_Q)

        # Optimize the critic.
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        info["critic_loss"] = critic_loss.detach()
        if record:
            info.update(target_action=next_action, target_q=target_Q, current_q=current_Q.detach()[None],
                        critic_grads=grads_of(self.critic))
        self.critic_optimizer.step()

        if self.target_update == "every_update":
            # Targets on every update, before the actor step (SBX's order).
            soft_update(self.critic, self.critic_target, self.tau)
            soft_update(self.actor, self.actor_target, self.tau)

        if self.step % self.policy_freq == 0:
            # Compute actor loss with the critic just updated.
            actor_Q = self.critic(obs, self.actor(obs))
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


class OurDDPG(DDPG):
    """Fujimoto's re-tuned DDPG: TD3's networks and rates with a single critic."""

    critic_cls = SingleCritic

    def __init__(self, obs_dim: int, act_dim: int, action_low: Sequence[float], action_high: Sequence[float],
                 hidden: Sequence[int] = (256, 256), critic_hidden: Sequence[int] | None = None,
                 gamma: float = 0.99, tau: float = 0.005, policy_freq: int = 1, actor_lr: float = 3e-4,
                 critic_lr: float = 3e-4, critic_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(obs_dim, act_dim, action_low, action_high, hidden, critic_hidden, gamma, tau,
                         policy_freq, actor_lr, critic_lr, critic_weight_decay, **kwargs)


class SeedDDPG(DDPG):
    """The seed notebook's DDPG: branch critic, Huber loss, rewards / 100, betas (0.9, 0.99)."""

    critic_cls = SeedCritic

    def __init__(self, obs_dim: int = 3, act_dim: int = 1, action_low: Sequence[float] = (-2.0,),
                 action_high: Sequence[float] = (2.0,), hidden: Sequence[int] = (128, 64),
                 critic_hidden: Sequence[int] = (64, 32), gamma: float = 0.99, tau: float = 0.005,
                 policy_freq: int = 1, actor_lr: float = 5e-4, critic_lr: float = 1e-3,
                 critic_weight_decay: float = 0.0, adam_betas: tuple[float, float] = (0.9, 0.99),
                 reward_scale: float = 0.01, loss: str = "huber", **kwargs: Any) -> None:
        super().__init__(obs_dim, act_dim, action_low, action_high, hidden, critic_hidden, gamma, tau,
                         policy_freq, actor_lr, critic_lr, critic_weight_decay, adam_betas=adam_betas,
                         reward_scale=reward_scale, loss=loss, **kwargs)
