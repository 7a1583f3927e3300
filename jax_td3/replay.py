"""A replay buffer that lives on the device, and K updates fused into one compiled call.

The buffer is a ring of fixed-shape arrays with a write position and a size, so
``add`` and ``sample`` are jittable and can sit inside ``lax.scan``. ``multi_update``
samples and updates K times in one program, calling the one ``update`` function:
given the same draws (``draw_updates``) it does exactly what K calls of ``update`` on
the gathered batches do (tests/test_fused_learning.py, float64).

Choosing K for the Gymnasium loop (``train --updates-per-call K``): the loop collects
K steps with a frozen policy, then runs K updates on that data in one call. K up to
100 (half a Pendulum episode) learned like the per-step path in our measurements and
is as fast as larger K; K = 1,000 (five episodes of a frozen policy between policy
changes) swung more between evaluations on small networks
(benchmarks/results/compiled.md, section (c)).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jax_td3.config import TD3Config
from jax_td3.update import Batch, Metrics, TrainState, update


class ReplayState(NamedTuple):
    obs: jax.Array        # (capacity, obs_dim)
    action: jax.Array     # (capacity, act_dim)
    next_obs: jax.Array   # (capacity, obs_dim)
    reward: jax.Array     # (capacity, 1)
    not_done: jax.Array   # (capacity, 1)
    position: jax.Array   # int32: where the next transition is written
    size: jax.Array       # int32: how many slots are filled

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]


def replay_init(capacity: int, obs_dim: int, act_dim: int, dtype: Any = jnp.float32) -> ReplayState:
    zeros = lambda width: jnp.zeros((capacity, width), dtype)
    return ReplayState(zeros(obs_dim), zeros(act_dim), zeros(obs_dim), zeros(1), zeros(1),
                       jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def replay_add(replay: ReplayState, transitions: Batch) -> ReplayState:
    """Write N transitions (leading axis N; reward/not_done (N, 1)) at the ring position."""
    n = transitions.obs.shape[0]
    slots = (replay.position + jnp.arange(n, dtype=jnp.int32)) % replay.capacity
    fields = {name: getattr(replay, name).at[slots].set(getattr(transitions, name).astype(getattr(replay, name).dtype))
              for name in Batch._fields}
    return replay._replace(**fields, position=(replay.position + n) % replay.capacity,
                           size=jnp.minimum(replay.size + n, replay.capacity))


def replay_gather(replay: ReplayState, indices: jax.Array) -> Batch:
    """The batch at the given slots (indices can be injected for cross-framework runs)."""
    return Batch(*(getattr(replay, name)[indices] for name in Batch._fields))


def replay_indices_from_bits(replay: ReplayState, bits: jax.Array) -> jax.Array:
    """Uniform slots over the filled part from uint32 draws (the modulo bias is below size / 2^32)."""
    return (bits % jnp.maximum(replay.size, 1).astype(jnp.uint32)).astype(jnp.int32)


class UpdateDraws(NamedTuple):
    """The random numbers of K updates, drawn before the scan in one vectorised call each
    (a small ``jax.random`` call per update is a rolled threefry loop on XLA:CPU)."""

    replay_bits: jax.Array      # (K, batch) uint32: replay slots, see ``replay_indices_from_bits``
    target_noise: jax.Array     # (K, batch, act_dim) N(0, 1): target-policy smoothing


def draw_updates(config: TD3Config, replay: ReplayState, key: jax.Array, num_updates: int) -> UpdateDraws:
    bits_key, noise_key = jax.random.split(key)
    batch, act_dim = config.batch_size, replay.action.shape[1]
    return UpdateDraws(jax.random.bits(bits_key, (num_updates, batch), jnp.uint32),
                       jax.random.normal(noise_key, (num_updates, batch, act_dim), replay.action.dtype))


def multi_update(config: TD3Config, state: TrainState, replay: ReplayState, key: jax.Array,
                 num_updates: int) -> tuple[TrainState, Metrics]:
    """``num_updates`` (sample, update) steps in one ``lax.scan``; metrics are stacked per update.

    The draws of all K updates come from ``draw_updates(config, replay, key, K)``.
    """

    def one(state: TrainState, draws: UpdateDraws) -> tuple[TrainState, Metrics]:
        batch = replay_gather(replay, replay_indices_from_bits(replay, draws.replay_bits))
        return update(config, state, batch, draws.target_noise)

    return jax.lax.scan(one, state, draw_updates(config, replay, key, num_updates))
