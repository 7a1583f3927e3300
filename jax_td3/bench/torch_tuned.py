"""The TD3/OurDDPG update as a PyTorch expert would write it for speed.

Same mathematics as ``torch_ref`` (checked against it in float64 by
``tests/test_benchmarks.py``), different engineering:

- every network is one ``StackedMLP``: weights stacked on a leading axis, so the
  twin critic runs as one ``baddbmm`` per layer instead of two ``addmm`` calls;
- fused Adam (one kernel per optimizer step, all parameters at once);
- Polyak with ``torch._foreach_lerp_`` (one multi-tensor kernel for all targets);
- ``zero_grad(set_to_none=True)`` and a backward pass restricted to the actor's
  parameters on actor steps (no wasted critic weight gradients);
- the replay buffer is one tensor on the device and a batch is one ``index_select``.

``TunedAgent.update`` is the eager path; ``TunedAgent.compile`` routes it through
``torch.compile``d losses; ``CudaGraphUpdate`` captures whole updates in a CUDA
graph. Only the plain MLP critic (TD3, OurDDPG) is implemented: that is what the
benchmark times.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from jax_td3.config import TD3Config

Tensor = torch.Tensor
HostOrDevice = np.ndarray | torch.Tensor  # what ``TunedAgent.add`` takes


class StackedMLP(nn.Module):
    """``stack`` independent MLPs with ReLU between layers, evaluated with one ``baddbmm`` per layer.

    Weights are stored (stack, in, out) so no transpose is needed; the input (B, in)
    is shared by every member and the output is (stack, B, out).
    """

    def __init__(self, sizes: Sequence[int], stack: int, device: torch.device | str, dtype: torch.dtype) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(n_in)  # nn.Linear's default init
            self.weights.append(nn.Parameter(torch.empty(stack, n_in, n_out, device=device, dtype=dtype)
                                             .uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(stack, 1, n_out, device=device, dtype=dtype)
                                            .uniform_(-bound, bound)))

    def forward(self, x: Tensor, members: int | None = None) -> Tensor:
        """All members (or only the first ``members``) on the shared input ``x`` (B, in)."""
        layers = list(zip(self.weights, self.biases))
        n = members or layers[0][0].shape[0]
        h = x.expand(n, *x.shape)
        for i, (w, b) in enumerate(layers):
            h = torch.baddbmm(b[:n], h, w[:n])
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h


class TunedAgent:
    """The update of ``config`` (TD3 or OurDDPG) on ``device``; state lives in tensors, never on the host."""

    def __init__(self, config: TD3Config, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 replay_capacity: int = 0) -> None:
        if config.critic_arch != "mlp" or config.critic_loss != "mse" or config.critic_weight_decay:
            raise ValueError(f"the tuned PyTorch update implements the MLP critic with MSE loss (TD3, OurDDPG), "
                             f"not {config.algo}")
        variants = {"critic_loss_scale": 1.0, "target_update": "delayed", "actor_q": "q1"}
        changed = [name for name, value in variants.items() if getattr(config, name, value) != value]
        if changed:  # timed as Fujimoto's update only; the variants exist for cross-checking
            raise ValueError(f"the tuned PyTorch update implements Fujimoto's TD3 only, not `{changed[0]}` "
                             f"{getattr(config, changed[0])!r}")
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        factory: dict[str, Any] = dict(device=self.device, dtype=dtype)
        self.actor = StackedMLP([config.obs_dim, *config.actor_hidden, config.act_dim], 1, **factory)
        self.critic = StackedMLP([config.obs_dim + config.act_dim, *config.critic_hidden_sizes, 1],
                                 config.num_critics, **factory)
        self.actor_target = StackedMLP([config.obs_dim, *config.actor_hidden, config.act_dim], 1, **factory)
        self.critic_target = StackedMLP([config.obs_dim + config.act_dim, *config.critic_hidden_sizes, 1],
                                        config.num_critics, **factory)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for target in (self.actor_target, self.critic_target):
            target.requires_grad_(False)

        # capturable keeps Adam's step counter on the device (needed inside a CUDA graph).
        adam: dict[str, Any] = dict(betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps, fused=True,
                    capturable=self.device.type == "cuda")
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, **adam)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, **adam)
        self.online_params: list[Tensor] = [*self.actor.parameters(), *self.critic.parameters()]
        self.target_params: list[Tensor] = [*self.actor_target.parameters(), *self.critic_target.parameters()]

        self.action_scale = torch.tensor(config.action_scale, **factory)
        self.action_bias = torch.tensor(config.action_bias, **factory)
        self.low = torch.tensor(config.action_low, **factory)
        self.high = torch.tensor(config.action_high, **factory)
        self.step = 0

        # The replay buffer: one row per transition, [obs | action | next_obs | reward | not_done].
        self.widths = (config.obs_dim, config.act_dim, config.obs_dim, 1, 1)
        self.replay = torch.zeros(replay_capacity, sum(self.widths), **factory)
        self.replay_size = 0
        self.critic_loss: Callable[..., Tensor] = self._critic_loss
        self.actor_loss: Callable[[Tensor], Tensor] = self._actor_loss

    # -- replay ----------------------------------------------------------------------------
    def add(self, obs: HostOrDevice, action: HostOrDevice, next_obs: HostOrDevice, reward: HostOrDevice,
            not_done: HostOrDevice) -> None:
        """Append N transitions (each argument has a leading axis N; reward/not_done (N, 1)).

        No wrap-around: the benchmark fills the buffer once.
        """
        if self.replay_size + len(obs) > self.replay.shape[0]:
            raise ValueError(f"replay holds {self.replay.shape[0]} transitions; cannot add {len(obs)} more")
        rows = torch.cat([torch.as_tensor(x, device=self.device, dtype=self.dtype)
                          for x in (obs, action, next_obs, reward, not_done)], dim=1)
        n = rows.shape[0]
        self.replay[self.replay_size:self.replay_size + n] = rows
        self.replay_size += n

    def sample(self, generator: torch.Generator | None = None) -> tuple[tuple[Tensor, ...], Tensor]:
        """A uniform batch (with replacement) and standard normal target noise, drawn on the device."""
        index = torch.randint(0, self.replay_size, (self.config.batch_size,), device=self.device,
                              generator=generator)
        batch = torch.index_select(self.replay, 0, index).split(self.widths, dim=1)
        noise = torch.randn(self.config.batch_size, self.config.act_dim, device=self.device, dtype=self.dtype,
                            generator=generator)
        return batch, noise

    # -- the update ------------------------------------------------------------------------
    def act(self, obs: Tensor, network: StackedMLP | None = None) -> Tensor:
        net = network or self.actor
        return self.action_scale * torch.tanh(net(obs)[0]) + self.action_bias

    def _critic_loss(self, obs: Tensor, action: Tensor, next_obs: Tensor, reward: Tensor, not_done: Tensor,
                     noise: Tensor) -> Tensor:
        """TD target (no gradient) and the summed MSE of all critics."""
        config = self.config
        with torch.no_grad():
            next_action = self.act(next_obs, self.actor_target)
            if config.target_policy_smoothing:
                clip = config.noise_clip * self.action_scale
                noise = (noise * (config.policy_noise * self.action_scale)).clamp(-clip, clip)
                next_action = (next_action + noise).clamp(self.low, self.high)
            target_q = self.critic_target(torch.cat([next_obs, next_action], 1)).min(dim=0).values
            target_q = reward * config.reward_scale + not_done * config.gamma * target_q
        current_q = self.critic(torch.cat([obs, action], 1))
        return (current_q - target_q).square().mean(dim=(1, 2)).sum()

    def _actor_loss(self, obs: Tensor) -> Tensor:
        """-mean Q1(s, mu(s)) with the critic just updated."""
        return -self.critic(torch.cat([obs, self.act(obs)], 1), members=1).mean()

    def critic_step(self, obs: Tensor, action: Tensor, next_obs: Tensor, reward: Tensor, not_done: Tensor,
                    noise: Tensor) -> Tensor:
        """One fused Adam step on all critics; returns the (detached) loss."""
        critic_loss = self.critic_loss(obs, action, next_obs, reward, not_done, noise)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        return critic_loss.detach()

    def actor_step(self, obs: Tensor) -> Tensor:
        """One fused Adam step on the actor (backward restricted to its parameters), then Polyak."""
        actor_loss = self.actor_loss(obs)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor_optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.online_params, self.config.tau)
        return actor_loss.detach()

    def update(self, batch: Sequence[Tensor], noise: Tensor) -> None:
        """One update on ``batch`` = (obs, action, next_obs, reward, not_done) with N(0, 1) target noise."""
        self.step += 1
        obs, action, next_obs, reward, not_done = batch
        self.critic_step(obs, action, next_obs, reward, not_done, noise)
        if self.step % self.config.policy_freq == 0:
            self.actor_step(obs)

    def compile(self, **options: Any) -> None:
        """``torch.compile`` both losses (forward and backward become compiled graphs).

        The fused Adam and the foreach Polyak are already one kernel each; dynamo does
        not trace into fused optimizers anyway.
        """
        self.critic_loss = torch.compile(self._critic_loss, **options)
        self.actor_loss = torch.compile(self._actor_loss, **options)

    # -- interop with the reference --------------------------------------------------------
    def load_reference(self, agent: Any) -> None:
        """Copy online and target weights from a fresh ``torch_ref`` agent (Adam states start at zero),
        read through its neutral state (``jax_td3.adapters``), so no torch_ref layout is assumed here."""
        from jax_td3.adapters.torch_ref import agent_state

        state = agent_state(agent)
        for mine, network in ((self.actor, "actor"), (self.actor_target, "actor_target"),
                              (self.critic, "critic"), (self.critic_target, "critic_target")):
            _load_layers(mine, state, network)
        self.step = state["step"]


def _load_layers(stacked: StackedMLP, state: dict, network: str) -> None:
    """Fill ``stacked`` from the neutral state's ``network`` family: layers ``l1``, ``l2`` ... in
    order, split into as many equal members as the stack has (TD3's Q1 then Q2)."""
    layers = sorted({name.split(".")[1] for name in state if name.startswith(network + ".")},
                    key=lambda layer: int(layer[1:]))
    depth = len(stacked.weights)
    members = [layers[i:i + depth] for i in range(0, len(layers), depth)]
    with torch.no_grad():
        for depth_index, (w, b) in enumerate(zip(stacked.weights, stacked.biases)):
            weights = [state[f"{network}.{member[depth_index]}.weight"].T for member in members]
            biases = [state[f"{network}.{member[depth_index]}.bias"][None] for member in members]
            w.copy_(torch.as_tensor(np.stack(weights), dtype=w.dtype, device=w.device))
            b.copy_(torch.as_tensor(np.stack(biases), dtype=b.dtype, device=b.device))


class CudaGraphUpdate:
    """``policy_freq`` tuned updates (sampling included) captured once in a CUDA graph and replayed.

    One replay = one full delayed-update cycle, so the actor branch is static inside
    the graph. Needs CUDA; Adam runs with ``capturable=True`` (set by ``TunedAgent``).
    """

    def __init__(self, agent: TunedAgent) -> None:
        if agent.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        self.agent = agent
        self.updates_per_replay = agent.config.policy_freq
        self.generator = torch.Generator(device=agent.device)
        self.generator.manual_seed(0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (allocates grads and optimizer state) outside the graph
            for _ in range(3):
                self._cycle()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.generator)
        with torch.cuda.graph(self.graph):
            self._cycle()

    def _cycle(self) -> None:
        agent = self.agent
        for i in range(1, agent.config.policy_freq + 1):
            (obs, action, next_obs, reward, not_done), noise = agent.sample(self.generator)
            agent.critic_step(obs, action, next_obs, reward, not_done, noise)
            if i == agent.config.policy_freq:
                agent.actor_step(obs)

    def replay(self) -> None:
        self.graph.replay()
        self.agent.step += self.updates_per_replay
