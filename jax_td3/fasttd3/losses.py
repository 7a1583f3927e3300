"""Pure pieces of one FastTD3 update: target action, categorical projection, target distribution,
critic cross-entropy and the actor's loss on expected values.

Observations reaching these functions are already normalised. Expressions follow the order in which
the shared description of the update writes them (and ``torch_ref`` with it), so float64 results
agree to the last few bits.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_td3.config import FastTD3Config
from jax_td3.fasttd3.networks import actor_action, critic_logits, support
from jax_td3.networks import Params


class TargetDistribution(NamedTuple):
    """What the critics learn: ``target_dist`` (2, B, atoms), one row per critic (the same row twice
    with clipped double Q); ``projected`` (2, B, atoms), each target critic's projection; ``cdq_choice``
    (B,) True where critic 1's projection has the lower expected value (the one taken with clipped
    double Q; ties take critic 2's)."""

    target_dist: jax.Array
    projected: jax.Array
    cdq_choice: jax.Array


def target_action(config: FastTD3Config, actor_params: Params, next_obs: ArrayLike,
                  target_noise: ArrayLike) -> jax.Array:
    """a' = clip(mu(s') + clip(z * policy_noise * scale, +-noise_clip * scale), low, high) with the online actor
    (FastTD3 has no actor target); ``target_noise`` holds standard normal draws z shaped like the action."""
    next_action = actor_action(config, actor_params, next_obs)
    scale = jnp.asarray(config.action_scale, next_action.dtype)
    clip = config.noise_clip * scale
    noise = jnp.clip(target_noise * config.policy_noise * scale, -clip, clip)
    low = jnp.asarray(config.action_low, next_action.dtype)
    high = jnp.asarray(config.action_high, next_action.dtype)
    return jnp.clip(next_action + noise, low, high)


def categorical_projection(probs: jax.Array, reward: ArrayLike, bootstrap: ArrayLike, discount: ArrayLike,
                           support_values: jax.Array, v_min: float | jax.Array, v_max: float | jax.Array) -> jax.Array:
    """C51's projection of the distribution ``probs`` (B, atoms) on ``support_values``, shifted to
    reward + bootstrap * discount * z and clamped to [v_min, v_max], back onto the support: (B, atoms).

    Each shifted atom at fractional position b splits its mass between the atoms floor(b) and ceil(b),
    in proportion to closeness. Where b lands exactly on atom k, FastTD3's rule pairs it with a
    neighbour (k-1 and k, or 0 and 1 for the first atom) and the whole mass goes to atom k. Two
    scatter-adds over the batch (no loop over atoms); ``reward``, ``bootstrap``, ``discount`` are (B,).
    """
    num_atoms = probs.shape[-1]
    delta_z = (v_max - v_min) / (num_atoms - 1)
    reward = jnp.asarray(reward, probs.dtype)
    shift = jnp.asarray(bootstrap, probs.dtype) * jnp.asarray(discount, probs.dtype)
    target_z = jnp.clip(reward[:, None] + shift[:, None] * support_values, v_min, v_max)
    # The clip keeps b inside [0, num_atoms - 1] where (v_max - v_min) / delta_z rounds above num_atoms - 1
    # (it rounds to it exactly for the supports tried; then the clip changes nothing).
    b = jnp.clip((target_z - v_min) / delta_z, 0, num_atoms - 1)
    lower = jnp.floor(b)
    upper = jnp.ceil(b)
    on_atom = lower == upper
    lower, upper = (jnp.where(on_atom & (lower > 0), lower - 1, lower),
                    jnp.where(on_atom & (lower == 0), upper + 1, upper))
    rows = jnp.arange(probs.shape[0])[:, None]
    projected = jnp.zeros_like(probs)
    projected = projected.at[rows, lower.astype(jnp.int32)].add(probs * (upper - b))
    return projected.at[rows, upper.astype(jnp.int32)].add(probs * (b - lower))


def expected_values(probs: jax.Array, support_values: jax.Array) -> jax.Array:
    """sum_j probs[..., j] * z_j: the value of each distribution."""
    return jnp.sum(probs * support_values, axis=-1)


def target_distribution(config: FastTD3Config, critic_target_params: Params, next_obs: ArrayLike,
                        next_action: ArrayLike, reward: ArrayLike, bootstrap: ArrayLike,
                        discount: ArrayLike) -> TargetDistribution:
    """Each target critic's distribution at (s', a'), projected; with ``use_cdq`` both critics learn the
    projection of lower expected value (per sample), else each its own. No gradient flows through it."""
    logits = critic_logits(config, critic_target_params, next_obs, next_action)
    probs = jax.nn.softmax(logits, axis=-1)
    z = support(config, probs.dtype)
    scaled_reward = jnp.asarray(reward, probs.dtype) * config.reward_scale
    project = lambda p: categorical_projection(p, scaled_reward, bootstrap, discount, z, config.v_min, config.v_max)
    projected = jax.lax.stop_gradient(jax.vmap(project)(probs))
    values = expected_values(projected, z)
    cdq_choice = values[0] < values[1]
    if config.use_cdq:
        chosen = jnp.where(cdq_choice[:, None], projected[0], projected[1])
        target_dist = jnp.stack([chosen, chosen])
    else:
        target_dist = projected
    return TargetDistribution(target_dist, projected, cdq_choice)


def critic_loss(config: FastTD3Config, critic_params: Params, obs: ArrayLike, action: ArrayLike,
                target_dist: jax.Array) -> tuple[jax.Array, jax.Array]:
    """critic_loss_scale * sum over critics of mean over the batch of the cross-entropy
    -sum_j target[j] * log_softmax(logits)[j]; also returns the logits (2, B, atoms)."""
    logits = critic_logits(config, critic_params, obs, action)
    cross_entropy = -jnp.sum(target_dist * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return config.critic_loss_scale * jnp.sum(jnp.mean(cross_entropy, axis=-1)), logits


def actor_loss(config: FastTD3Config, actor_params: Params, critic_params: Params,
               obs: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """-mean q(s, mu(s)) with q the minimum of the critics' expected values (``use_cdq``) or their mean;
    also returns q (B,)."""
    action = actor_action(config, actor_params, obs)
    probs = jax.nn.softmax(critic_logits(config, critic_params, obs, action), axis=-1)
    q1, q2 = expected_values(probs, support(config, probs.dtype))
    actor_q = jnp.minimum(q1, q2) if config.use_cdq else (q1 + q2) / 2.0
    return -jnp.mean(actor_q), actor_q
