"""The small interface the training loop talks to; a backend holds only the learner.

The loop owns everything else (environments, replay buffer, all randomness), so two
backends fed the same batches and the same target-policy noise compute the same run.
Train states cross this interface in the JAX layout (``update.TrainState``) with
numpy leaves, so either backend can load what the other saved.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from jax_td3.dtypes import enable_dtype
from jax_td3.errors import CheckpointError
from jax_td3.update import Batch, TrainState

# Metrics every backend reports for one update, as Python floats.
UPDATE_METRICS = ("critic_loss", "actor_loss", "actor_updated")


class Backend(Protocol):
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
        """Replace the train state (JAX layout, numpy or JAX leaves)."""


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
