"""The interface the training loop talks to; a backend holds only the learner.

The loop owns everything else (environments, replay buffer, all randomness), so two
backends fed the same batches and the same target-policy noise compute the same run.
Train states cross this interface in the JAX layout (``update.TrainState``) with
numpy leaves, so either backend can load what the other saved.

Two protocols, checked with ``isinstance``: ``Backend``, what every backend does (act, one
update on a host batch, the train state), and ``FusedBackend``, a ``Backend`` that also runs
blocks of updates on a device copy of the replay buffer (``updates_per_call`` > 1, ``overlap``).
The loop uses nothing else; a backend without the fused calls is refused by ``require_fused`` in
one line naming the backend and the option. ``backends.jax_backend.JaxBackend`` is a
``FusedBackend``; ``backends.torch_backend.TorchBackend`` a ``Backend``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from jax_td3.dtypes import enable_dtype
from jax_td3.errors import CheckpointError, ConfigError
from jax_td3.update import Batch, TrainState

# Metrics every backend reports for one update, as Python floats.
UPDATE_METRICS = ("critic_loss", "actor_loss", "actor_updated")


@runtime_checkable
class Backend(Protocol):
    """What the loop asks of every backend."""

    name: str
    dtype: np.dtype

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's action for one observation, shape (act_dim,), float64."""

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's actions for a batch of observations (B, obs_dim): (B, act_dim), float64.
        Row i equals ``act(obs[i])`` (one batched forward instead of B)."""

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        """One update on a host batch (numpy, ``Batch`` layout) with N(0, 1) target-policy noise.

        Returns ``UPDATE_METRICS`` (``actor_loss`` is 0 where the actor was not updated).
        """

    def state(self) -> TrainState:
        """The train state in the JAX layout with numpy leaves (a copy)."""

    def load_state(self, state: TrainState) -> None:
        """Replace the train state (JAX layout, numpy or JAX leaves); acting uses its actor."""


@runtime_checkable
class FusedBackend(Backend, Protocol):
    """A backend that also runs K updates in one call on a device copy of the replay buffer, sampling it
    with a key of its own (``updates_per_call`` K > 1), without waiting for them (``overlap``)."""

    @property
    def has_replay(self) -> bool:
        """Whether the device replay copy exists (``load_replay`` made it and ``drop_replay`` did not drop it)."""

    def load_replay(self, buffer_state: dict) -> None:
        """Make the device replay a copy of a host ring (``ReplayBuffer.state_dict()``), slot for slot."""

    def sync_replay(self, new_transitions: Batch) -> None:
        """Append host transitions to the device replay copy."""

    def drop_replay(self) -> None:
        """Forget the device copy (the next fused call rebuilds it from the host buffer)."""

    def expect_compiled(self, thread: Any) -> None:
        """The first fused call waits for this thread compiling it ahead, rather than compile twice."""

    def update_many(self, key: Any, num_updates: int) -> list[dict[str, float]]:
        """``num_updates`` updates in one call, sampling the device replay with ``key``; their metrics."""

    def dispatch_many(self, key: Any, num_updates: int) -> dict:
        """``update_many`` without waiting: the metrics as device arrays, for ``fetch_metrics``."""

    def fetch_metrics(self, metrics: dict) -> list[dict[str, float]]:
        """The per-update metrics of a ``dispatch_many``, waiting for them."""

    def hold_acting_params(self, params: Any = None) -> None:
        """Act with these actor parameters (default: the current state's) until released or a state is loaded."""

    def release_acting_params(self) -> None:
        """Act with the current state's actor again."""

    def acting_params(self) -> Any:
        """The held actor parameters as numpy arrays (a copy), or None when acting uses the current state."""


def require_fused(backend: Backend, option: str) -> FusedBackend:
    """``backend`` as a ``FusedBackend``; a one-line ConfigError naming it and ``option`` if it is not one."""
    if not isinstance(backend, FusedBackend):
        raise ConfigError(f"backend {backend.name!r} does not run fused updates on a device replay, which "
                          f"`{option}` needs; use backend 'jax'")
    return backend


# -- the train state as a flat list of arrays (what checkpoints store) -------------------

def pack_train_state(state) -> list[np.ndarray]:
    """The leaves of a JAX-layout train state, in ``jax.tree_util`` order, as numpy arrays."""
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


def unpack_train_state(config, dtype: str, leaves: list[np.ndarray]):
    """Rebuild a train state (numpy leaves) for ``config``; CheckpointError if the leaves do not fit."""
    import jax

    from jax_td3.update import init_train_state

    enable_dtype(dtype)
    template = jax.eval_shape(lambda: init_train_state(config, jax.random.PRNGKey(0), np.dtype(dtype)))
    expected = jax.tree_util.tree_leaves(template)
    if len(leaves) != len(expected):
        raise CheckpointError(f"checkpoint train state has {len(leaves)} arrays; {config.algo} with hidden "
                              f"{config.hidden} needs {len(expected)} (another algorithm or network?)")
    for i, (have, want) in enumerate(zip(leaves, expected)):
        if tuple(np.shape(have)) != tuple(want.shape):
            raise CheckpointError(f"checkpoint train state array {i} has shape {tuple(np.shape(have))}, "
                                  f"expected {tuple(want.shape)} (other network shapes?)")
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(x, w.dtype) for x, w in zip(leaves, expected)])
