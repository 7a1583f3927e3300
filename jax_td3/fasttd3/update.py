"""The train state and one FastTD3 update, pure and jittable like TD3's ``jax_td3.update``.

``update(config, state, batch, target_noise) -> (state, metrics)``: critic step on the projected
target of the (online) actor's smoothed next action, Polyak on the critic target every update, and
every ``policy_freq``-th update an actor step on the critics just stepped (``lax.cond`` on the update
counter: no Python branching on numbers, no recompilation). Both steps are AdamW with an optional
clip to a global gradient norm and an optional cosine learning-rate schedule. The observation
normaliser in the state is read, never changed, here.

The config may be a compile-time constant (``jax.jit(update, static_argnums=0)``) or a pytree whose
numbers are batched by ``jax.vmap`` (a sweep): nothing below branches in Python on a number.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jax_td3.config import FastTD3Config
from jax_td3.fasttd3 import losses
from jax_td3.fasttd3.networks import init_actor_params, init_critic_params, support
from jax_td3.fasttd3.normalizer import normalize, normalizer_init
from jax_td3.fasttd3.state import Batch, TrainState
from jax_td3.networks import Params
from jax_td3.update import sample_target_noise  # the same draws as TD3's

Metrics = dict[str, jax.Array]  # scalars: critic_loss, actor_loss, actor_updated, q_mean, critic_lr, actor_lr


def clip_by_global_norm_if_positive(max_norm: float | jax.Array) -> optax.GradientTransformation:
    """optax.clip_by_global_norm's rule (t * max_norm / norm where norm >= max_norm) where max_norm > 0;
    the identity where max_norm <= 0. ``max_norm`` may be traced (a config leaf under vmap)."""
    def update_fn(updates: optax.Updates, state: optax.OptState,
                  params: optax.Params | None = None) -> tuple[optax.Updates, optax.OptState]:
        del params
        norm = optax.tree.norm(updates)
        keep = (norm < max_norm) | (max_norm <= 0)
        clipped = jax.tree_util.tree_map(lambda t: jnp.where(keep, t, (t / norm.astype(t.dtype)) * max_norm), updates)
        return clipped, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def adamw(config: FastTD3Config) -> optax.GradientTransformation:
    """AdamW's direction before the learning rate: clip (optional), Adam moments, + weight_decay * p.

    The update applies ``-lr * direction``, lr from ``learning_rates``. The state is
    ``(EmptyState, ScaleByAdamState, EmptyState)`` whatever the numbers (``jax_td3.update.adam_state``
    finds the moments by type).
    """
    return optax.chain(
        clip_by_global_norm_if_positive(config.max_grad_norm),
        optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps, eps_root=0.0),
        optax.add_decayed_weights(config.weight_decay),
    )


def actor_optimizer(config: FastTD3Config) -> optax.GradientTransformation:
    return adamw(config)


def critic_optimizer(config: FastTD3Config) -> optax.GradientTransformation:
    return adamw(config)


def scheduled_lr(lr: float | jax.Array, lr_end: float | jax.Array | None, schedule_updates: int,
                 step: jax.Array) -> jax.Array:
    """lr for the update after ``step`` updates: constant without a schedule, else cosine from lr (first
    update) to lr_end (after ``schedule_updates`` updates, and from then on)."""
    if lr_end is None or schedule_updates == 0:
        return jnp.asarray(lr)
    t = jnp.minimum(step, schedule_updates)
    return lr_end + (lr - lr_end) * (1 + jnp.cos(math.pi * t / schedule_updates)) / 2


def learning_rates(config: FastTD3Config, step: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(actor_lr, critic_lr) of the update after ``step`` updates (both schedules count updates)."""
    step = jnp.asarray(step)
    return (scheduled_lr(config.actor_lr, config.actor_lr_end, config.lr_schedule_updates, step),
            scheduled_lr(config.critic_lr, config.critic_lr_end, config.lr_schedule_updates, step))


def optimizer_step(optimizer: optax.GradientTransformation, lr: jax.Array, grads: Params,
                   opt_state: optax.OptState, params: Params) -> tuple[Params, optax.OptState]:
    """p <- p - lr * direction(grads, p); ``lr`` in the parameters' dtype."""
    direction, opt_state = optimizer.update(grads, opt_state, params)
    updates = jax.tree_util.tree_map(lambda d: -lr * d, direction)
    return optax.apply_updates(params, updates), opt_state


def init_train_state(config: FastTD3Config, key: jax.Array, dtype: Any = jnp.float32) -> TrainState:
    """Fresh networks (the critic target an exact copy), zeroed optimiser states and an empty
    normaliser, in ``dtype``."""
    actor_key, critic_key = jax.random.split(key)
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)
    actor_params = cast(init_actor_params(config, actor_key))
    critic_params = cast(init_critic_params(config, critic_key))
    return TrainState(
        actor_params=actor_params,
        critic_params=critic_params,
        critic_target_params=critic_params,
        actor_opt_state=actor_optimizer(config).init(actor_params),
        critic_opt_state=critic_optimizer(config).init(critic_params),
        obs_normalizer=normalizer_init(config.obs_dim, dtype),
        step=jnp.zeros((), jnp.int32),
    )


def update_with_internals(config: FastTD3Config, state: TrainState, batch: Batch,
                          target_noise: ArrayLike) -> tuple[TrainState, Metrics, dict[str, Any]]:
    """One update; also returns every intermediate quantity (for the parity checks).

    Returns ``(state, metrics, internals)``. Under ``jit`` the internals a caller drops are removed
    by XLA, so ``update`` costs nothing extra.
    """
    it = state.step + 1
    dtype = jax.tree_util.tree_leaves(state.critic_params)[0].dtype
    actor_lr, critic_lr = (lr.astype(dtype) for lr in learning_rates(config, state.step))
    # The batch in the parameters' dtype (a host replay may hand over NumPy arrays of another precision).
    if config.obs_normalization:
        obs = normalize(state.obs_normalizer, batch.obs)
        next_obs = normalize(state.obs_normalizer, batch.next_obs)
    else:
        obs, next_obs = jnp.asarray(batch.obs, dtype), jnp.asarray(batch.next_obs, dtype)
    action = jnp.asarray(batch.action, dtype)
    target_noise = jnp.asarray(target_noise, dtype)

    # Target: smoothed action of the online actor at s', both target critics' projections, CDQ choice.
    next_action = losses.target_action(config, state.actor_params, next_obs, target_noise)
    target = losses.target_distribution(config, state.critic_target_params, next_obs, next_action,
                                        batch.reward, batch.bootstrap, batch.discount)

    # Critic: cross-entropy to the target, one AdamW step on both critics together, then Polyak.
    (critic_loss, logits), critic_grads = jax.value_and_grad(losses.critic_loss, argnums=1, has_aux=True)(
        config, state.critic_params, obs, action, target.target_dist)
    critic_params, critic_opt_state = optimizer_step(critic_optimizer(config), critic_lr, critic_grads,
                                                     state.critic_opt_state, state.critic_params)
    critic_target_params = optax.incremental_update(critic_params, state.critic_target_params, step_size=config.tau)

    # Actor, every policy_freq-th update: ascend the critics just stepped.
    def actor_step(_: None) -> tuple[Any, ...]:
        (loss, actor_q), grads = jax.value_and_grad(losses.actor_loss, argnums=1, has_aux=True)(
            config, state.actor_params, critic_params, obs)
        actor_params, opt_state = optimizer_step(actor_optimizer(config), actor_lr, grads,
                                                 state.actor_opt_state, state.actor_params)
        return actor_params, opt_state, loss, actor_q, grads

    def unchanged(_: None) -> tuple[Any, ...]:
        zero_grads = jax.tree_util.tree_map(jnp.zeros_like, state.actor_params)
        return (state.actor_params, state.actor_opt_state, jnp.zeros((), critic_loss.dtype),
                jnp.zeros(logits.shape[1:2], critic_loss.dtype), zero_grads)

    if config.policy_freq == 1:
        actor_updated = jnp.ones((), bool)
        outputs = actor_step(None)
    else:
        actor_updated = it % config.policy_freq == 0
        outputs = jax.lax.cond(actor_updated, actor_step, unchanged, None)
    actor_params, actor_opt_state, actor_loss, actor_q, actor_grads = outputs

    new_state = TrainState(actor_params, critic_params, critic_target_params, actor_opt_state, critic_opt_state,
                           state.obs_normalizer, it)
    z = support(config, logits.dtype)
    metrics = {
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,           # 0 where the actor was not updated
        "actor_updated": actor_updated,
        "q_mean": jnp.mean(losses.expected_values(jax.nn.softmax(logits[0], axis=-1), z)),
        "critic_lr": critic_lr,
        "actor_lr": actor_lr,
    }
    internals = {
        "target_action": next_action,
        "target_dist": target.target_dist,
        "projected": target.projected,
        "cdq_choice": target.cdq_choice,
        "critic_logits": logits,            # before the critic step
        "critic_grads": critic_grads,
        "critic_grad_norm": optax.tree.norm(critic_grads),
        "actor_q": actor_q,                 # zeros where the actor was not updated
        "actor_grads": actor_grads,         # zeros where the actor was not updated
        "actor_grad_norm": optax.tree.norm(actor_grads),
        "critic_lr": critic_lr,
        "actor_lr": actor_lr,
    }
    return new_state, metrics, internals


def update(config: FastTD3Config, state: TrainState, batch: Batch,
           target_noise: ArrayLike) -> tuple[TrainState, Metrics]:
    """One FastTD3 update: ``(state, batch, N(0,1) noise) -> (state, metrics)``."""
    new_state, metrics, _ = update_with_internals(config, state, batch, target_noise)
    return new_state, metrics


def update_from_key(config: FastTD3Config, state: TrainState, batch: Batch,
                    key: jax.Array) -> tuple[TrainState, Metrics]:
    """``update`` drawing its target-policy noise from ``key``."""
    return update(config, state, batch, sample_target_noise(key, batch.action))
