"""FastTD3's update as a PyTorch expert would write it for speed (the benchmark's PyTorch side).

Same mathematics as ``jax_td3.fasttd3.update.update`` (docs/algorithms.md; checked against it in
float64 by ``tests/test_benchmarks.py``), engineered like ``torch_tuned``:

- each network is one ``StackedNet``: weights stacked (stack, in, out), so the twin C51 critic runs
  as one ``baddbmm`` per layer (on this project's 2-core CPU a ``torch.func.vmap`` over two
  ``nn.Sequential`` critics was no faster at batch 4,096, and needs more code);
- the categorical projection of both target critics is one ``scatter_add_`` over the atoms (lower
  and upper neighbours concatenated), no Python loop;
- fused AdamW (one kernel per optimiser step), global-norm clipping with foreach kernels and no
  host sync, Polyak with ``torch._foreach_lerp_``;
- a backward pass restricted to the actor's parameters on actor steps;
- the replay is one device tensor and a batch is one ``index_select``.

``FastAgent.update`` is the eager path; ``FastAgent.compile`` routes both losses through
``torch.compile`` (``mode="reduce-overhead"`` captures them in CUDA graphs on a GPU). The agent
returns no metrics: the benchmark times the update alone.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jax_td3.config import FastTD3Config

Tensor = torch.Tensor
NORMALIZER_EPS = 1e-2      # FastTD3's EmpiricalNormalization
LAYER_NORM_EPS = 1e-5      # torch nn.LayerNorm's


class StackedNet(nn.Module):
    """``stack`` independent MLPs on one shared input: ReLU between layers, optionally LayerNorm
    (learnable scale and bias) before each ReLU. Weights are (stack, in, out); output (stack, B, out)."""

    def __init__(self, sizes: Sequence[int], stack: int, device: torch.device, dtype: torch.dtype,
                 layer_norm: bool = False) -> None:
        super().__init__()
        factory: dict[str, Any] = dict(device=device, dtype=dtype)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_scales = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(n_in)  # nn.Linear's default init
            self.weights.append(nn.Parameter(torch.empty(stack, n_in, n_out, **factory).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(stack, 1, n_out, **factory).uniform_(-bound, bound)))
            if layer_norm and i < len(sizes) - 2:
                self.norm_scales.append(nn.Parameter(torch.ones(stack, 1, n_out, **factory)))
                self.norm_biases.append(nn.Parameter(torch.zeros(stack, 1, n_out, **factory)))

    def forward(self, x: Tensor) -> Tensor:
        stack = self.weights[0].shape[0]
        last = len(self.weights) - 1
        h = x.expand(stack, *x.shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                if len(self.norm_scales):
                    h = F.layer_norm(h, h.shape[-1:], eps=LAYER_NORM_EPS) * self.norm_scales[i] + self.norm_biases[i]
                h = torch.relu(h)
        return h


def cosine_lr(lr: float, lr_end: float | None, updates_before: int, schedule_updates: int) -> float:
    """The learning rate of the update that follows ``updates_before`` updates (docs/algorithms.md)."""
    if lr_end is None or schedule_updates == 0:
        return lr
    t = min(updates_before, schedule_updates)
    return lr_end + (lr - lr_end) * (1.0 + math.cos(math.pi * t / schedule_updates)) / 2.0


def project(probs: Tensor, reward: Tensor, bootstrap: Tensor, discount: Tensor, support: Tensor,
            v_min: float, v_max: float) -> Tensor:
    """C51 projection of the distributions ``probs`` (S, B, N) over ``support`` shifted to
    reward + bootstrap * discount * z (each (B,)), back onto the support: (S, B, N).

    A target that lands exactly on atom k moves all its mass to k (FastTD3's rule: its lower
    neighbour becomes k - 1, or its upper one 1 when k = 0). One ``scatter_add_`` does every member,
    sample and atom."""
    atoms = support.shape[0]
    delta_z = (v_max - v_min) / (atoms - 1)
    target_z = (reward[:, None] + (bootstrap * discount)[:, None] * support).clamp(v_min, v_max)
    b = (target_z - v_min) / delta_z
    lower, upper = b.floor(), b.ceil()
    on_atom = lower == upper
    lower, upper = (torch.where(on_atom & (lower > 0), lower - 1, lower),
                    torch.where(on_atom & (lower == 0), upper + 1, upper))
    index = torch.cat([lower, upper], dim=-1).long().expand(probs.shape[0], -1, -1)
    mass = torch.cat([probs * (upper - b), probs * (b - lower)], dim=-1)
    return torch.zeros_like(probs).scatter_add_(-1, index, mass)


class FastAgent:
    """FastTD3's update of ``config`` on ``device``; state lives in tensors, never on the host."""

    def __init__(self, config: FastTD3Config, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 replay_capacity: int = 0) -> None:
        if config.algo != "fasttd3":
            raise ValueError(f"the fast PyTorch FastTD3 update implements fasttd3, not {config.algo}")
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        factory: dict[str, Any] = dict(device=self.device, dtype=dtype)
        self.actor = StackedNet([config.obs_dim, *config.actor_hidden, config.act_dim], 1, self.device, dtype)
        with torch.no_grad():  # FastTD3's actor head: weights N(0, init_scale^2), bias 0
            self.actor.weights[-1].normal_(0.0, config.init_scale)
            self.actor.biases[-1].zero_()
        critic_sizes = [config.obs_dim + config.act_dim, *config.critic_hidden_sizes, config.num_atoms]
        self.critic = StackedNet(critic_sizes, 2, self.device, dtype, config.critic_layer_norm)
        self.critic_target = StackedNet(critic_sizes, 2, self.device, dtype, config.critic_layer_norm)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.actor_params: list[Tensor] = list(self.actor.parameters())
        self.critic_params: list[Tensor] = list(self.critic.parameters())
        self.target_params: list[Tensor] = list(self.critic_target.parameters())

        adamw: dict[str, Any] = dict(betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps,
                                     weight_decay=config.weight_decay, capturable=self.device.type == "cuda")
        adamw.update(_fastest_adamw(self.device, dtype))
        self.actor_optimizer = torch.optim.AdamW(self.actor_params, lr=config.actor_lr, **adamw)
        self.critic_optimizer = torch.optim.AdamW(self.critic_params, lr=config.critic_lr, **adamw)

        self.support = torch.linspace(config.v_min, config.v_max, config.num_atoms, **factory)
        self.action_scale = torch.tensor(config.action_scale, **factory)
        self.action_bias = torch.tensor(config.action_bias, **factory)
        self.low = torch.tensor(config.action_low, **factory)
        self.high = torch.tensor(config.action_high, **factory)
        self.obs_mean = torch.zeros(config.obs_dim, **factory)
        self.obs_var = torch.ones(config.obs_dim, **factory)
        self.step = 0

        # The replay: one row per transition, [obs | action | next_obs | reward | bootstrap | discount].
        self.widths = (config.obs_dim, config.act_dim, config.obs_dim, 1, 1, 1)
        self.replay = torch.zeros(replay_capacity, sum(self.widths), **factory)
        self.replay_size = 0
        self.critic_loss: Callable[..., Tensor] = self._critic_loss
        self.actor_loss: Callable[[Tensor], Tensor] = self._actor_loss

    # -- replay ----------------------------------------------------------------------------
    def add(self, *fields: np.ndarray | Tensor) -> None:
        """Append N transitions: obs, action, next_obs (N, width) and reward, bootstrap, discount (N,) or (N, 1).

        No wrap-around: the benchmark fills the buffer once."""
        n = len(fields[0])
        if self.replay_size + n > self.replay.shape[0]:
            raise ValueError(f"replay holds {self.replay.shape[0]} transitions; cannot add {n} more")
        rows = torch.cat([torch.as_tensor(x, device=self.device, dtype=self.dtype).reshape(n, -1)
                          for x in fields], dim=1)
        self.replay[self.replay_size:self.replay_size + n] = rows
        self.replay_size += n

    def sample(self, generator: torch.Generator | None = None) -> tuple[tuple[Tensor, ...], Tensor]:
        """A uniform batch (with replacement; reward, bootstrap, discount (B,)) and N(0, 1) target noise."""
        batch_size = self.config.batch_size
        index = torch.randint(0, self.replay_size, (batch_size,), device=self.device, generator=generator)
        obs, action, next_obs, reward, bootstrap, discount = torch.index_select(self.replay, 0, index).split(
            self.widths, dim=1)
        noise = torch.randn(batch_size, self.config.act_dim, device=self.device, dtype=self.dtype,
                            generator=generator)
        return (obs, action, next_obs, reward[:, 0], bootstrap[:, 0], discount[:, 0]), noise

    # -- the update ------------------------------------------------------------------------
    def normalize(self, obs: Tensor) -> Tensor:
        if not self.config.obs_normalization:
            return obs
        return (obs - self.obs_mean) / (self.obs_var.sqrt() + NORMALIZER_EPS)

    def act(self, obs: Tensor) -> Tensor:
        """The online actor on normalised observations."""
        return self.action_scale * torch.tanh(self.actor(obs)[0]) + self.action_bias

    def _critic_loss(self, obs: Tensor, action: Tensor, next_obs: Tensor, reward: Tensor, bootstrap: Tensor,
                     discount: Tensor, noise: Tensor) -> Tensor:
        """Projected C51 target (no gradient; clipped double Q per sample) and the summed cross-entropy
        of both critics; observations already normalised."""
        config = self.config
        with torch.no_grad():
            clip = config.noise_clip * self.action_scale
            smoothing = (noise * (config.policy_noise * self.action_scale)).clamp(-clip, clip)
            next_action = (self.act(next_obs) + smoothing).clamp(self.low, self.high)
            probs = torch.softmax(self.critic_target(torch.cat([next_obs, next_action], 1)), dim=-1)
            target = project(probs, reward * config.reward_scale, bootstrap, discount, self.support,
                             config.v_min, config.v_max)
            if config.use_cdq:
                values = target @ self.support                          # (2, B)
                target = torch.where((values[0] < values[1])[:, None], target[0], target[1])
        log_probs = torch.log_softmax(self.critic(torch.cat([obs, action], 1)), dim=-1)
        return -(target * log_probs).sum(-1).mean(-1).sum() * config.critic_loss_scale

    def _actor_loss(self, obs: Tensor) -> Tensor:
        """-mean of min (clipped double Q) or mean of the critics' expected values at mu(s)."""
        values = torch.softmax(self.critic(torch.cat([obs, self.act(obs)], 1)), dim=-1) @ self.support
        q = values.min(dim=0).values if self.config.use_cdq else values.mean(dim=0)
        return -q.mean()

    def _clip(self, params: list[Tensor]) -> None:
        """Scale the gradients to global norm ``max_grad_norm`` when above it (optax's rule), on the device."""
        max_norm = self.config.max_grad_norm
        if max_norm <= 0:
            return
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm))

    def critic_step(self, obs: Tensor, action: Tensor, next_obs: Tensor, reward: Tensor, bootstrap: Tensor,
                    discount: Tensor, noise: Tensor, lr: float) -> None:
        loss = self.critic_loss(obs, action, next_obs, reward, bootstrap, discount, noise)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(self.critic_params)
        self.critic_optimizer.param_groups[0]["lr"] = lr
        self.critic_optimizer.step()

    def actor_step(self, obs: Tensor, lr: float) -> None:
        loss = self.actor_loss(obs)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.actor_params)
        self._clip(self.actor_params)
        self.actor_optimizer.param_groups[0]["lr"] = lr
        self.actor_optimizer.step()

    def update(self, batch: Sequence[Tensor], noise: Tensor) -> None:
        """One update on ``batch`` = (obs, action, next_obs, reward, bootstrap, discount) (raw observations;
        reward, bootstrap, discount (B,)) with N(0, 1) target noise ``noise`` (B, act_dim)."""
        config = self.config
        obs, action, next_obs, reward, bootstrap, discount = batch
        obs, next_obs = self.normalize(obs), self.normalize(next_obs)
        updates_before = self.step
        self.step += 1
        schedule = lambda lr, lr_end: cosine_lr(lr, lr_end, updates_before, config.lr_schedule_updates)
        self.critic_step(obs, action, next_obs, reward, bootstrap, discount, noise,
                         schedule(config.critic_lr, config.critic_lr_end))
        if self.step % config.policy_freq == 0:
            self.actor_step(obs, schedule(config.actor_lr, config.actor_lr_end))
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, config.tau)

    def compile(self, **options: Any) -> None:
        """``torch.compile`` both losses (forward and backward become compiled graphs); the fused AdamW
        and foreach Polyak are one kernel each already."""
        self.critic_loss = torch.compile(self._critic_loss, **options)
        self.actor_loss = torch.compile(self._actor_loss, **options)

    # -- interop with the JAX update ---------------------------------------------------------
    def load_jax_state(self, state: Any) -> None:
        """Copy the weights, critic targets, normaliser statistics and step of a fresh JAX FastTD3 train
        state (AdamW moments start at zero here). Flax Dense kernels are (in, out) like these weights,
        critics carry the same leading axis; layers are taken in the order of their names' numbers."""
        for mine, params in ((self.actor, state.actor_params), (self.critic, state.critic_params),
                             (self.critic_target, state.critic_target_params)):
            dense = _leaf_modules(params, "kernel")
            norms = _leaf_modules(params, "scale")
            pairs = [(mine.weights, [d["kernel"] for d in dense]), (mine.biases, [d["bias"] for d in dense]),
                     (mine.norm_scales, [n["scale"] for n in norms]), (mine.norm_biases, [n["bias"] for n in norms])]
            with torch.no_grad():
                for tensors, values in pairs:
                    if len(tensors) != len(values):
                        raise ValueError(f"the JAX parameters have {len(values)} layers where this network has "
                                         f"{len(tensors)}")
                    for tensor, value in zip(tensors, values):  # biases (stack, out) -> (stack, 1, out)
                        tensor.copy_(torch.as_tensor(np.array(value).reshape(tensor.shape), dtype=self.dtype))
        normalizer = state.obs_normalizer
        self.obs_mean.copy_(torch.as_tensor(np.array(normalizer.mean), dtype=self.dtype))
        self.obs_var.copy_(torch.as_tensor(np.array(normalizer.var), dtype=self.dtype))
        self.step = int(state.step)


def _fastest_adamw(device: torch.device, dtype: torch.dtype) -> dict[str, bool]:
    """fused=True where this PyTorch has a fused AdamW kernel for the device and dtype, else foreach."""
    probe = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))
    probe.grad = torch.zeros_like(probe)
    try:
        torch.optim.AdamW([probe], fused=True).step()
    except (RuntimeError, ValueError):
        return {"foreach": True}
    return {"fused": True}


def _leaf_modules(tree: Any, key: str) -> list[dict]:
    """Every dict of ``tree`` holding ``key`` (Dense: "kernel", LayerNorm: "scale"), ordered by the
    numbers in their names (``l2`` before ``l10``)."""
    found: list[tuple[list[Any], dict]] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict) or hasattr(node, "items"):
            if key in node:
                numbers = [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path)]
                found.append((numbers, dict(node)))
                return
            for name, child in node.items():
                visit(child, f"{path}/{name}")
    visit(tree, "")
    return [module for _, module in sorted(found, key=lambda item: item[0])]
