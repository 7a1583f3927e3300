"""The JAX backend: ``update.update`` jitted once for the run's config (no recompilation per step).

``update_many`` is the fast path of ``--updates-per-call K``: K (sample, update)
steps in one compiled ``replay.multi_update`` over a device copy of the replay
buffer, with indices and target noise drawn from a JAX key. That path is
statistically equal to the per-step path, not bitwise (different random streams).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_td3 import replay
from jax_td3.backends.base import enable_dtype
from jax_td3.networks import actor_action
from jax_td3.update import Batch, TrainState, update


class JaxBackend:
    name = "jax"

    def __init__(self, config, initial_state: TrainState, dtype: str = "float32"):
        enable_dtype(dtype)
        self.config = config
        self.dtype = np.dtype(dtype)
        # Own copies: the update donates its input state, and a fresh state's targets alias its params.
        self._state = jax.tree_util.tree_map(jnp.array, initial_state)
        self._update = jax.jit(functools.partial(update, config), donate_argnums=0)
        self._act = jax.jit(lambda params, obs: actor_action(config, params, obs[None])[0])
        self._multi_update = jax.jit(functools.partial(replay.multi_update, config),
                                     static_argnums=2, donate_argnums=0)
        self._add = jax.jit(replay.replay_add, donate_argnums=0)
        self._replay: replay.ReplayState | None = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        action = self._act(self._state.actor_params, jnp.asarray(obs, self.dtype))
        return np.asarray(action, np.float64)

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        batch = Batch(*(jnp.asarray(x, self.dtype) for x in batch))
        self._state, metrics = self._update(self._state, batch, jnp.asarray(target_noise, self.dtype))
        return {"critic_loss": float(metrics["critic_loss"]), "actor_loss": float(metrics["actor_loss"]),
                "actor_updated": float(metrics["actor_updated"])}

    # -- fast path: device replay + K fused updates ---------------------------------------
    def sync_replay(self, capacity: int, new_transitions: Batch) -> None:
        """Append host transitions to the device replay copy (made on first use)."""
        if self._replay is None:
            self._replay = replay.replay_init(capacity, new_transitions.obs.shape[1],
                                              new_transitions.action.shape[1], self.dtype)
        self._replay = self._add(self._replay, Batch(*(jnp.asarray(x, self.dtype) for x in new_transitions)))

    def update_many(self, key: jax.Array, num_updates: int) -> list[dict[str, float]]:
        """``num_updates`` updates in one compiled call, sampling the device replay with ``key``."""
        self._state, metrics = self._multi_update(self._state, self._replay, key, num_updates)
        metrics = jax.device_get(metrics)
        return [{"critic_loss": float(metrics["critic_loss"][i]), "actor_loss": float(metrics["actor_loss"][i]),
                 "actor_updated": float(metrics["actor_updated"][i])} for i in range(num_updates)]

    def drop_replay(self) -> None:
        """Forget the device copy (it is rebuilt from the host buffer, e.g. after loading a checkpoint)."""
        self._replay = None

    # -- state ----------------------------------------------------------------------------
    def state(self) -> TrainState:
        return jax.tree_util.tree_map(lambda x: np.array(x), jax.device_get(self._state))

    def load_state(self, state: TrainState) -> None:
        template = self._state
        self._state = jax.tree_util.tree_map(lambda t, x: jnp.array(x, t.dtype), template, state)
