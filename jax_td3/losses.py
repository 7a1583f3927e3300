"""Pure pieces of one update: target action, TD target, critic loss, actor loss.

Each function mirrors one step of the seed notebook's outline; ``update.py`` calls
them in order. Expressions are written in the same order as in ``torch_ref`` so
that float64 results agree to the last few bits.
"""

from __future__ import annotations

from typing import NamedTuple, Union, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jax_td3.config import TD3Config
from jax_td3.networks import Params, actor_action, critic_values, first_critic_value

BatchArray = Union[jax.Array, np.ndarray]  # host replay gives NumPy batches, device replay JAX ones


class Batch(NamedTuple):
    """A batch of transitions, in Fujimoto's order. reward and not_done are (B, 1)."""

    obs: BatchArray
    action: BatchArray
    next_obs: BatchArray
    reward: BatchArray
    not_done: BatchArray


def target_action(config: TD3Config, actor_target_params: Params, next_obs: ArrayLike,
                  target_noise: ArrayLike) -> jax.Array:
    """Steps 5-6: a' = clip(mu_target(s') + eps, low, high), eps = clip(z * policy_noise, +-noise_clip).

    ``target_noise`` holds standard normal draws z of the action's shape; both noise
    scales are in units of the action scale. Algorithms without target-policy
    smoothing ignore it.
    """
    next_action = actor_action(config, actor_target_params, next_obs)
    if not config.target_policy_smoothing:
        return next_action
    scale = jnp.asarray(config.action_scale, next_action.dtype)
    clip = config.noise_clip * scale
    eps = jnp.clip(target_noise * (config.policy_noise * scale), -clip, clip)
    low = jnp.asarray(config.action_low, next_action.dtype)
    high = jnp.asarray(config.action_high, next_action.dtype)
    return jnp.clip(next_action + eps, low, high)


def td_target(config: TD3Config, critic_target_params: Params, batch: Batch, next_action: jax.Array) -> jax.Array:
    """Steps 7-9: y = r * reward_scale + not_done * gamma * min_i Q_target_i(s', a'); no gradient."""
    target_qs = critic_values(config, critic_target_params, batch.next_obs, next_action)
    target_q = jnp.min(target_qs, axis=0)
    y = batch.reward * config.reward_scale + batch.not_done * config.gamma * target_q
    return cast(jax.Array, jax.lax.stop_gradient(y))  # target_q is a JAX array, so y is one too


def critic_loss(config: TD3Config, critic_params: Params, batch: Batch, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Steps 10-11: critic_loss_scale * sum over critics of mean (Q_i(s, a) - y)^2 (Huber for seed-ddpg).

    ``critic_loss_scale`` is 1 (Fujimoto's) unless set; SBX's TD3 uses 0.5. Multiplying by 1 is exact,
    so the default computes the unscaled loss and gradients bit for bit.
    """
    current_qs = critic_values(config, critic_params, batch.obs, batch.action)
    if config.critic_loss == "huber":
        per_critic = jnp.mean(optax.huber_loss(current_qs, y[None], delta=1.0), axis=(1, 2))
    else:
        per_critic = jnp.mean((current_qs - y[None]) ** 2, axis=(1, 2))
    return config.critic_loss_scale * jnp.sum(per_critic), current_qs


def actor_loss(config: TD3Config, actor_params: Params, critic_params: Params,
               obs: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Step 13: -mean Q(s, mu(s)) with the critic just updated; also returns Q(s, mu(s)).

    Q is the first critic (``actor_q="q1"``, Fujimoto's) or the minimum over the critics
    (``actor_q="min"``, SBX's).
    """
    action = actor_action(config, actor_params, obs)
    if config.actor_q == "min":
        actor_q = jnp.min(critic_values(config, critic_params, obs, action), axis=0)
    else:
        actor_q = first_critic_value(config, critic_params, obs, action)
    return -jnp.mean(actor_q), actor_q
