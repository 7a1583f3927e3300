"""The JAX backend: ``update.update`` jitted once for the run's config (no recompilation per step).

``update_many`` is the fast path of ``--updates-per-call K``: K (sample, update)
steps in one compiled ``replay.multi_update`` over a device copy of the replay
buffer, with indices and target noise drawn from a JAX key. That path is
statistically equal to the per-step path, not bitwise (different random streams).

Acting runs on the host: ``act`` and ``act_batch`` evaluate ``networks.actor_action_numpy`` on a
NumPy copy of the actor, taken once after the parameters change. An environment step's action is a
tiny forward (one row through 256-256: about 66,000 multiplies); through ``jit`` on a busy 2-core
XLA:CPU it took 55-100 us (dispatch, a small XLA program, the wait for its result), in NumPy 8-17 us
(``act`` whole: 18 us), plus about 15 us to copy a 256-256 actor after each update call. Acting also
no longer waits behind a block of updates running on the same device (``--overlap``), and compiles
nothing. NumPy rounds its matrix products differently from XLA in the last bits, so actions are
NumPy's (tested against ``actor_action`` to float tolerance); every path of the Gymnasium loop acts
this way, so the per-step and fused paths still act alike bit for bit.

Overlap (``--overlap``): ``dispatch_many`` starts the same K updates without waiting for
them (JAX dispatch is asynchronous; the metrics stay on the device until
``fetch_metrics``), and ``hold_acting_params`` makes ``act`` and ``act_batch`` use a host copy of
the actor of the moment, not that of the updates in flight, so acting never waits on the device.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import DTypeLike

from jax_td3 import replay
from jax_td3.backends.base import UPDATE_METRICS, initial_train_state, is_fasttd3
from jax_td3.dtypes import float_dtype
from jax_td3.networks import actor_action_numpy
from jax_td3.update import Batch, TrainState, init_train_state, update
from jax_td3.xla_options import compiler_options

if TYPE_CHECKING:  # for annotations only
    from jax_td3.config import TD3Config


def compiled_functions(config: TD3Config) -> tuple[jax.stages.Wrapped, jax.stages.Wrapped]:
    """Jitted (update, multi_update) for one config, shared by every backend of that config (jit caches by
    function object, so two trainers with the same config compile once)."""
    options = compiler_options()   # read now: it depends on environment variables
    return _compiled_functions(config, tuple(sorted((options or {}).items())))


@functools.lru_cache(maxsize=16)
def _compiled_functions(config: TD3Config, option_items: tuple) -> tuple[jax.stages.Wrapped, jax.stages.Wrapped]:
    options = dict(option_items) or None
    if is_fasttd3(config):
        from jax_td3.fasttd3.update import update as fasttd3_update

        algorithm_update: Any = fasttd3_update
    else:
        algorithm_update = update
    update_fn = jax.jit(functools.partial(algorithm_update, config), donate_argnums=0, compiler_options=options)
    multi_update_fn = jax.jit(functools.partial(replay.multi_update, config), static_argnums=3, donate_argnums=0,
                              compiler_options=options)
    return update_fn, multi_update_fn


@functools.lru_cache(maxsize=16)
def _initial_program(config: TD3Config, dtype: np.dtype) -> jax.stages.Wrapped:
    def initial(seed: jax.Array) -> tuple[TrainState, jax.Array]:
        init_key, fused_key = jax.random.split(jax.random.PRNGKey(seed))
        return initial_train_state(config, init_key, dtype), fused_key
    return jax.jit(initial)


def initial_state_and_key(config: TD3Config, seed: int, dtype: DTypeLike) -> tuple[TrainState, jax.Array]:
    """(fresh train state from ``PRNGKey(seed)``'s first half, the second half for the fused path's draws), as
    one compiled program: the key split done eagerly would compile three small programs of its own (0.2 s).
    The seed is an argument, not a constant, so one program (and one on-disk cache entry) serves every seed."""
    return _initial_program(config, np.dtype(dtype))(seed)


def compile_many_ahead(config: TD3Config, dtype: DTypeLike, capacity: int, num_updates: int) -> threading.Thread:
    """Compile the fused call of ``num_updates`` updates over a device replay of ``capacity`` slots in a
    background thread and return the thread (started). Only shapes are needed, so it can start before the
    initial state exists: the compilation (about 2 s on a CPU) then overlaps building the trainer, the
    first evaluation and the warm-up steps instead of holding up the first fused call, which finds it in
    jit's cache. Hand the thread to ``JaxBackend.expect_compiled`` so that the first call waits for it."""
    dtype = np.dtype(dtype)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    state = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),  # no weak types: as loaded
                                   jax.eval_shape(functools.partial(init_train_state, config, dtype=dtype), key))
    widths = (config.obs_dim, config.act_dim, config.obs_dim, 1, 1)
    replay_spec = replay.ReplayState(*(jax.ShapeDtypeStruct((capacity, w), dtype) for w in widths),  # type: ignore[call-arg, arg-type]  # shapes standing in for arrays, to lower
                                     jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))
    multi_update = compiled_functions(config)[1]
    x64 = bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]  # JAX's stubs omit its flags; the caller's, perhaps scoped to its thread: a new thread would not see it

    def compile_it() -> None:
        try:
            with jax.enable_x64(x64):
                multi_update.lower(state, replay_spec, key, num_updates).compile()
                split_key.lower(key).compile()
        except Exception:  # noqa: BLE001  (only a head start: the first call compiles if this failed)
            pass

    thread = threading.Thread(target=compile_it, name="jax-td3-compile", daemon=True)
    thread.start()
    return thread


@jax.jit
def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jax.random.split(key)`` unpacked into its two keys, as one compiled program (split then unpack,
    eagerly, compile two small programs of their own: 0.13 s)."""
    carried, used = jax.random.split(key)
    return carried, used


def normalizer_update_fn() -> Any:
    """FastTD3's ``normalizer_update`` (imported when a fasttd3 backend is made)."""
    from jax_td3.fasttd3.normalizer import normalizer_update

    return normalizer_update


def normalize_numpy(statistics: Any, obs: np.ndarray) -> np.ndarray:
    """FastTD3's ``normalizer.normalize`` in NumPy on host copies of the statistics (what acting uses, as
    ``actor_action_numpy`` is the actor's forward): (obs - mean) / (sqrt(var) + EPS)."""
    from jax_td3.fasttd3.normalizer import EPS

    mean, var = np.asarray(statistics.mean), np.asarray(statistics.var)
    return ((obs - mean) / (np.sqrt(var) + np.asarray(EPS, var.dtype))).astype(obs.dtype)


def _host_copy(tree: Any) -> Any:
    """NumPy copies (not views: the next update may donate the device buffers)."""
    return jax.tree_util.tree_map(np.array, jax.device_get(tree))


class JaxBackend:
    name = "jax"

    def __init__(self, config: TD3Config, initial_state: TrainState, dtype: str = "float32"):
        float_dtype(dtype)
        self.config = config
        self.dtype = np.dtype(dtype)
        self._train_state: TrainState | None = None
        self._host_actor: Any = None     # host copy of the current state's actor, taken when first acted with
        self._host_normalizer: Any = None  # fasttd3: host copy of the observation statistics, likewise
        self._fasttd3 = is_fasttd3(config)
        self._observe = jax.jit(normalizer_update_fn()) if self._fasttd3 else None
        self._acting_params: Any = None  # held host actor (overlap); None: act with the current state's
        self.load_state(initial_state)
        self._update, self._multi_update = compiled_functions(config)
        self._add = jax.jit(replay.replay_add, donate_argnums=0)
        self._replay: replay.ReplayState | None = None
        self._compiling: threading.Thread | None = None  # the thread of compile_many_ahead, until the first fused call

    @property
    def _state(self) -> TrainState:
        assert self._train_state is not None  # load_state in __init__ sets it
        return self._train_state

    @_state.setter
    def _state(self, state: TrainState) -> None:
        self._train_state = state
        self._host_actor = None  # new parameters: copy again when next acting
        self._host_normalizer = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self._policy(np.asarray(obs, self.dtype)[None])[0], np.float64)

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self._policy(np.asarray(obs, self.dtype)), np.float64)

    def _policy(self, obs: np.ndarray) -> np.ndarray:
        """The acting actor's actions for observations (B, obs_dim) in the state's dtype (fasttd3: normalised
        first, with the statistics as they are)."""
        if self._fasttd3 and self.config.obs_normalization:
            obs = normalize_numpy(self._normalizer(), obs)
        return actor_action_numpy(self.config, self._acting(), obs)

    def observe(self, obs: np.ndarray) -> None:
        """fasttd3: fold ``obs`` (N, obs_dim) into the state's observation statistics (one small compiled call);
        a no-op for the other algorithms."""
        if self._observe is None or not self.config.obs_normalization:
            return
        state: Any = self._state   # a FastTD3 train state
        statistics = self._observe(state.obs_normalizer, np.asarray(obs, self.dtype))
        self._train_state = state._replace(obs_normalizer=statistics)   # the actor's host copy stays
        self._host_normalizer = None

    def _normalizer(self) -> Any:
        """Host copy of the state's observation statistics (fasttd3), taken when first needed."""
        if self._host_normalizer is None:
            state: Any = self._state   # a FastTD3 train state
            self._host_normalizer = _host_copy(state.obs_normalizer)
        return self._host_normalizer

    # -- what acting uses: the current actor, or parameters held while updates run -------
    def _acting(self) -> Any:
        if self._acting_params is not None:
            return self._acting_params
        if self._host_actor is None:
            self._host_actor = _host_copy(self._state.actor_params)  # waits for the updates in flight
        return self._host_actor

    def hold_acting_params(self, params: Any = None) -> None:
        """From now on ``act``/``act_batch`` use these actor parameters (default: the current state's),
        whatever later updates do, until ``release_acting_params`` or ``load_state``."""
        if params is None:
            self._acting_params = None
            self._acting_params = self._acting()  # the current host copy: replaced, never changed, by updates
        else:
            self._acting_params = _host_copy(params)

    def release_acting_params(self) -> None:
        """Act with the current state's actor again."""
        self._acting_params = None

    def acting_params(self) -> Any:
        """The held actor parameters as numpy arrays (a copy), or None when acting uses the current state."""
        if self._acting_params is None:
            return None
        return _host_copy(self._acting_params)

    def update(self, batch: Any, target_noise: np.ndarray) -> dict[str, float]:
        batch = type(batch)(*(np.asarray(x, self.dtype) for x in batch))  # NumPy in: jit's fast path
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

    def expect_compiled(self, thread: threading.Thread) -> None:
        """The first fused call waits for this ``compile_many_ahead`` thread rather than compile twice."""
        self._compiling = thread

    def dispatch_many(self, key: jax.Array, num_updates: int) -> dict:
        """``update_many`` without waiting: returns the metrics as device arrays (``fetch_metrics`` reads
        them). The input state is donated (held acting parameters are host copies)."""
        if self._compiling is not None:  # a compilation started ahead: wait for it rather than compile twice
            self._compiling.join()
            self._compiling = None
        self._state, metrics = self._multi_update(self._state, self._replay, key, num_updates)
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
        fields += [jnp.asarray(int(buffer_state["position"]), jnp.int32), jnp.asarray(size, jnp.int32)]
        self._replay = replay.ReplayState(*fields)

    def drop_replay(self) -> None:
        """Forget the device copy (it is rebuilt from the host buffer, e.g. after loading a checkpoint)."""
        self._replay = None

    # -- state ----------------------------------------------------------------------------
    def state(self) -> TrainState:
        return _host_copy(self._state)

    def load_state(self, state: TrainState) -> None:
        """Replace the train state; acting uses the new state's actor (held parameters are released)."""
        self._acting_params = None
        # Own copies, one device buffer per leaf: the update donates its input state, and a fresh
        # state's targets alias its params. Going through numpy avoids compiling a copy per shape.
        host = _host_copy(state)
        if self._train_state is not None:
            host = jax.tree_util.tree_map(lambda t, x: x.astype(t.dtype), self._state, host)
        self._state = jax.device_put(host)
