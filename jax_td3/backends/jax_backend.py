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
from jax_td3.backends.base import UPDATE_METRICS
from jax_td3.dtypes import enable_dtype
from jax_td3.networks import actor_action
from jax_td3.update import Batch, TrainState, update
from jax_td3.xla_options import compiler_options


@functools.lru_cache(maxsize=16)
def compiled_functions(config):
    """Jitted (update, act, multi_update, act_batch) for one config, shared by every backend of that config
    (jit caches by function object, so two trainers with the same config compile once)."""
    options = compiler_options()
    update_fn = jax.jit(functools.partial(update, config), donate_argnums=0, compiler_options=options)
    act_fn = jax.jit(lambda params, obs: actor_action(config, params, obs[None])[0], compiler_options=options)
    act_batch_fn = jax.jit(functools.partial(actor_action, config), compiler_options=options)
    multi_update_fn = jax.jit(functools.partial(replay.multi_update, config), static_argnums=3, donate_argnums=0,
                              compiler_options=options)
    return update_fn, act_fn, multi_update_fn, act_batch_fn


class JaxBackend:
    name = "jax"

    def __init__(self, config, initial_state: TrainState, dtype: str = "float32"):
        enable_dtype(dtype)
        self.config = config
        self.dtype = np.dtype(dtype)
        self._state = None
        self.load_state(initial_state)
        self._update, self._act, self._multi_update, self._act_batch = compiled_functions(config)
        self._add = jax.jit(replay.replay_add, donate_argnums=0)
        self._replay: replay.ReplayState | None = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        # A NumPy argument goes through jit's C++ fast path; jnp.asarray first would cost
        # ~0.35 ms per call in Python dispatch, more than the 256-256 forward itself.
        action = self._act(self._state.actor_params, np.asarray(obs, self.dtype))
        return np.asarray(action, np.float64)

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        actions = self._act_batch(self._state.actor_params, np.asarray(obs, self.dtype))
        return np.asarray(actions, np.float64)

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        batch = Batch(*(np.asarray(x, self.dtype) for x in batch))  # NumPy in: jit's fast path
        self._state, metrics = self._update(self._state, batch, np.asarray(target_noise, self.dtype))
        metrics = jax.device_get(metrics)  # one transfer for all scalars
        return {name: float(metrics[name]) for name in UPDATE_METRICS}

    # -- fast path: device replay + K fused updates ---------------------------------------
    @property
    def has_replay(self) -> bool:
        return self._replay is not None

    def sync_replay(self, new_transitions: Batch) -> None:
        """Append host transitions to the device replay copy (made by ``load_replay``)."""
        self._replay = self._add(self._replay, Batch(*(np.asarray(x, self.dtype) for x in new_transitions)))

    def update_many(self, key: jax.Array, num_updates: int) -> list[dict[str, float]]:
        """``num_updates`` updates in one compiled call, sampling the device replay with ``key``."""
        self._state, metrics = self._multi_update(self._state, self._replay, key, num_updates)
        metrics = jax.device_get(metrics)
        return [{name: float(metrics[name][i]) for name in UPDATE_METRICS} for i in range(num_updates)]

    def load_replay(self, buffer_state: dict) -> None:
        """Make the device replay a copy of a host ring (``ReplayBuffer.state_dict()``), slot for slot."""
        capacity, size = int(buffer_state["capacity"]), int(buffer_state["size"])
        fields = []
        for name in Batch._fields:
            filled = np.asarray(buffer_state[name], self.dtype)
            ring = np.zeros((capacity, filled.shape[1]), self.dtype)
            ring[:size] = filled
            fields.append(jnp.asarray(ring))
        self._replay = replay.ReplayState(*fields, jnp.asarray(int(buffer_state["position"]), jnp.int32),
                                          jnp.asarray(size, jnp.int32))

    def drop_replay(self) -> None:
        """Forget the device copy (it is rebuilt from the host buffer, e.g. after loading a checkpoint)."""
        self._replay = None

    # -- state ----------------------------------------------------------------------------
    def state(self) -> TrainState:
        return jax.tree_util.tree_map(lambda x: np.array(x), jax.device_get(self._state))

    def load_state(self, state: TrainState) -> None:
        # Own copies, one device buffer per leaf: the update donates its input state, and a fresh
        # state's targets alias its params. Going through numpy avoids compiling a copy per shape.
        host = jax.tree_util.tree_map(np.array, jax.device_get(state))
        if self._state is not None:
            host = jax.tree_util.tree_map(lambda t, x: x.astype(t.dtype), self._state, host)
        self._state = jax.device_put(host)
