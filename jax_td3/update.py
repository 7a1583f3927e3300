"""The train state and the one update shared by TD3, OurDDPG, DDPG and seed-ddpg.

``update(config, state, batch, target_noise) -> (state, metrics)`` is pure and
jittable. Everything fast wraps it (``jax.jit`` for one step, ``lax.scan`` for K,
``jax.vmap`` for many agents, the compiled loop for whole runs); nothing
re-implements it. The algorithms differ only through their config's class traits
(number of critics, target smoothing, critic architecture and loss) and numbers.

The delayed actor/target update of TD3 happens inside the compiled function
(``lax.cond`` on the update counter): no Python branching, no recompilation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jax_td3 import losses
from jax_td3.config import TD3Config
from jax_td3.losses import Batch
from jax_td3.networks import Params, init_actor_params, init_critic_params

Metrics = dict[str, jax.Array]  # scalars: critic_loss, actor_loss, actor_updated, q_mean


class TrainState(NamedTuple):
    actor_params: Params
    critic_params: Params        # leading axis: one slice per critic
    actor_target_params: Params
    critic_target_params: Params
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    step: jax.Array              # updates done so far (int32); the next update is number step + 1


def adam(learning_rate: float, b1: float, b2: float, eps: float,
         weight_decay: float = 0.0) -> optax.GradientTransformation:
    """PyTorch's Adam: L2 ``weight_decay * p`` is added to the gradient before the moments.

    The weight-decay stage is always present (a no-op at 0) so that the optimizer state
    has one structure whatever the numbers: ``(decay, ScaleByAdamState, scale)``.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=0.0),
        optax.scale_by_learning_rate(learning_rate),
    )


def adam_state(opt_state: optax.OptState) -> optax.ScaleByAdamState:
    """The Adam moments (``count``, ``mu``, ``nu``) of an optimizer state, found by type wherever the chain
    puts them (checkpoints and the parity adapters name them, so a changed chain keeps them)."""
    found = optax.tree_utils.tree_get(opt_state, "ScaleByAdamState")
    if not isinstance(found, optax.ScaleByAdamState):
        raise ValueError(f"no ScaleByAdamState in the optimizer state {type(opt_state).__name__}")
    return found


def with_adam_state(opt_state: optax.OptState, adam: optax.ScaleByAdamState) -> optax.OptState:
    """``opt_state`` with its ``ScaleByAdamState`` replaced by ``adam``."""
    is_adam = lambda node: isinstance(node, optax.ScaleByAdamState)
    return jax.tree_util.tree_map(lambda node: adam if is_adam(node) else node, opt_state, is_leaf=is_adam)


def actor_optimizer(config: TD3Config) -> optax.GradientTransformation:
    return adam(config.actor_lr, config.adam_b1, config.adam_b2, config.adam_eps)


def critic_optimizer(config: TD3Config) -> optax.GradientTransformation:
    return adam(config.critic_lr, config.adam_b1, config.adam_b2, config.adam_eps, config.critic_weight_decay)


def init_train_state(config: TD3Config, key: jax.Array, dtype: Any = jnp.float32) -> TrainState:
    """Fresh networks (targets are exact copies) and zeroed Adam states, in ``dtype``."""
    actor_key, critic_key = jax.random.split(key)
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)
    actor_params = cast(init_actor_params(config, actor_key))
    critic_params = cast(init_critic_params(config, critic_key))
    return TrainState(
        actor_params=actor_params,
        critic_params=critic_params,
        actor_target_params=actor_params,
        critic_target_params=critic_params,
        actor_opt_state=actor_optimizer(config).init(actor_params),
        critic_opt_state=critic_optimizer(config).init(critic_params),
        step=jnp.zeros((), jnp.int32),
    )


def polyak(online: Params, target: Params, tau: float) -> Params:
    """theta_target <- tau * theta + (1 - tau) * theta_target.

    optax computes ``tau * new + (1.0 - tau) * old``, the expression torch_ref's ``soft_update``
    writes (same jaxpr as the hand-written form, so the float64 parity figures are unchanged).
    """
    return optax.incremental_update(online, target, step_size=tau)


def sample_target_noise(key: jax.Array, action: losses.BatchArray) -> jax.Array:
    """Standard normal draws for target-policy smoothing, of the shape and dtype of ``action``."""
    return jax.random.normal(key, action.shape, action.dtype)


def update_with_internals(config: TD3Config, state: TrainState, batch: Batch,
                          target_noise: ArrayLike) -> tuple[TrainState, Metrics, dict[str, Any]]:
    """One update; also returns every intermediate quantity (for the parity checks).

    Returns ``(state, metrics, internals)``. Under ``jit``, internals that the caller
    drops are removed by XLA, so ``update`` below costs nothing extra.
    """
    it = state.step + 1
    # Steps 5-9: target action (with smoothing noise), twin target, min, TD target.
    next_action = losses.target_action(config, state.actor_target_params, batch.next_obs, target_noise)
    y = losses.td_target(config, state.critic_target_params, batch, next_action)

    # Steps 10-12: current Q, critic loss, one Adam step on all critics together.
    (critic_loss, current_qs), critic_grads = jax.value_and_grad(losses.critic_loss, argnums=1, has_aux=True)(
        config, state.critic_params, batch, y)
    critic_updates, critic_opt_state = critic_optimizer(config).update(
        critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)

    # target_update="every_update" (SBX's order): Polyak on all targets now, on every update, from the
    # critic just stepped and the actor as it is before this update's (delayed) actor step.
    every_update = config.target_update == "every_update"
    if every_update:
        actor_target_params = polyak(state.actor_params, state.actor_target_params, config.tau)
        critic_target_params = polyak(critic_params, state.critic_target_params, config.tau)
    else:
        actor_target_params, critic_target_params = state.actor_target_params, state.critic_target_params

    # Steps 13-15, every policy_freq-th update: actor step on Q1 (or min Q), then (target_update="delayed",
    # Fujimoto's) Polyak on all targets.
    def actor_and_targets(_: None) -> tuple[Any, ...]:
        (loss, actor_q), grads = jax.value_and_grad(losses.actor_loss, argnums=1, has_aux=True)(
            config, state.actor_params, critic_params, batch.obs)
        updates, opt_state = actor_optimizer(config).update(grads, state.actor_opt_state, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        if every_update:
            targets = (actor_target_params, critic_target_params)
        else:
            targets = (polyak(actor_params, actor_target_params, config.tau),
                       polyak(critic_params, critic_target_params, config.tau))
        return (actor_params, opt_state, *targets, loss, actor_q, grads)

    def unchanged(_: None) -> tuple[Any, ...]:
        zero_grads = jax.tree_util.tree_map(jnp.zeros_like, state.actor_params)
        return (state.actor_params, state.actor_opt_state, actor_target_params,
                critic_target_params, jnp.zeros((), critic_loss.dtype), jnp.zeros_like(current_qs[0]),
                zero_grads)

    if config.policy_freq == 1:
        actor_updated = jnp.ones((), bool)
        outputs = actor_and_targets(None)
    else:
        actor_updated = it % config.policy_freq == 0
        outputs = jax.lax.cond(actor_updated, actor_and_targets, unchanged, None)
    (actor_params, actor_opt_state, actor_target_params, critic_target_params,
     actor_loss, actor_q, actor_grads) = outputs

    new_state = TrainState(actor_params, critic_params, actor_target_params, critic_target_params,
                           actor_opt_state, critic_opt_state, it)
    metrics = {
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,           # 0 where the actor was not updated
        "actor_updated": actor_updated,
        "q_mean": jnp.mean(current_qs[0]),
    }
    internals = {
        "target_action": next_action,
        "target_q": y,
        "current_q": current_qs,
        "critic_grads": critic_grads,
        "actor_q": actor_q,                 # Q1 (or min Q)(s, mu(s)) of the actor step (zeros where skipped)
        "actor_grads": actor_grads,
    }
    return new_state, metrics, internals


def update(config: TD3Config, state: TrainState, batch: Batch, target_noise: ArrayLike) -> tuple[TrainState, Metrics]:
    """One TD3/DDPG update: ``(state, batch, N(0,1) noise) -> (state, metrics)``."""
    new_state, metrics, _ = update_with_internals(config, state, batch, target_noise)
    return new_state, metrics


def update_from_key(config: TD3Config, state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    """``update`` drawing its target-policy noise from ``key``."""
    return update(config, state, batch, sample_target_noise(key, batch.action))
