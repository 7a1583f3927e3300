"""FastTD3's replay on the device: one ring of one-step transitions per environment, n-step returns
assembled when a batch is sampled (as FastTD3 does), jittable and vmappable (the compiled loop's).

Layout. Every environment writes one transition per vector step, so all N rings share one write
position and one size: the arrays are (capacity, N, ...) (slot-major, one row per vector step) and
``position``/``size`` are scalars. A ring slot holds (obs, action, next_obs, reward, terminated,
truncated), ``next_obs`` the true next observation (the final one where the episode ended).

n-step transitions. The transition starting at slot t of environment e covers k steps: up to and
including the first step that ended the episode (terminated or truncated), at most ``n_step``;
``reward`` = sum_{i<k} gamma^i r_{t+i}, ``discount`` = gamma^k, ``next_obs`` that of step t+k-1,
``bootstrap`` 0 where step t+k-1 terminated (also where it was truncated, with ``bootstrap_truncation``
off), else 1. These are ``fasttd3.replay.NStepReplayBuffer``'s transitions (the host buffer, the
reference: tests/test_compiled_fasttd3.py compares every start). Unlike FastTD3's own sampler a time
limit stops the sum too, as on the host.

Which starts can be sampled. A start is *finished* once its window is complete: ``n_step`` steps were
written from it, or one of its steps ended the episode. Each environment's unfinished starts are its
last ``pending`` ones (at most ``n_step - 1``, the steps of its current episode not yet followed by
``n_step - 1`` more), carried in the state; sampling takes only finished starts, so a window never
reaches past the write head into old data, and the host buffer holds exactly the same starts (before
either ring wraps). Assembling at sampling time keeps the ring one-step (no per-environment window of
n-step sums to carry and flush, no variable number of writes per step) at the price of n gathers of
reward and flags per sampled transition, small next to an update.

Sampling: sample b of a batch comes from environment b mod N, uniformly over that environment's
finished starts; with a batch size that is a multiple of N this is FastTD3's draw of batch_size // N
transitions from each environment.

The TD3 family (the compiled loop's per-environment replay) reads the same windows as TD3's own batch
(``losses.Batch``, ``nstep_td3_gather``): its target is ``reward + not_done * gamma * Q'``, so a window of k
steps enters as ``reward`` = the n-step return and ``not_done`` = ``bootstrap * gamma^(k-1)``, which makes the
target ``R + bootstrap * gamma^k * Q'``. With n_step 1 that is the flat replay's transition exactly
(``not_done`` = 1 - terminated, or 1 - ended without ``bootstrap_truncation``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_td3 import losses
from jax_td3.fasttd3.state import Batch

RING_FIELDS = ("obs", "action", "next_obs", "reward", "terminated", "truncated")


class NStepReplayState(NamedTuple):
    obs: jax.Array          # (capacity, N, obs_dim)
    action: jax.Array       # (capacity, N, act_dim)
    next_obs: jax.Array     # (capacity, N, obs_dim): the true next observation
    reward: jax.Array       # (capacity, N)
    terminated: jax.Array   # (capacity, N) bool
    truncated: jax.Array    # (capacity, N) bool
    pending: jax.Array      # (N,) int32: each environment's newest starts not finished yet (< n_step)
    position: jax.Array     # int32: the slot the next vector step is written to
    size: jax.Array         # int32: slots filled (per environment)

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]


def nstep_replay_init(capacity: int, num_envs: int, obs_dim: int, act_dim: int,
                      dtype: Any = jnp.float32) -> NStepReplayState:
    """Empty rings of ``capacity`` one-step transitions for each of ``num_envs`` environments."""
    zeros = lambda *shape: jnp.zeros((capacity, num_envs) + shape, dtype)
    flags = jnp.zeros((capacity, num_envs), bool)
    return NStepReplayState(zeros(obs_dim), zeros(act_dim), zeros(obs_dim), zeros(), flags, flags,
                            jnp.zeros((num_envs,), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def nstep_replay_add(replay: NStepReplayState, obs: ArrayLike, action: ArrayLike, reward: ArrayLike,
                     next_obs: ArrayLike, terminated: ArrayLike, truncated: ArrayLike,
                     n_step: int) -> NStepReplayState:
    """One vector step (rows in environment order) written at the ring position."""
    slot = replay.position
    dtype = replay.obs.dtype
    ended = jnp.asarray(terminated, bool) | jnp.asarray(truncated, bool)
    pending = jnp.where(ended, 0, jnp.minimum(replay.pending + 1, n_step - 1)).astype(jnp.int32)
    return replay._replace(
        obs=replay.obs.at[slot].set(jnp.asarray(obs, dtype)),
        action=replay.action.at[slot].set(jnp.asarray(action, dtype)),
        next_obs=replay.next_obs.at[slot].set(jnp.asarray(next_obs, dtype)),
        reward=replay.reward.at[slot].set(jnp.asarray(reward, dtype)),
        terminated=replay.terminated.at[slot].set(jnp.asarray(terminated, bool)),
        truncated=replay.truncated.at[slot].set(jnp.asarray(truncated, bool)),
        pending=pending,
        position=(slot + 1) % replay.capacity,
        size=jnp.minimum(replay.size + 1, replay.capacity))


def finished_starts(replay: NStepReplayState) -> jax.Array:
    """(N,) how many starts of each environment can be sampled."""
    return replay.size - replay.pending


def nstep_indices_from_bits(replay: NStepReplayState, bits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(slots, envs) of a batch from uint32 draws (B,): sample b from environment b mod N, uniform over
    its finished starts, oldest first (the modulo bias is below size / 2^32)."""
    num_envs = replay.pending.shape[0]
    envs = jnp.arange(bits.shape[0], dtype=jnp.int32) % num_envs
    finished = jnp.maximum(finished_starts(replay)[envs], 1).astype(jnp.uint32)
    offset = (bits % finished).astype(jnp.int32)
    return (replay.position - replay.size + offset) % replay.capacity, envs


class NStepWindow(NamedTuple):
    """The windows of a batch of starts, each (B,): what an n-step transition is made of."""

    reward: jax.Array        # sum_{i<k} gamma^i r_{t+i}
    steps: jax.Array         # int32: k, the steps taken (1..n_step)
    last: jax.Array          # int32: the slot of step t+k-1 (its next_obs is the transition's)
    no_bootstrap: jax.Array  # bool: step t+k-1 terminated (or was truncated, without bootstrap_truncation)


def nstep_window(replay: NStepReplayState, slots: jax.Array, envs: jax.Array, n_step: int,
                 gamma: float | jax.Array, bootstrap_truncation: bool) -> NStepWindow:
    """The windows starting at ``slots`` of environments ``envs`` (both (B,)); each start must be finished
    (``nstep_indices_from_bits`` draws only those)."""
    dtype = replay.reward.dtype
    gamma = jnp.asarray(gamma, dtype)
    reward = jnp.zeros(slots.shape, dtype)
    steps = jnp.zeros(slots.shape, jnp.int32)
    running = jnp.ones(slots.shape, bool)   # no step before this one ended the episode
    for i in range(n_step):                 # the host buffer's terms in its order: i = 0, 1, ...
        row = (slots + i) % replay.capacity
        reward = reward + jnp.where(running, gamma ** i * replay.reward[row, envs], jnp.zeros((), dtype))
        steps = steps + running.astype(jnp.int32)
        running = running & ~(replay.terminated[row, envs] | replay.truncated[row, envs])
    last = (slots + steps - 1) % replay.capacity
    no_bootstrap = replay.terminated[last, envs]
    if not bootstrap_truncation:
        no_bootstrap = no_bootstrap | replay.truncated[last, envs]
    return NStepWindow(reward, steps, last, no_bootstrap)


def nstep_gather(replay: NStepReplayState, slots: jax.Array, envs: jax.Array, n_step: int,
                 gamma: float | jax.Array, bootstrap_truncation: bool) -> Batch:
    """The n-step transitions starting at ``slots`` of environments ``envs`` (both (B,)); each start must
    be finished (``nstep_indices_from_bits`` draws only those)."""
    dtype = replay.reward.dtype
    gamma = jnp.asarray(gamma, dtype)
    window = nstep_window(replay, slots, envs, n_step, gamma, bootstrap_truncation)
    return Batch(obs=replay.obs[slots, envs], action=replay.action[slots, envs],
                 next_obs=replay.next_obs[window.last, envs], reward=window.reward,
                 bootstrap=jnp.where(window.no_bootstrap, 0.0, 1.0).astype(dtype),
                 discount=gamma ** window.steps.astype(dtype))


def nstep_td3_gather(replay: NStepReplayState, slots: jax.Array, envs: jax.Array, n_step: int,
                     gamma: float | jax.Array, bootstrap_truncation: bool) -> losses.Batch:
    """``nstep_gather``'s transitions as TD3's batch (reward and not_done (B, 1)): ``reward`` the n-step
    return, ``not_done`` 0 where the window does not bootstrap, else gamma^(k-1) (module docstring)."""
    dtype = replay.reward.dtype
    gamma = jnp.asarray(gamma, dtype)
    window = nstep_window(replay, slots, envs, n_step, gamma, bootstrap_truncation)
    not_done = jnp.where(window.no_bootstrap, jnp.zeros((), dtype), gamma ** (window.steps - 1).astype(dtype))
    return losses.Batch(obs=replay.obs[slots, envs], action=replay.action[slots, envs],
                        next_obs=replay.next_obs[window.last, envs], reward=window.reward[:, None],
                        not_done=not_done[:, None])


def nstep_sample(replay: NStepReplayState, bits: jax.Array, n_step: int, gamma: float | jax.Array,
                 bootstrap_truncation: bool) -> Batch:
    """A batch of n-step transitions from uint32 draws (B,) (``nstep_indices_from_bits``)."""
    slots, envs = nstep_indices_from_bits(replay, bits)
    return nstep_gather(replay, slots, envs, n_step, gamma, bootstrap_truncation)


def nstep_td3_sample(replay: NStepReplayState, bits: jax.Array, n_step: int, gamma: float | jax.Array,
                     bootstrap_truncation: bool) -> losses.Batch:
    """A TD3 batch of n-step transitions from uint32 draws (B,) (``nstep_td3_gather``)."""
    slots, envs = nstep_indices_from_bits(replay, bits)
    return nstep_td3_gather(replay, slots, envs, n_step, gamma, bootstrap_truncation)
