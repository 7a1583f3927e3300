"""Gymnasium's Pendulum-v1 as pure JAX functions, for the fully compiled training loop.

Same dynamics, reward, observation, action clipping, 200-step time limit
(truncation, never termination) and reset distribution as
``gymnasium.make("Pendulum-v1")`` (``gymnasium/envs/classic_control/pendulum.py``
plus its ``TimeLimit`` wrapper), with the arithmetic in the same order so that a
float64 run reproduces Gymnasium's float64 state to rounding. The state carries
the dtype: float32 or float64 throughout. Gymnasium always returns float32
observations; here the observation has the state's dtype.

    state, obs = reset(key)                       # or reset(key, jnp.float64)
    state, obs, reward, terminated, truncated = step(state, action)

``PendulumEnv`` puts these functions behind the JAX-native interface
(``jax_td3.envs.base.JaxEnv``) that the compiled loop steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jax_td3.envs.base import EnvSpec

ENV_ID = "Pendulum-v1"
OBS_DIM = 3
ACT_DIM = 1
MAX_TORQUE = 2.0
MAX_SPEED = 8.0
MAX_EPISODE_STEPS = 200
DT = 0.05
G = 10.0
M = 1.0
L = 1.0
RESET_HIGH = (np.pi, 1.0)  # theta ~ U(-pi, pi), theta_dot ~ U(-1, 1)


class PendulumState(NamedTuple):
    theta: jax.Array       # radians, not wrapped (as in Gymnasium)
    theta_dot: jax.Array   # rad/s, within [-MAX_SPEED, MAX_SPEED]
    t: jax.Array           # int32: steps taken in this episode


def angle_normalize(x: jax.Array) -> jax.Array:
    """Wrap to [-pi, pi); jnp.mod takes the sign of the divisor like NumPy's %."""
    return jnp.mod(x + np.pi, 2 * np.pi) - np.pi


def observation(state: PendulumState) -> jax.Array:
    return jnp.stack([jnp.cos(state.theta), jnp.sin(state.theta), state.theta_dot], axis=-1)


def reset(key: jax.Array, dtype: Any = jnp.float32) -> tuple[PendulumState, jax.Array]:
    """A fresh episode: (theta, theta_dot) uniform in [-pi, pi] x [-1, 1]."""
    return reset_from_uniform(jax.random.uniform(key, (2,), dtype))


def reset_from_uniform(u: jax.Array) -> tuple[PendulumState, jax.Array]:
    """``reset`` with its two U(0, 1) draws given (for callers that draw many at once)."""
    high = jnp.asarray(RESET_HIGH, u.dtype)
    theta, theta_dot = high * (2 * u - 1)
    state = PendulumState(theta, theta_dot, jnp.zeros((), jnp.int32))
    return state, observation(state)


def step(state: PendulumState,
         action: ArrayLike) -> tuple[PendulumState, jax.Array, jax.Array, jax.Array, jax.Array]:
    """One step with torque ``action`` (shape (1,)), clipped to [-2, 2].

    Returns ``(state, obs, reward, terminated, truncated)``; ``terminated`` is always
    False and ``truncated`` is True on the 200th step of an episode. The caller resets.
    """
    th, thdot = state.theta, state.theta_dot
    dtype = th.dtype
    u = jnp.clip(jnp.asarray(action, dtype), -MAX_TORQUE, MAX_TORQUE)[0]
    costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)

    newthdot = thdot + (3 * G / (2 * L) * jnp.sin(th) + 3.0 / (M * L**2) * u) * DT
    newthdot = jnp.clip(newthdot, -MAX_SPEED, MAX_SPEED)
    newth = th + newthdot * DT

    t = state.t + 1
    new_state = PendulumState(newth.astype(dtype), newthdot.astype(dtype), t)
    terminated = jnp.zeros((), bool)
    truncated = t >= MAX_EPISODE_STEPS
    return new_state, observation(new_state), (-costs).astype(dtype), terminated, truncated


@dataclasses.dataclass(frozen=True)
class PendulumEnv:
    """Pendulum-v1 behind the JAX-native interface; an episode start takes two U(0, 1) draws."""

    spec: EnvSpec = EnvSpec(ENV_ID, OBS_DIM, ACT_DIM, (-MAX_TORQUE,), (MAX_TORQUE,), MAX_EPISODE_STEPS)

    def draw_resets(self, key: jax.Array, num: int, dtype: Any) -> jax.Array:
        return jax.random.uniform(key, (num, 2), dtype)

    def reset_from(self, draws: jax.Array) -> tuple[PendulumState, jax.Array]:
        return reset_from_uniform(draws)

    def reset(self, key: jax.Array, dtype: Any = jnp.float32) -> tuple[PendulumState, jax.Array]:
        return reset(key, dtype)

    def step(self, env_state: PendulumState,
             action: ArrayLike) -> tuple[PendulumState, jax.Array, jax.Array, jax.Array, jax.Array]:
        return step(env_state, action)
