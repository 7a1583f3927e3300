"""The small interface the training loop talks to; a backend holds only the learner.

The loop owns everything else (environments, replay buffer, all randomness), so two
backends fed the same batches and the same target-policy noise compute the same run.
Train states cross this interface in the JAX layout (``update.TrainState``) with
numpy leaves, so either backend can load what the other saved.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from jax_td3.update import Batch, TrainState

def enable_dtype(dtype: str) -> None:
    """float64 needs JAX's x64 mode (both backends build JAX-layout states); switch it on before any
    float64 array is made."""
    import jax

    if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


# Metrics every backend reports for one update, as Python floats.
UPDATE_METRICS = ("critic_loss", "actor_loss", "actor_updated")


class Backend(Protocol):
    name: str
    dtype: np.dtype

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's action for one observation, shape (act_dim,), float64."""

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        """One update on a host batch (numpy, ``Batch`` layout) with N(0, 1) target-policy noise.

        Returns ``UPDATE_METRICS`` (``actor_loss`` is 0 where the actor was not updated).
        """

    def state(self) -> TrainState:
        """The train state in the JAX layout with numpy leaves (a copy)."""

    def load_state(self, state: TrainState) -> None:
        """Replace the train state (JAX layout, numpy or JAX leaves)."""
