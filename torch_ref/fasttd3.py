"""FastTD3 in plain PyTorch, laid out like FastTD3's own modules so the two read side by side.

Classes and names follow ``fast_td3/fast_td3.py`` (``DistributionalQNetwork``, ``Critic``, ``Actor``),
``fast_td3/fast_td3_utils.py`` (``EmpiricalNormalization``) and ``fast_td3/train.py`` (``update_main``,
``update_pol``, ``soft_update``), at commit 229ed59bbf43ea2f7a2d5d90d1076314839944d7 of
github.com/younggyoseo/FastTD3. What differs, all for cross-checking against jax_td3:

- hidden sizes are explicit tuples of any length (FastTD3 fixes h, h/2, h/4; that is the default);
  the actor's output is ``action_bias + action_scale * tanh(...)`` (identity on FastTD3's [-1, 1] boxes);
- the target-policy noise is passed in (standard normal draws, shape of the action), in units of the
  action scale like TD3's;
- the update only reads the observation normaliser (the loop feeds it through ``normalizer_update``);
  FastTD3 also updates it with each sampled batch;
- gradient clipping uses optax's rule, not ``clip_grad_norm_`` (see ``clip_grad_norm``);
- the cosine learning rate counts updates and is computed in closed form (see ``learning_rates``);
- ``DistributionalQNetwork.projection`` is the softmax then ``categorical_projection`` (FastTD3's arithmetic,
  as a function), and ``update_main`` calls ``bootstrap_discount``, ``target_projection`` and ``cdq_choice``
  for the pieces where ports differ (so that one can be replaced at a time);
- no AMP, no ``torch.compile``, no SimNorm, multi-task or asymmetric observations.
Everything works in the dtype given (float64 for parity).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ref.td3 import grads_of


class Batch(NamedTuple):
    """n-step transitions; obs/next_obs are raw (the update normalises them); reward, bootstrap and
    discount are (B,): the n-step return, 1.0 where the target bootstraps, gamma^k."""

    obs: torch.Tensor
    action: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    bootstrap: torch.Tensor
    discount: torch.Tensor


def _hidden_layers(sizes: Sequence[int], layer_norm: bool, factory: dict[str, Any]) -> list[nn.Module]:
    """Linear (LayerNorm) ReLU for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(n_in, n_out, **factory))
        if layer_norm:
            layers.append(nn.LayerNorm(n_out, **factory))
        layers.append(nn.ReLU())
    return layers


class EmpiricalNormalization(nn.Module):
    """Running mean and population variance of every observation seen (Chan et al.'s merge of batch
    statistics); normalises as (x - mean) / (std + eps) with std = sqrt(var)."""

    _mean: torch.Tensor  # buffers registered in __init__, each (1, d)
    _var: torch.Tensor
    _std: torch.Tensor
    count: torch.Tensor  # () long

    def __init__(self, shape: int, eps: float = 1e-2, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("_mean", torch.zeros(1, shape, device=device, dtype=dtype))
        self.register_buffer("_var", torch.ones(1, shape, device=device, dtype=dtype))
        self.register_buffer("_std", torch.ones(1, shape, device=device, dtype=dtype))
        self.register_buffer("count", torch.zeros((), device=device, dtype=torch.long))

    @property
    def mean(self) -> torch.Tensor:
        return self._mean.squeeze(0).clone()

    @property
    def var(self) -> torch.Tensor:
        return self._var.squeeze(0).clone()

    @property
    def std(self) -> torch.Tensor:
        return self._std.squeeze(0).clone()

    @torch.no_grad()
    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Normalise ``x`` (N, d); first fold it into the statistics when ``update`` (and training)."""
        if x.shape[1:] != self._mean.shape[1:]:
            raise ValueError(f"expected observations of shape (N, {self._mean.shape[1]}), got {tuple(x.shape)}")
        if update and self.training:
            self.update(x)
        return (x - self._mean) / (self._std + self.eps)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        batch_size = x.shape[0]
        batch_mean = torch.mean(x, dim=0, keepdim=True)
        batch_var = torch.var(x, dim=0, keepdim=True, unbiased=False)
        # Counts enter the arithmetic in the statistics' dtype (a long count divided by a long would be
        # float32 whatever the buffers are).
        count = self.count.to(self._mean.dtype)
        new_count = count + batch_size

        delta = batch_mean - self._mean
        self._mean.copy_(self._mean + delta * (batch_size / new_count))

        delta2 = batch_mean - self._mean  # against the mean just updated, as FastTD3 does
        m_a = self._var * count
        m_b = batch_var * batch_size
        M2 = m_a + m_b + delta2.pow(2) * (count * batch_size / new_count)
        self._var.copy_(M2 / new_count)
        self._std.copy_(self._var.sqrt())
        self.count.add_(batch_size)


class DistributionalQNetwork(nn.Module):
    """One C51 critic: logits over ``num_atoms`` atoms of Z(s, a) from MLP(concat[s, a]).

    ``net`` holds every hidden layer but the last; ``fc_head`` the last hidden layer and the output
    (with three sizes this is FastTD3's split exactly)."""

    def __init__(self, n_obs: int, n_act: int, num_atoms: int, v_min: float, v_max: float,
                 hidden: Sequence[int] = (1024, 512, 256), layer_norm: bool = False,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        factory: dict[str, Any] = dict(device=device, dtype=dtype)
        sizes = [n_obs + n_act, *hidden]
        self.net = nn.Sequential(*_hidden_layers(sizes[:-1], layer_norm, factory))
        self.fc_head = nn.Sequential(*_hidden_layers(sizes[-2:], layer_norm, factory),
                                     nn.Linear(sizes[-1], num_atoms, **factory))
        self.v_min = v_min
        self.v_max = v_max
        self.num_atoms = num_atoms

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.fc_head(self.net(torch.cat([obs, actions], 1)))

    def projection(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                   bootstrap: torch.Tensor, discount: torch.Tensor, q_support: torch.Tensor) -> torch.Tensor:
        """This network's next-state distribution at (obs, actions), moved to rewards + bootstrap *
        discount * z and projected back onto ``q_support`` (B, num_atoms); rewards etc. are (B,)."""
        next_dist = F.softmax(self.forward(obs, actions), dim=1)
        return categorical_projection(next_dist, rewards, bootstrap, discount, q_support, self.v_min, self.v_max)


def categorical_projection(next_dist: torch.Tensor, rewards: torch.Tensor, bootstrap: torch.Tensor,
                           discount: torch.Tensor, q_support: torch.Tensor, v_min: float,
                           v_max: float) -> torch.Tensor:
    """C51's projection: the distributions ``next_dist`` (B, num_atoms) on ``q_support``, moved to rewards +
    bootstrap * discount * z (clamped to [v_min, v_max]) and split back onto the two nearest atoms."""
    b = support_positions(rewards, bootstrap, discount, q_support, v_min, v_max)
    lower = torch.floor(b).long()
    upper = torch.ceil(b).long()

    # A target exactly on an atom has lower == upper and would get no mass from either share:
    # FastTD3 widens the pair to (k - 1, k), or to (0, 1) on the first atom, so all of it lands on k.
    on_atom = lower == upper
    lower_mask = on_atom & (lower > 0)
    upper_mask = on_atom & (lower == 0)  # both masks from the unshifted indices
    lower = torch.where(lower_mask, lower - 1, lower)
    upper = torch.where(upper_mask, upper + 1, upper)
    return split_onto_atoms(next_dist, b, lower, upper)


def support_positions(rewards: torch.Tensor, bootstrap: torch.Tensor, discount: torch.Tensor,
                      q_support: torch.Tensor, v_min: float, v_max: float) -> torch.Tensor:
    """(B, num_atoms) where each atom z lands, rewards + bootstrap * discount * z clamped to [v_min, v_max],
    in units of the atom spacing from v_min (atom k at k)."""
    num_atoms = q_support.shape[0]
    delta_z = (v_max - v_min) / (num_atoms - 1)
    target_z = rewards.unsqueeze(1) + bootstrap.unsqueeze(1) * discount.unsqueeze(1) * q_support
    target_z = target_z.clamp(v_min, v_max)
    # Where (v_max - v_min) / delta_z rounds above num_atoms - 1, b at v_max would index past the last
    # atom (FastTD3's projection then reads the next row, or past the end); clipping b keeps it on the
    # support and changes nothing where the division is exact (FastTD3's supports of +-10 and +-250).
    return ((target_z - v_min) / delta_z).clamp(0, num_atoms - 1)


def split_onto_atoms(next_dist: torch.Tensor, b: torch.Tensor, lower: torch.Tensor,
                     upper: torch.Tensor) -> torch.Tensor:
    """Each probability of ``next_dist`` (B, num_atoms), landed at position ``b``, shared between the atoms
    ``lower`` (upper - b of it) and ``upper`` (b - lower of it), summed per row."""
    batch_size, num_atoms = next_dist.shape
    proj_dist = torch.zeros_like(next_dist)
    # Flat indices: row i's atoms start at i * num_atoms.
    offset = (torch.arange(batch_size, device=next_dist.device) * num_atoms).unsqueeze(1)
    proj_dist.view(-1).index_add_(0, (lower + offset).view(-1),
                                  (next_dist * (upper.to(b.dtype) - b)).view(-1))
    proj_dist.view(-1).index_add_(0, (upper + offset).view(-1),
                                  (next_dist * (b - lower.to(b.dtype))).view(-1))
    return proj_dist


class Critic(nn.Module):
    """FastTD3's twin distributional critic: ``qnet1``, ``qnet2`` and the support ``q_support``."""

    q_support: torch.Tensor  # buffer registered in __init__

    def __init__(self, n_obs: int, n_act: int, num_atoms: int, v_min: float, v_max: float,
                 hidden: Sequence[int] = (1024, 512, 256), layer_norm: bool = False,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.qnet1 = DistributionalQNetwork(n_obs, n_act, num_atoms, v_min, v_max, hidden, layer_norm, device, dtype)
        self.qnet2 = DistributionalQNetwork(n_obs, n_act, num_atoms, v_min, v_max, hidden, layer_norm, device, dtype)
        self.register_buffer("q_support", torch.linspace(v_min, v_max, num_atoms, device=device, dtype=dtype))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.qnet1(obs, actions), self.qnet2(obs, actions)

    def projection(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                   bootstrap: torch.Tensor, discount: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both networks' projected next-state distributions."""
        return (self.qnet1.projection(obs, actions, rewards, bootstrap, discount, self.q_support),
                self.qnet2.projection(obs, actions, rewards, bootstrap, discount, self.q_support))

    def get_value(self, probs: torch.Tensor) -> torch.Tensor:
        """Expected value sum_j probs[:, j] * z_j of distributions (B, num_atoms)."""
        return torch.sum(probs * self.q_support, dim=1)


class Actor(nn.Module):
    """Deterministic policy: ``net`` (every hidden layer but the last), ``fc_head`` (the last),
    ``fc_mu`` (Linear + tanh; weight N(0, init_scale^2), bias 0), then the action box."""

    action_scale: torch.Tensor  # buffers registered in __init__
    action_bias: torch.Tensor

    def __init__(self, n_obs: int, n_act: int, action_low: Sequence[float], action_high: Sequence[float],
                 hidden: Sequence[int] = (512, 256, 128), init_scale: float = 0.01,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        factory: dict[str, Any] = dict(device=device, dtype=dtype)
        sizes = [n_obs, *hidden]
        self.net = nn.Sequential(*_hidden_layers(sizes[:-1], False, factory))
        self.fc_head = nn.Sequential(*_hidden_layers(sizes[-2:], False, factory))
        mu = nn.Linear(sizes[-1], n_act, **factory)
        nn.init.normal_(mu.weight, 0.0, init_scale)
        nn.init.constant_(mu.bias, 0.0)
        self.fc_mu = nn.Sequential(mu, nn.Tanh())
        low = torch.as_tensor(action_low, device=device, dtype=dtype)
        high = torch.as_tensor(action_high, device=device, dtype=dtype)
        # Not in the state_dict: the box is configuration, not a weight.
        self.register_buffer("action_scale", (high - low) / 2, persistent=False)
        self.register_buffer("action_bias", (high + low) / 2, persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_bias + self.action_scale * self.fc_mu(self.fc_head(self.net(obs)))


def global_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """sqrt of the sum of every gradient entry squared (optax.tree.norm over the gradients)."""
    return torch.sqrt(sum((torch.sum(cast(torch.Tensor, p.grad) ** 2) for p in params),
                          torch.zeros((), dtype=params[0].dtype, device=params[0].device)))


@torch.no_grad()
def clip_grad_norm(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients to global norm ``max_norm`` where theirs is not below it; returns the norm
    before clipping. optax.clip_by_global_norm's rule (g / norm * max_norm), which the JAX update uses:
    torch's clip_grad_norm_ divides by norm + 1e-6 instead and would differ from it by ~1e-6 relative."""
    norm = global_norm(params)
    if max_norm > 0 and not norm < max_norm:
        for p in params:
            cast(torch.Tensor, p.grad).copy_(cast(torch.Tensor, p.grad) / norm * max_norm)
    return norm


class FastTD3:
    """The FastTD3 learner: actor (no actor target: target actions come from the online actor), twin
    distributional critic ``qnet`` and its Polyak target ``qnet_target``, AdamW for both, and the
    observation normaliser. Keywords are jax_td3's FastTD3Config fields (defaults equal)."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: Sequence[float], action_high: Sequence[float],
                 hidden: Sequence[int] = (512, 256, 128), critic_hidden: Sequence[int] | None = (1024, 512, 256),
                 num_atoms: int = 101, v_min: float = -250.0, v_max: float = 250.0, gamma: float = 0.99,
                 tau: float = 0.1, policy_noise: float = 0.001, noise_clip: float = 0.5, policy_freq: int = 2,
                 actor_lr: float = 3e-4, critic_lr: float = 3e-4, actor_lr_end: float | None = None,
                 critic_lr_end: float | None = None, lr_schedule_updates: int = 0, adam_b1: float = 0.9,
                 adam_b2: float = 0.999, adam_eps: float = 1e-8, weight_decay: float = 0.1,
                 max_grad_norm: float = 0.0, use_cdq: bool = True, obs_normalization: bool = True,
                 critic_layer_norm: bool = False, init_scale: float = 0.01, reward_scale: float = 1.0,
                 critic_loss_scale: float = 1.0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        critic_sizes = hidden if critic_hidden is None else critic_hidden
        self.actor = Actor(obs_dim, act_dim, action_low, action_high, hidden, init_scale, device, dtype)
        self.qnet = Critic(obs_dim, act_dim, num_atoms, v_min, v_max, critic_sizes, critic_layer_norm, device, dtype)
        self.qnet_target = Critic(obs_dim, act_dim, num_atoms, v_min, v_max, critic_sizes, critic_layer_norm,
                                  device, dtype)
        self.qnet_target.load_state_dict(self.qnet.state_dict())
        self.q_optimizer = torch.optim.AdamW(self.qnet.parameters(), lr=critic_lr, betas=(adam_b1, adam_b2),
                                             eps=adam_eps, weight_decay=weight_decay)
        self.actor_optimizer = torch.optim.AdamW(self.actor.parameters(), lr=actor_lr, betas=(adam_b1, adam_b2),
                                                 eps=adam_eps, weight_decay=weight_decay)
        self.obs_normalizer = EmpiricalNormalization(obs_dim, device=device, dtype=dtype)

        self.low = torch.as_tensor(action_low, device=device, dtype=dtype)
        self.high = torch.as_tensor(action_high, device=device, dtype=dtype)
        self.action_scale = (self.high - self.low) / 2
        self.gamma = gamma  # the replay's n-step discount carries gamma; kept for the config's sake
        self.tau = tau
        self.policy_noise = policy_noise  # in units of the action scale, like noise_clip
        self.noise_clip = noise_clip
        self.policy_freq = policy_freq
        self.actor_lr, self.critic_lr = actor_lr, critic_lr
        self.actor_lr_end, self.critic_lr_end = actor_lr_end, critic_lr_end
        self.lr_schedule_updates = lr_schedule_updates
        self.max_grad_norm = max_grad_norm
        self.use_cdq = use_cdq
        self.obs_normalization = obs_normalization
        self.reward_scale = reward_scale
        self.critic_loss_scale = critic_loss_scale
        self.device, self.dtype = device, dtype
        self.step = 0  # updates done

    # -- the loop's side ------------------------------------------------------------------
    def normalizer_update(self, obs: torch.Tensor) -> None:
        """Fold observations the loop collected (N, obs_dim) into the normaliser's statistics (nothing
        when obs_normalization is off: FastTD3 then has no normaliser, only nn.Identity)."""
        if self.obs_normalization:
            self.obs_normalizer.update(obs)

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the networks see them; reads the statistics, never changes them."""
        return self.obs_normalizer(obs, update=False) if self.obs_normalization else obs

    # -- one update -------------------------------------------------------------------------
    def learning_rates(self, updates_done: int) -> tuple[float, float]:
        """(critic_lr, actor_lr) for the update after ``updates_done`` updates.

        Cosine from lr to lr_end over lr_schedule_updates updates, then lr_end, in closed form.
        FastTD3 steps torch's CosineAnnealingLR once per environment step; we count updates, and do not
        use CosineAnnealingLR, whose recursive form drifts from the closed form by roundoff."""
        def cosine(lr: float, lr_end: float | None) -> float:
            if lr_end is None or self.lr_schedule_updates == 0:
                return lr
            t = min(updates_done, self.lr_schedule_updates)
            return lr_end + (lr - lr_end) * (1 + math.cos(math.pi * t / self.lr_schedule_updates)) / 2

        return cosine(self.critic_lr, self.critic_lr_end), cosine(self.actor_lr, self.actor_lr_end)

    # The critic step's pieces where ports differ, each a method of its own (the parity command's mutant
    # catalogue overrides them one at a time to put a known bug in).
    def bootstrap_discount(self, batch: Batch) -> torch.Tensor:
        """(B,) what each sample's next-state support is discounted by: gamma^k for its window of k steps
        (the replay computes it; it is gamma only for one-step windows)."""
        return batch.discount

    def target_projection(self, next_obs: torch.Tensor, next_actions: torch.Tensor, rewards: torch.Tensor,
                          bootstrap: torch.Tensor, discount: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both target critics' distributions at (next_obs, next_actions), moved to rewards + bootstrap *
        discount * z and projected back onto the atoms (``DistributionalQNetwork.projection``)."""
        return self.qnet_target.projection(next_obs, next_actions, rewards, bootstrap, discount)

    def cdq_choice(self, value1: torch.Tensor, value2: torch.Tensor) -> torch.Tensor:
        """Clipped double Q, per sample: (B,) bool, True where critic 1's projection has the strictly lower
        expected value and is the target (ties take critic 2's)."""
        return value1 < value2

    def update_main(self, batch: Batch, target_noise: torch.Tensor, record: bool = False) -> dict[str, Any]:
        """One critic step on a batch whose observations are already normalised."""
        info: dict[str, Any] = {}
        with torch.no_grad():
            clip = self.noise_clip * self.action_scale
            clipped_noise = (target_noise * (self.policy_noise * self.action_scale)).clamp(-clip, clip)
            next_state_actions = (self.actor(batch.next_obs) + clipped_noise).clamp(self.low, self.high)

            qf1_next_target_projected, qf2_next_target_projected = self.target_projection(
                batch.next_obs, next_state_actions, batch.reward * self.reward_scale, batch.bootstrap,
                self.bootstrap_discount(batch))
            qf1_next_target_value = self.qnet_target.get_value(qf1_next_target_projected)
            qf2_next_target_value = self.qnet_target.get_value(qf2_next_target_projected)
            cdq_choice = self.cdq_choice(qf1_next_target_value, qf2_next_target_value)
            if self.use_cdq:
                qf_next_target_dist = torch.where(cdq_choice.unsqueeze(1), qf1_next_target_projected,
                                                  qf2_next_target_projected)
                qf1_next_target_dist = qf2_next_target_dist = qf_next_target_dist
            else:
                qf1_next_target_dist, qf2_next_target_dist = qf1_next_target_projected, qf2_next_target_projected

        qf1, qf2 = self.qnet(batch.obs, batch.action)
        qf1_loss = -torch.sum(qf1_next_target_dist * F.log_softmax(qf1, dim=1), dim=1).mean()
        qf2_loss = -torch.sum(qf2_next_target_dist * F.log_softmax(qf2, dim=1), dim=1).mean()
        qf_loss = (qf1_loss + qf2_loss) * self.critic_loss_scale

        self.q_optimizer.zero_grad(set_to_none=True)
        qf_loss.backward()
        if record:  # gradients before clipping
            info["critic_grads"] = grads_of(self.qnet)
        critic_grad_norm = clip_grad_norm(list(self.qnet.parameters()), self.max_grad_norm)
        self.q_optimizer.step()

        info["critic_loss"] = qf_loss.detach()
        info["q_mean"] = self.qnet.get_value(F.softmax(qf1.detach(), dim=1)).mean()
        if record:
            info.update(target_action=next_state_actions,
                        projected=torch.stack([qf1_next_target_projected, qf2_next_target_projected]),
                        cdq_choice=cdq_choice,
                        target_dist=torch.stack([qf1_next_target_dist, qf2_next_target_dist]),
                        critic_logits=torch.stack([qf1.detach(), qf2.detach()]),
                        critic_grad_norm=critic_grad_norm)
        return info

    def update_pol(self, batch: Batch, record: bool = False) -> dict[str, Any]:
        """One actor step on the critic as it is now (after this update's critic step)."""
        info: dict[str, Any] = {}
        qf1, qf2 = self.qnet(batch.obs, self.actor(batch.obs))
        qf1_value = self.qnet.get_value(F.softmax(qf1, dim=1))
        qf2_value = self.qnet.get_value(F.softmax(qf2, dim=1))
        if self.use_cdq:
            qf_value = torch.minimum(qf1_value, qf2_value)
        else:
            qf_value = (qf1_value + qf2_value) / 2.0
        actor_loss = -qf_value.mean()

        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        if record:  # gradients before clipping
            info["actor_grads"] = grads_of(self.actor)
        actor_grad_norm = clip_grad_norm(list(self.actor.parameters()), self.max_grad_norm)
        self.actor_optimizer.step()

        info["actor_loss"] = actor_loss.detach()
        if record:
            info.update(actor_q=qf_value.detach(), actor_grad_norm=actor_grad_norm)
        return info

    @staticmethod
    @torch.no_grad()
    def soft_update(src: nn.Module, tgt: nn.Module, tau: float) -> None:
        """Polyak: theta_tgt <- tau * theta_src + (1 - tau) * theta_tgt."""
        for param, target_param in zip(src.parameters(), tgt.parameters()):
            target_param.copy_(tau * param + (1 - tau) * target_param)

    def train(self, batch: Batch, target_noise: torch.Tensor, record: bool = False) -> dict[str, Any]:
        """One whole update: normalise the batch's observations (statistics unchanged), critic step,
        actor step on every policy_freq-th update, Polyak on the critic target. Returns critic_loss,
        actor_loss (0 when the actor did not move), actor_updated, q_mean (critic 1's mean expected value
        on the batch, before the step), critic_lr, actor_lr. With ``record`` also: target_action (B, A),
        projected (2, B, atoms: both target critics' projections), cdq_choice (B,) bool (True where
        critic 1's projection has the strictly lower value; computed with use_cdq off too, when each
        critic learns its own), target_dist (2, B, atoms: what each critic learns), critic_logits
        (2, B, atoms, before the step), critic_grads and, on actor updates, actor_grads (name -> tensor,
        before clipping), critic_grad_norm / actor_grad_norm (before clipping), actor_q (B,)."""
        self.step += 1
        critic_lr, actor_lr = self.learning_rates(self.step - 1)
        for group in self.q_optimizer.param_groups:
            group["lr"] = critic_lr
        for group in self.actor_optimizer.param_groups:
            group["lr"] = actor_lr
        batch = batch._replace(obs=self.normalize_obs(batch.obs), next_obs=self.normalize_obs(batch.next_obs))

        info = self.update_main(batch, target_noise, record)
        actor_updated = self.step % self.policy_freq == 0
        if actor_updated:
            info.update(self.update_pol(batch, record))
        else:
            info["actor_loss"] = torch.zeros((), device=self.device, dtype=self.dtype)
        self.soft_update(self.qnet, self.qnet_target, self.tau)
        info.update(actor_updated=actor_updated, critic_lr=critic_lr, actor_lr=actor_lr)
        return info
