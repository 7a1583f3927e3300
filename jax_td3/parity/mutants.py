"""A catalogue of deliberately wrong TD3 (and FastTD3) updates: the bugs real ports had, for the cross-checker to find.

Nothing in training, evaluation or the update imports this module; only the parity command
(``jax-td3 parity --mutant NAME``) and the tests do. Each entry is the PyTorch reference with one
bug put in: ``HookedTD3`` is ``torch_ref.TD3.train`` split at the points where the bugs live (with
no hook changed it computes exactly what ``torch_ref.TD3`` computes, bit for bit), and each mutant
overrides one hook. The reference side is where every bug can be written cleanly (Adam's formula
included), so the comparison is always "our JAX update against a reference with one bug"; for a
bug that lived in a JAX port (skrl's, TF32) the report reads the same with the sides swapped.

FastTD3's entries (``algo="fasttd3"``, compared with ``--algo fasttd3``) put their bug into
``HookedFastTD3``: ``torch_ref.FastTD3``'s critic step already has a method for each piece they change
(the bootstrap discount, the projection onto the atoms, the clipped-double-Q choice), and each overrides
one (no copy of the update: with none overridden it is the reference itself).

One entry, ``truncation-as-done``, is a bug of the training loop rather than of the update: it
acts only in a whole run (``jax-td3 parity --run --mutant truncation-as-done``).

Each ``Mutant`` says where its bug first acts (``expect``): the quantity the update-level report
must name first and the update at which it does, for the catalogue's settings (``config_changes``,
applied on top of the user's config: a bug that needs a setting to act at all, e.g. different
actor and critic learning rates for "swapped learning rates"). Where that update depends on the
data (the first batch holding a terminal transition), ``expect`` replays the comparison's shared
draws to find it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torch_ref
from torch_ref import fasttd3
from torch_ref.networks import soft_update
from torch_ref.td3 import grads_of

if TYPE_CHECKING:
    from jax_td3.config import TD3Config
    from jax_td3.parity.compare import ParityReport

# -- the reference update with hook points -------------------------------------------------------


class HookedTD3(torch_ref.TD3):
    """``torch_ref.TD3`` whose ``train`` calls a method at each point one of the catalogue's bugs changes.

    Every hook's default is the reference's own arithmetic, in the reference's order.
    """

    def prepare(self) -> None:
        """Called once the networks exist (e.g. to change their layers)."""

    def clipped_noise(self, noise: Tensor) -> Tensor:
        clip = self.noise_clip * self.action_scale
        return (noise * (self.policy_noise * self.action_scale)).clamp(-clip, clip)

    def target_action(self, actor: nn.Module, next_obs: Tensor, noise: Tensor) -> Tensor:
        return (actor(next_obs) + noise).clamp(self.low, self.high)

    def target_networks(self) -> tuple[nn.Module, nn.Module]:
        return self.actor_target, self.critic_target

    def twin_target(self, q1: Tensor, q2: Tensor) -> Tensor:
        return torch.min(q1, q2)

    def td_target(self, reward: Tensor, not_done: Tensor, target_q: Tensor) -> Tensor:
        return reward * self.reward_scale + not_done * self.gamma * target_q

    def critic_gradients_ready(self) -> None:
        """After the critic loss's backward, before the gradients are recorded and applied."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def actor_due(self) -> bool:
        return self.step % self.policy_freq == 0

    def polyak(self) -> None:
        soft_update(self.critic, self.critic_target, self.tau)
        soft_update(self.actor, self.actor_target, self.tau)

    def targets_every_update(self) -> bool:
        return self.target_update == "every_update"

    def actor_q_value(self, obs: Tensor) -> Tensor:
        if self.actor_q == "min":
            return torch.min(*self.critic(obs, self.actor(obs)))
        return self.critic.Q1(obs, self.actor(obs))

    def train(self, batch: torch_ref.Batch, noise: Tensor | None = None, record: bool = False) -> dict[str, Any]:
        self.step += 1
        obs, action, next_obs, reward, not_done = batch
        info: dict[str, Any] = {}
        actor_net, critic_net = self.target_networks()
        with torch.no_grad():
            if noise is None:
                noise = torch.randn_like(action)
            next_action = self.target_action(actor_net, next_obs, self.clipped_noise(noise))
            target_Q = self.twin_target(*critic_net(next_obs, next_action))
            target_Q = self.td_target(reward, not_done, target_Q)

        current_Q1, current_Q2 = self.critic(obs, action)
        critic_loss = self.critic_loss_scale * (F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q))
        actor_due = self.actor_due()
        self.critic_optimizer.zero_grad()
        self.critic_backward(critic_loss, obs, actor_due)
        self.critic_gradients_ready()
        info["critic_loss"] = critic_loss.detach()
        if record:
            info.update(target_action=next_action, target_q=target_Q,
                        current_q=torch.stack([current_Q1.detach(), current_Q2.detach()]),
                        critic_grads=grads_of(self.critic))
        self.optimizer_step(self.critic_optimizer)

        if self.targets_every_update():
            self.polyak()

        if actor_due:
            actor_Q = self.actor_q_value(obs)
            actor_loss = -actor_Q.mean()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            info["actor_loss"] = actor_loss.detach()
            if record:
                info.update(actor_q=actor_Q.detach(), actor_grads=grads_of(self.actor))
            self.optimizer_step(self.actor_optimizer)
            if self.target_update == "delayed":
                self.polyak()
        return info

    def critic_backward(self, critic_loss: Tensor, obs: Tensor, actor_due: bool) -> None:
        critic_loss.backward()


# -- the bugs ----------------------------------------------------------------------------------


class SharedCriticGradient(HookedTD3):
    def critic_gradients_ready(self) -> None:
        # Q1's gradient applied to Q2's parameters too (Q2's own is lost).
        critic = self.critic
        for q1_name, q2_name in zip(critic.q1_names, critic.q2_names):
            q1, q2 = getattr(critic, q1_name), getattr(critic, q2_name)
            q2.weight.grad = q1.weight.grad.clone()
            q2.bias.grad = q1.bias.grad.clone()


class ActorGradientIntoCritic(HookedTD3):
    def critic_backward(self, critic_loss: Tensor, obs: Tensor, actor_due: bool) -> None:
        # On actor updates the actor's loss, Q1(s, mu(s)) not detached from the critic, is back-propagated
        # with the critic's: the critic steps on the gradient of both.
        if actor_due:
            (critic_loss - self.critic.Q1(obs, self.actor(obs).detach()).mean()).backward()
        else:
            critic_loss.backward()


class TargetFromOnline(HookedTD3):
    def target_networks(self) -> tuple[nn.Module, nn.Module]:
        return self.actor, self.critic


class TargetNoiseUnclipped(HookedTD3):
    def clipped_noise(self, noise: Tensor) -> Tensor:
        return noise * (self.policy_noise * self.action_scale)


class TargetActionUnclipped(HookedTD3):
    def target_action(self, actor: nn.Module, next_obs: Tensor, noise: Tensor) -> Tensor:
        return actor(next_obs) + noise


class PolyakSwapped(HookedTD3):
    def polyak(self) -> None:
        soft_update(self.critic, self.critic_target, 1 - self.tau)
        soft_update(self.actor, self.actor_target, 1 - self.tau)


class TargetsEveryUpdate(HookedTD3):
    _targets_moved = 0   # the update at which the targets last moved (0: not yet); a class default, as the
    #                      agent is a torch_ref.TD3 whose class is swapped after construction

    def targets_every_update(self) -> bool:
        return True

    def polyak(self) -> None:
        if not self._targets_moved or self.step != self._targets_moved:
            self._targets_moved = self.step      # once per update, not again after the actor step
            super().polyak()


class ActorEveryUpdate(HookedTD3):
    def actor_due(self) -> bool:
        return True


class CounterFromZero(HookedTD3):
    def actor_due(self) -> bool:
        return (self.step - 1) % self.policy_freq == 0    # the iteration counted before it is incremented


class DoneMaskIgnored(HookedTD3):
    def td_target(self, reward: Tensor, not_done: Tensor, target_q: Tensor) -> Tensor:
        return reward * self.reward_scale + self.gamma * target_q


class MaxTwinTarget(HookedTD3):
    def twin_target(self, q1: Tensor, q2: Tensor) -> Tensor:
        return torch.max(q1, q2)


class AbsoluteTargetNoise(HookedTD3):
    def clipped_noise(self, noise: Tensor) -> Tensor:
        return (noise * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)


def adam_step(optimizer: torch.optim.Optimizer, eps_inside_sqrt: bool = False, bias_correction: bool = True) -> None:
    """One Adam step written out, on ``torch.optim.Adam``'s own state (so the neutral state reads it as
    usual), with one of two departures from PyTorch's formula."""
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype())
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            grad = p.grad + weight_decay * p.detach() if weight_decay else p.grad
            state["step"] += 1
            t = float(state["step"])
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            m_hat, v_hat = (m / (1 - beta1 ** t), v / (1 - beta2 ** t)) if bias_correction else (m, v)
            denominator = (v_hat + eps).sqrt() if eps_inside_sqrt else v_hat.sqrt() + eps
            with torch.no_grad():
                p.sub_(lr * m_hat / denominator)


class AdamEpsInsideSqrt(HookedTD3):
    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        adam_step(optimizer, eps_inside_sqrt=True)


class AdamNoBiasCorrection(HookedTD3):
    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        adam_step(optimizer, bias_correction=False)


class LearningRatesSwapped(HookedTD3):
    def prepare(self) -> None:
        actor_lr = self.actor_optimizer.param_groups[0]["lr"]
        critic_lr = self.critic_optimizer.param_groups[0]["lr"]
        self.actor_optimizer.param_groups[0]["lr"] = critic_lr
        self.critic_optimizer.param_groups[0]["lr"] = actor_lr


class AdamDefaultLearningRate(HookedTD3):
    def prepare(self) -> None:
        for optimizer in (self.actor_optimizer, self.critic_optimizer):
            optimizer.param_groups[0]["lr"] = 1e-3    # torch.optim.Adam's default


def round_mantissa(x: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """``x`` rounded (to nearest, ties to even) to ``bits`` explicit mantissa bits, as TF32 holds a
    matmul input; the gradient passes through unchanged (straight through)."""
    mantissa, exponent = torch.frexp(x.detach())          # x = mantissa * 2**exponent, |mantissa| in [0.5, 1)
    rounded = torch.ldexp(torch.round(torch.ldexp(mantissa, torch.tensor(bits + 1))), exponent - (bits + 1))
    return x + (rounded - x.detach())


class ReducedPrecisionMatmul(HookedTD3):
    def prepare(self) -> None:
        for network in (self.actor, self.critic, self.actor_target, self.critic_target):
            for layer in network.modules():
                if isinstance(layer, torch.nn.Linear):
                    # This layer object's forward only (torch.nn.Linear itself is left as it is).
                    layer.forward = _rounded_linear(layer)  # type: ignore[method-assign, assignment]


def _rounded_linear(layer: nn.Linear) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        return F.linear(round_mantissa(x), round_mantissa(layer.weight), layer.bias)
    return forward


# -- FastTD3's reference with hook points ----------------------------------------------------------


class HookedFastTD3(torch_ref.FastTD3):
    """``torch_ref.FastTD3`` as the catalogue's FastTD3 bugs change it: the reference's critic step already
    calls a method at each point they change (``bootstrap_discount``, ``target_projection``,
    ``cdq_choice``), so each bug overrides one of those; this class adds only ``prepare``."""

    def prepare(self) -> None:
        """Called once the networks exist."""


# -- FastTD3's bugs ------------------------------------------------------------------------------


class OneStepDiscount(HookedFastTD3):
    def bootstrap_discount(self, batch: fasttd3.Batch) -> Tensor:
        # The config's gamma for every window, whatever its length k (gamma^k is what an n-step return needs).
        return torch.full_like(batch.discount, self.gamma)


def projection_without_on_atom_rule(qnet: fasttd3.DistributionalQNetwork, obs: Tensor, actions: Tensor,
                                    rewards: Tensor, bootstrap: Tensor, discount: Tensor,
                                    q_support: Tensor) -> Tensor:
    """``DistributionalQNetwork.projection`` without its rule for a target exactly on an atom: there
    lower == upper, both shares (upper - b and b - lower) are 0, and that sample's mass there is lost."""
    b = fasttd3.support_positions(rewards, bootstrap, discount, q_support, qnet.v_min, qnet.v_max)
    next_dist = F.softmax(qnet(obs, actions), dim=1)
    return fasttd3.split_onto_atoms(next_dist, b, torch.floor(b).long(), torch.ceil(b).long())


class ProjectionOnAtomLost(HookedFastTD3):
    def target_projection(self, next_obs: Tensor, next_actions: Tensor, rewards: Tensor, bootstrap: Tensor,
                          discount: Tensor) -> tuple[Tensor, Tensor]:
        target = self.qnet_target
        args = (next_obs, next_actions, rewards, bootstrap, discount, target.q_support)
        return (projection_without_on_atom_rule(target.qnet1, *args),
                projection_without_on_atom_rule(target.qnet2, *args))


class SoftmaxOverBatch(HookedFastTD3):
    def target_projection(self, next_obs: Tensor, next_actions: Tensor, rewards: Tensor, bootstrap: Tensor,
                          discount: Tensor) -> tuple[Tensor, Tensor]:
        # Each target critic's softmax taken over the batch (dim 0) instead of over the atoms (dim 1): every
        # atom's probabilities sum to 1 over the samples, no sample's over its atoms.
        target = self.qnet_target

        def project(qnet: fasttd3.DistributionalQNetwork) -> Tensor:
            next_dist = F.softmax(qnet(next_obs, next_actions), dim=0)
            return fasttd3.categorical_projection(next_dist, rewards, bootstrap, discount, target.q_support,
                                                  qnet.v_min, qnet.v_max)

        return project(target.qnet1), project(target.qnet2)


class CdqPerBatch(HookedFastTD3):
    def cdq_choice(self, value1: Tensor, value2: Tensor) -> Tensor:
        # One critic for the whole batch: the one whose mean expected value over the batch is lower.
        return (value1.mean() < value2.mean()).expand(value1.shape)


# -- the catalogue -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One bug: its name, where it comes from, what it does, and where the checker must find it."""

    name: str
    origin: str                     # the issue or write-up it reproduces, or the textbook mistake it is
    description: str
    agent_class: type | None        # the reference with the bug (None: a loop bug, see ``loop_changes``)
    quantity: str                   # what the report names first
    update: int | Callable | None   # at which update (a callable: (config, seed, dtype) -> update; None: a loop bug)
    config_changes: tuple = ()      # (field, value) pairs the bug needs to act
    float32: bool | str = True      # found in float32 too: True (the same quantity), False (too small for
                                    # float32's tolerances), or the quantity float32's report names instead
    level: str = "update"           # "update": found by the update-level mode; "run": only in a whole run
    loop_changes: tuple = ()        # (settings field, value) pairs of the second run (loop bugs)
    step: int | None = None         # loop bugs: the environment step the whole-run report names (Pendulum)
    algo: str = "td3"               # the algorithm whose reference carries the bug (td3 or fasttd3)

    def config(self, config: TD3Config) -> TD3Config:
        """``config`` with the settings the bug needs (a callable value is a function of ``config``)."""
        changes = {field: value(config) if callable(value) else value for field, value in self.config_changes}
        return dataclasses.replace(config, **changes).validate() if changes else config

    def expect(self, config: TD3Config, seed: int = 0, dtype: str = "float64") -> tuple[str, int] | None:
        """(quantity, update) the update-level report must name first, for ``self.config(config)``; None
        where the bug is too small for ``dtype``'s tolerances."""
        if self.update is None:
            raise ValueError(f"{self.name} is a bug of the training loop: only a whole run (--run) shows it")
        update = self.update(self.config(config), seed, dtype) if callable(self.update) else self.update
        float32 = self.float32
        if dtype == "float64" or float32 is True:
            return self.quantity, update
        return (float32, update) if float32 else None

    def agent(self, config: TD3Config, dtype: str = "float64", device: str = "cpu") -> HookedTD3 | HookedFastTD3:
        """The reference agent with this bug, for ``self.config(config)``."""
        from jax_td3.adapters.torch_ref import make_agent
        from jax_td3.convert import make_fasttd3_agent
        from jax_td3.errors import ConfigError

        if self.agent_class is None:
            raise ValueError(f"{self.name} is a bug of the training loop, not of the update: it has no agent")
        if config.algo != self.algo:
            raise ConfigError(f"mutant {self.name} is a bug of {self.algo} (--algo {self.algo}), not of {config.algo}")
        make = make_fasttd3_agent if self.algo == "fasttd3" else make_agent
        agent = make(self.config(config), dtype, device)
        agent.__class__ = self.agent_class     # the reference -> its hooked subclass (same attributes)
        hooked = cast("HookedTD3 | HookedFastTD3", agent)
        hooked.prepare()
        return hooked


def first_update_where(config: TD3Config, seed: int, condition: Callable[[tuple[np.ndarray, ...], np.ndarray], bool],
                       limit: int = 100_000) -> int:
    """The first update of an update-level comparison (``update_level.make_draws``: ``SharedDraws``, or
    ``NStepDraws`` for fasttd3) whose batch and target noise satisfy ``condition(batch, noise)``."""
    from jax_td3.parity.update_level import make_draws

    draws = make_draws(config, seed)
    for update in range(1, limit + 1):
        if condition(*draws.next(config.batch_size, config.act_dim)):
            return update
    raise ValueError("the condition never holds in the shared draws")


def _first_terminal(config: TD3Config, seed: int, dtype: str = "float64") -> int:
    return first_update_where(config, seed, lambda batch, noise: bool(np.any(batch[4] == 0)))


def _first_noise_beyond_clip(config: TD3Config, seed: int, dtype: str = "float64") -> int:
    bound = config.noise_clip / config.policy_noise
    return first_update_where(config, seed, lambda batch, noise: bool(np.any(np.abs(noise) > bound)))


def _first_longer_window(config: TD3Config, seed: int, dtype: str = "float64") -> int:
    # FastTD3's batch: (collected, obs, action, next_obs, reward, bootstrap, discount); a window of k > 1
    # steps has discount gamma^k != gamma, and the discount acts where the target bootstraps.
    return first_update_where(config, seed, lambda batch, noise: bool(np.any((batch[6] != config.gamma)
                                                                             & (batch[5] != 0))))


def _first_target_on_atom(config: Any, seed: int, dtype: str = "float64") -> int:
    # Where some sample's target r + bootstrap * discount * z_j, clamped to the support, is exactly an atom
    # (at either end of the support when clamped, or a bootstrap-0 reward on an atom).
    support = np.linspace(config.v_min, config.v_max, config.num_atoms)
    delta_z = (config.v_max - config.v_min) / (config.num_atoms - 1)

    def on_atom(batch: tuple[np.ndarray, ...], noise: np.ndarray) -> bool:
        reward, bootstrap, discount = batch[4] * config.reward_scale, batch[5], batch[6]
        target_z = np.clip(reward[:, None] + (bootstrap * discount)[:, None] * support, config.v_min, config.v_max)
        b = np.clip((target_z - config.v_min) / delta_z, 0, config.num_atoms - 1)
        return bool(np.any(b == np.floor(b)))

    return first_update_where(config, seed, on_atom)


def _first_mixed_cdq(config: Any, seed: int, dtype: str = "float64", limit: int = 1000) -> int:
    """The first update at which the correct per-sample choice differs from the per-batch one on a sample
    whose two expected values are not a tie (``update_level.cdq_mismatches``). It depends on the critics,
    not only on the data (at the start one critic's values can be the lower on every sample): the correct
    reference is replayed from our update's initial state on the comparison's shared draws."""
    from jax_td3.adapters.fasttd3_jax import FastTD3JaxAdapter
    from jax_td3.adapters.fasttd3_torch_ref import FastTD3TorchRefAdapter
    from jax_td3.dtypes import dtype_named, x64_scope
    from jax_td3.parity.update_level import cdq_mismatches, make_draws

    ndtype = dtype_named(dtype)
    reference = FastTD3TorchRefAdapter(config, dtype)
    with x64_scope(dtype):   # (the float32 command asks for float64's update too, with x64 off)
        reference.load(FastTD3JaxAdapter(config, dtype, seed=seed).state())
    support = np.linspace(config.v_min, config.v_max, config.num_atoms)
    draws = make_draws(config, seed)
    for update in range(1, limit + 1):
        fields, noise = draws.next(config.batch_size, config.act_dim)
        out = reference.update(tuple(np.asarray(x).astype(ndtype) for x in fields), np.asarray(noise).astype(ndtype))
        values = np.asarray(out["projected"], np.float64) @ support
        per_batch = np.full(values.shape[1], values[0].mean() < values[1].mean())
        if cdq_mismatches(config, dtype, out, {"cdq_choice": per_batch}):
            return update
    raise ValueError("the per-batch choice never differs from the per-sample one")


_SKRL = "skrl's JAX TD3 and SAC (skrl issue #425, fixed in #426)"

CATALOGUE: tuple[Mutant, ...] = (
    Mutant("shared-critic-gradient", _SKRL,
           "Q1's gradient applied to both critics", SharedCriticGradient, "critic_grad.l4.weight", 1),
    Mutant("actor-gradient-into-critic",
           "textbook: a missing detach/stop_gradient (a joint loss differentiated with respect to the critic)",
           "on actor updates the critic steps on the gradient of the critic loss plus the actor loss",
           ActorGradientIntoCritic, "critic_grad.l1.weight", 2),
    Mutant("target-from-online", "textbook: the TD target computed with the online networks",
           "target action and target Q from the actor and critic instead of their targets",
           TargetFromOnline, "target_q", 2),
    Mutant("target-noise-unclipped", "textbook: TD3's target-policy smoothing noise not clipped to noise_clip",
           "the target noise is not clipped (acts at the first draw beyond noise_clip / policy_noise)",
           TargetNoiseUnclipped, "target_action", _first_noise_beyond_clip),
    Mutant("target-action-unclipped", "textbook: the noisy target action not clipped to the action box",
           "the target action (policy + noise) is not clipped to the box (shown with policy_noise 1, noise_clip 3)",
           TargetActionUnclipped, "target_action", 1, config_changes=(("policy_noise", 1.0), ("noise_clip", 3.0))),
    Mutant("polyak-swapped", "textbook: tau and 1 - tau swapped in the soft update",
           "target <- (1 - tau) * online + tau * target", PolyakSwapped, "critic_target.l1.weight", 2,
           float32=False),
    Mutant("targets-every-update", "textbook: targets moved on every update instead of with the delayed actor",
           "Polyak after every critic step", TargetsEveryUpdate, "critic_target.l1.weight", 1,
           float32="schedule"),
    Mutant("actor-every-update", "textbook: the delayed policy update left out",
           "the actor (and the targets) step on every update", ActorEveryUpdate, "actor.l1.weight", 1,
           float32="schedule"),
    Mutant("t3d-counter-from-zero",
           "the T3D notebook: `for it in range(iterations)` counts from 0 (docs/algorithms.md)",
           "the actor steps on updates 1, 3, 5 ... instead of 2, 4, 6 ...", CounterFromZero, "actor.l1.weight", 1,
           float32="schedule"),
    Mutant("done-mask-ignored", "textbook: bootstrapping through terminal transitions",
           "the target ignores not_done (acts at the first batch holding a terminal transition)",
           DoneMaskIgnored, "target_q", _first_terminal),
    Mutant("max-twin-target", "textbook: max instead of min over TD3's twin target critics",
           "target Q = max(Q1', Q2')", MaxTwinTarget, "target_q", 1),
    Mutant("adam-eps-inside-sqrt",
           "Adam's epsilon inside the square root, 'epsilon hat' (TensorFlow vs PyTorch; optax issue #571; "
           "the RLHF implementation-details write-up)",
           "Adam steps by m_hat / sqrt(v_hat + eps) instead of m_hat / (sqrt(v_hat) + eps)",
           AdamEpsInsideSqrt, "critic.l1.weight", 1, float32=False),
    Mutant("adam-no-bias-correction", "textbook: Adam without bias correction",
           "Adam steps by m / (sqrt(v) + eps)", AdamNoBiasCorrection, "critic.l1.weight", 1, float32=False),
    Mutant("learning-rates-swapped", "textbook: each learning rate given to the other network's optimizer",
           "actor_lr on the critic and critic_lr on the actor (shown with DDPG's 1e-4 and 1e-3)",
           LearningRatesSwapped, "critic.l1.weight", 1, config_changes=(("actor_lr", 1e-4), ("critic_lr", 1e-3)),
           float32=False),
    Mutant("t3d-adam-default-lr", "the T3D notebook: Adam built without a learning rate (PyTorch's 1e-3)",
           "both optimizers at 1e-3 instead of 3e-4", AdamDefaultLearningRate, "critic.l1.weight", 1, float32=False),
    Mutant("t3d-absolute-noise",
           "the T3D notebook: policy_noise and noise_clip as absolute numbers (docs/algorithms.md)",
           "target noise not scaled by the action scale (shown on the box [-2, 2])",
           AbsoluteTargetNoise, "target_action", 1,
           config_changes=(("action_low", lambda c: (-2.0,) * c.act_dim),
                           ("action_high", lambda c: (2.0,) * c.act_dim))),
    Mutant("tf32-matmul",
           "JAX's default TF32 matmuls on NVIDIA GPUs against PyTorch's float32 (jax #18934, flow-rl PR #12)",
           "every matmul's inputs rounded to 10 mantissa bits (TF32) on one side", ReducedPrecisionMatmul,
           "target_action", 1),
    Mutant("truncation-as-done",
           "the T3D and DDPG notebooks: not_done = 0 at a time-limit truncation (docs/algorithms.md)",
           "the loop stores not_done 0 when the time limit ends an episode: bootstrapping cut there",
           None, "not_done", None, level="run", loop_changes=(("bootstrap_truncation", False),), step=200),
    Mutant("fasttd3-one-step-discount",
           "n-step ports: the target discounted by gamma rather than the window's gamma^k",
           "the target's support discounted by the config's gamma instead of the batch's gamma^k (shown with "
           "n_step >= 3; acts at the first batch holding a bootstrapped window of k > 1 steps)",
           OneStepDiscount, "projected", _first_longer_window, algo="fasttd3",
           config_changes=(("n_step", lambda c: max(c.n_step, 3)),)),
    Mutant("fasttd3-projection-on-atom-lost",
           "C51 ports: the projection without the rule for a target exactly on an atom (lower == upper)",
           "a target exactly on an atom (e.g. clamped to either end of the support) gets no mass: that "
           "mass is lost", ProjectionOnAtomLost, "projected", _first_target_on_atom, algo="fasttd3"),
    Mutant("fasttd3-cdq-per-batch",
           "distributional clipped double Q: one critic chosen for the whole batch instead of per sample",
           "the target distribution of the critic whose mean expected value over the batch is lower, for "
           "every sample (acts at the first update where the per-sample choice is not the same on every "
           "sample)", CdqPerBatch, "cdq_choice", _first_mixed_cdq, algo="fasttd3"),
    Mutant("fasttd3-softmax-over-batch",
           "textbook: a softmax over the wrong axis (dim=0, the batch, instead of the atoms)",
           "the target critics' distributions normalised over the batch instead of over the atoms: each atom's "
           "probabilities sum to 1 across the samples", SoftmaxOverBatch, "projected", 1, algo="fasttd3"),
)

MUTANTS: dict[str, Mutant] = {mutant.name: mutant for mutant in CATALOGUE}


def get(name: str) -> Mutant:
    from jax_td3.errors import ConfigError

    if name not in MUTANTS:
        raise ConfigError(f"unknown mutant {name!r}; choose from {', '.join(MUTANTS)} (or 'list')")
    return MUTANTS[name]


def mutant_parity(name: str, config: TD3Config, *, dtype: str = "float64", updates: int = 10, seed: int = 0,
                  tol: float | None = None, resync: bool | None = None, progress: bool = False) -> ParityReport:
    """``run_parity`` of our JAX update against the reference with bug ``name`` (under ``Mutant.config``)."""
    from jax_td3.parity.update_level import run_parity

    mutant = get(name)
    if mutant.level != "update":
        raise ValueError(f"{name} is a bug of the training loop: only a whole run (--run) shows it")
    config = mutant.config(config)
    return run_parity(config, dtype=dtype, updates=updates, seed=seed, tol=tol, resync=resync, progress=progress,
                      agent=mutant.agent(config, dtype))


def install(name: str, trainer: Any) -> None:
    """Put bug ``name`` into a ``loops.host.Trainer`` (the second run of a whole-run comparison): the learner's
    reference agent replaced by the one with the bug (torch backend only), or the loop's settings changed.
    The trainer's config should already hold the bug's ``config_changes`` (``Mutant.config``)."""
    from jax_td3.errors import ConfigError

    mutant = get(name)
    if mutant.loop_changes:
        trainer.settings = dataclasses.replace(trainer.settings, **dict(mutant.loop_changes))
    if mutant.agent_class is None:
        return
    backend = trainer.backend
    if getattr(backend, "name", None) != "torch":
        raise ConfigError(f"mutant {name} is a modified PyTorch reference: the second backend must be torch")
    state = backend.state()
    backend.agent = mutant.agent(trainer.config, backend.torch_dtype)
    backend.load_state(state)


__all__ = ["CATALOGUE", "HookedFastTD3", "HookedTD3", "MUTANTS", "Mutant", "adam_step", "first_update_where", "get",
           "install", "mutant_parity", "projection_without_on_atom_rule", "round_mantissa"]
