"""Replay contents for timing updates: random transitions, on the host and as a full device buffer.

An update's cost does not depend on the values it reads, so every timed update samples
from random float32 transitions of the config's sizes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from jax_td3.config import TD3Config

if TYPE_CHECKING:
    from jax_td3.replay import ReplayState

FIELDS = ("obs", "action", "next_obs", "reward", "not_done")   # Fujimoto's order, as Batch and ReplayState
NSTEP_FIELDS = ("obs", "action", "next_obs", "reward", "bootstrap", "discount")   # FastTD3's Batch


def random_transitions(config: TD3Config, count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` random float32 transitions: {field: (count, width)}."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(config.action_low), np.asarray(config.action_high)
    return {
        "obs": rng.standard_normal((count, config.obs_dim), np.float32),
        "action": rng.uniform(low, high, (count, config.act_dim)).astype(np.float32),
        "next_obs": rng.standard_normal((count, config.obs_dim), np.float32),
        "reward": rng.standard_normal((count, 1), np.float32),
        "not_done": (rng.uniform(size=(count, 1)) > 0.005).astype(np.float32),
    }


def random_nstep_transitions(config: TD3Config, count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` random float32 n-step transitions of FastTD3's batch: obs, action, next_obs (count, width);
    reward, bootstrap, discount (count,)."""
    data = random_transitions(config, count, seed)
    rng = np.random.default_rng(seed + 1)
    return {"obs": data["obs"], "action": data["action"], "next_obs": data["next_obs"],
            "reward": data["reward"][:, 0], "bootstrap": data["not_done"][:, 0],
            "discount": np.full(count, config.gamma, np.float32) ** rng.integers(1, 4, count).astype(np.float32)}


def device_replay(data: dict[str, np.ndarray]) -> ReplayState:
    """A full ``jax_td3.replay.ReplayState`` holding ``data`` (built directly: no per-op compilation)."""
    import jax

    from jax_td3.replay import ReplayState

    size = len(data["obs"])
    obs, action, next_obs, reward, not_done = (jax.device_put(np.asarray(data[name], np.float32)) for name in FIELDS)
    return ReplayState(obs, action, next_obs, reward, not_done, position=jax.device_put(np.int32(0)),
                       size=jax.device_put(np.int32(size)))
