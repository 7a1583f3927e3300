"""The host replay buffer: a numpy ring of fixed capacity, sampled uniformly with replacement.

The training loop owns it (not the backend), so both backends learn from the
same transitions; sampling takes its indices from the loop's generator, or
``gather`` takes indices drawn elsewhere.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jax_td3.update import Batch

FIELDS = Batch._fields  # ("obs", "action", "next_obs", "reward", "not_done")


class RingSampling:
    """What every host ring samples the same way: ``arrays`` (one per field of ``BATCH``, slot first),
    ``size`` filled slots, ``position`` the next slot written, ``capacity``."""

    BATCH: ClassVar[type[NamedTuple]]
    arrays: dict[str, np.ndarray]
    capacity: int
    position: int
    size: int

    def sample_indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """``batch_size`` slots drawn uniformly with replacement from the filled part."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.size, size=batch_size)

    def gather(self, indices: np.ndarray) -> Any:
        return self.BATCH(*(self.arrays[name][indices] for name in self.BATCH._fields))

    def sample(self, rng: np.random.Generator, batch_size: int) -> Any:
        return self.gather(self.sample_indices(rng, batch_size))

    def last(self, count: int) -> Any:
        """The ``count`` most recently written transitions, oldest first."""
        return self.gather((self.position - count + np.arange(count)) % self.capacity)


class ReplayBuffer(RingSampling):
    """Ring buffer of ``(obs, action, next_obs, reward, not_done)``; reward/not_done stored as (N, 1)."""

    BATCH = Batch

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, dtype: DTypeLike = np.float32):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.dtype = np.dtype(dtype)
        widths = dict(obs=obs_dim, action=act_dim, next_obs=obs_dim, reward=1, not_done=1)
        self.arrays = {name: np.zeros((self.capacity, widths[name]), self.dtype) for name in FIELDS}
        self.position = 0   # where the next transition is written
        self.size = 0       # how many slots are filled

    def __len__(self) -> int:
        return self.size

    def add(self, obs: ArrayLike, action: ArrayLike, next_obs: ArrayLike, reward: float, not_done: float) -> int:
        """Store one transition (overwriting the oldest once full); returns the slot written."""
        slot = self.position
        values = dict(obs=obs, action=action, next_obs=next_obs, reward=reward, not_done=not_done)
        for name in FIELDS:
            self.arrays[name][slot] = np.reshape(values[name], -1)
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Filled part only (in insertion order is not needed: slots are kept as they are)."""
        return {"capacity": self.capacity, "position": self.position, "size": self.size,
                **{name: self.arrays[name][: self.size].copy() for name in FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay buffer capacity {state['capacity']} in the checkpoint differs from "
                             f"{self.capacity}")
        size = int(state["size"])
        for name in FIELDS:
            stored = np.asarray(state[name])
            if stored.shape != (size, self.arrays[name].shape[1]):
                raise ValueError(f"replay buffer field {name} has shape {stored.shape}, expected "
                                 f"{(size, self.arrays[name].shape[1])}")
            self.arrays[name][:size] = stored
            self.arrays[name][size:] = 0
        self.position, self.size = int(state["position"]), size
