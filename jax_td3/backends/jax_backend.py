"""The JAX backend: ``update.update`` jitted once for the run's config (no recompilation per step).

``update_many`` is the fast path of ``--updates-per-call K``: K (sample, update)
steps in one compiled ``replay.multi_update`` over a device copy of the replay
buffer, with indices and target noise drawn from a JAX key. That path is
statistically equal to the per-step path, not bitwise (different random streams).

Overlap (``--overlap``): ``dispatch_many`` starts the same K updates without waiting for
them (JAX dispatch is asynchronous; the metrics stay on the device until
``fetch_metrics``), and ``hold_acting_params`` makes ``act`` and ``act_batch`` use the
actor parameters of the moment, not those of the updates in flight, so acting never
waits on the device. While parameters are held the fused updates do not donate their
input state (a donated state's buffers, the held actor among them, would be invalid).
A device runs one program at a time, so the held parameters act on another device when
there is one (``_acting_device``: the host CPU next to an accelerator, or a second CPU
device); on a machine with one CPU device an action still waits for the block in flight.
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
    """Jitted (update, act, multi_update, act_batch, multi_update_keep) for one config, shared by every backend
    of that config (jit caches by function object, so two trainers with the same config compile once).
    ``multi_update_keep`` is ``multi_update`` without donating the input state (used while acting
    parameters are held; compiled only if called)."""
    options = compiler_options()
    update_fn = jax.jit(functools.partial(update, config), donate_argnums=0, compiler_options=options)
    act_fn = jax.jit(lambda params, obs: actor_action(config, params, obs[None])[0], compiler_options=options)
    act_batch_fn = jax.jit(functools.partial(actor_action, config), compiler_options=options)
    multi_update_fn = jax.jit(functools.partial(replay.multi_update, config), static_argnums=3, donate_argnums=0,
                              compiler_options=options)
    multi_update_keep_fn = jax.jit(functools.partial(replay.multi_update, config), static_argnums=3,
                                   compiler_options=options)
    return update_fn, act_fn, multi_update_fn, act_batch_fn, multi_update_keep_fn


class JaxBackend:
    name = "jax"

    def __init__(self, config, initial_state: TrainState, dtype: str = "float32"):
        enable_dtype(dtype)
        self.config = config
        self.dtype = np.dtype(dtype)
        self._state = None
        self._acting_params = None  # held actor parameters (overlap); None: act with the current state's
        self.load_state(initial_state)
        (self._update, self._act, self._multi_update, self._act_batch,
         self._multi_update_keep) = compiled_functions(config)
        self._add = jax.jit(replay.replay_add, donate_argnums=0)
        self._replay: replay.ReplayState | None = None
        self._compiling = None  # the thread of compile_many_ahead, until the first fused call

    def act(self, obs: np.ndarray) -> np.ndarray:
        # A NumPy argument goes through jit's C++ fast path; jnp.asarray first would cost
        # ~0.35 ms per call in Python dispatch, more than the 256-256 forward itself.
        action = self._act(self._acting(), np.asarray(obs, self.dtype))
        return np.asarray(action, np.float64)

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        actions = self._act_batch(self._acting(), np.asarray(obs, self.dtype))
        return np.asarray(actions, np.float64)

    # -- what acting uses: the current actor, or parameters held while updates run -------
    def _acting(self):
        return self._state.actor_params if self._acting_params is None else self._acting_params

    def hold_acting_params(self, params=None) -> None:
        """From now on ``act``/``act_batch`` use these actor parameters (default: the current state's),
        whatever later updates do, until ``release_acting_params`` or ``load_state``."""
        if params is None:
            params = self._state.actor_params  # a reference: later fused updates do not donate it
        else:
            params = jax.device_put(jax.tree_util.tree_map(np.array, params))
        device = self._acting_device()
        self._acting_params = params if device is None else jax.device_put(params, device)

    def _acting_device(self):
        """Where held parameters act: a device other than the learner's if there is one (the host CPU next
        to an accelerator; a second CPU device, e.g. with XLA_FLAGS=--xla_force_host_platform_device_count=2),
        else None. A device runs one program at a time: on the learner's own device an action waits for the
        updates in flight (measured on XLA:CPU: the first action after a dispatch took the whole block)."""
        if not hasattr(self, "_acting_device_cache"):
            learner = jax.tree_util.tree_leaves(self._state)[0].devices()
            try:
                others = [d for d in jax.local_devices(backend="cpu") if d not in learner]
            except RuntimeError:
                others = []
            self._acting_device_cache = others[0] if others else None
        return self._acting_device_cache

    def release_acting_params(self) -> None:
        """Act with the current state's actor again."""
        self._acting_params = None

    def acting_params(self):
        """The held actor parameters as numpy arrays (a copy), or None when acting uses the current state."""
        if self._acting_params is None:
            return None
        return jax.tree_util.tree_map(lambda x: np.array(x), jax.device_get(self._acting_params))

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        if self._acting_params is not None:
            raise RuntimeError("per-step updates donate the state; release the held acting parameters first")
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
        return self.fetch_metrics(self.dispatch_many(key, num_updates))

    def compile_many_ahead(self, capacity: int, num_updates: int, key: jax.Array, keep_state: bool = False):
        """Compile the fused call of ``num_updates`` updates over a device replay of ``capacity`` slots in a
        background thread, so that the compilation (about 2 s on a CPU) overlaps the warm-up steps instead
        of holding up the first fused call; that call then finds it in jit's cache. ``keep_state``: the
        variant that does not donate the state (``--overlap``). Returns the thread (already started)."""
        import threading

        def spec(x):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype)

        widths = (self.config.obs_dim, self.config.act_dim, self.config.obs_dim, 1, 1)
        replay_spec = replay.ReplayState(*(jax.ShapeDtypeStruct((capacity, w), self.dtype) for w in widths),
                                         jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))
        multi_update = self._multi_update_keep if keep_state else self._multi_update
        args = (jax.tree_util.tree_map(spec, self._state), replay_spec, spec(key), num_updates)

        def compile_it():
            try:
                multi_update.lower(*args).compile()
            except Exception:  # noqa: BLE001  (only a head start: the first call compiles if this failed)
                pass

        thread = threading.Thread(target=compile_it, name="jax-td3-compile", daemon=True)
        thread.start()
        self._compiling = thread
        return thread

    def dispatch_many(self, key: jax.Array, num_updates: int) -> dict:
        """``update_many`` without waiting: returns the metrics as device arrays (``fetch_metrics`` reads
        them). The state stays donated unless acting parameters are held."""
        if self._compiling is not None:  # a compilation started ahead: wait for it rather than compile twice
            self._compiling.join()
            self._compiling = None
        multi_update = self._multi_update if self._acting_params is None else self._multi_update_keep
        self._state, metrics = multi_update(self._state, self._replay, key, num_updates)
        return {name: metrics[name] for name in UPDATE_METRICS}

    @staticmethod
    def fetch_metrics(metrics: dict) -> list[dict[str, float]]:
        """The per-update metrics of a ``dispatch_many`` (device or numpy arrays), waiting for them."""
        metrics = jax.device_get(metrics)  # one transfer for all
        count = len(metrics[UPDATE_METRICS[0]])
        return [{name: float(metrics[name][i]) for name in UPDATE_METRICS} for i in range(count)]

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
        """Replace the train state; acting uses the new state's actor (held parameters are released)."""
        self._acting_params = None
        # Own copies, one device buffer per leaf: the update donates its input state, and a fresh
        # state's targets alias its params. Going through numpy avoids compiling a copy per shape.
        host = jax.tree_util.tree_map(np.array, jax.device_get(state))
        if self._state is not None:
            host = jax.tree_util.tree_map(lambda t, x: x.astype(t.dtype), self._state, host)
        self._state = jax.device_put(host)
