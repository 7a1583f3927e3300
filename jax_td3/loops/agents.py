"""Many agents in one program: how a train state is laid out under ``vmap`` and over devices.

Agents that train in lockstep share one update counter. It enters ``vmap`` unbatched
(axis ``None``), so that TD3's delayed actor update, a ``lax.cond`` on the counter inside
``update``, stays a real branch; a counter per agent would turn it into a select that
computes both sides. Every other leaf has the agent axis first. The compiled loop, the
benchmarks' vmapped agents and anything else that vmaps the update use these axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jax_td3.errors import ConfigError
from jax_td3.update import TrainState

AGENT_AXIS = "agents"


def train_state_axes(state_type: type = TrainState) -> Any:
    """``in_axes``/``out_axes`` of a train state of stacked agents that share the update counter: TD3's
    ``TrainState`` or another NamedTuple whose last field is the counter (FastTD3's)."""
    # A TrainState of axis numbers, not arrays (what vmap's in_axes takes), hence _make, which is untyped.
    return state_type._make([0] * (len(state_type._fields) - 1) + [None])  # type: ignore[attr-defined]


def agent_mesh(num_agents: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over the agent axis: all devices if they divide K, else the most that do."""
    devices = list(jax.devices() if devices is None else devices)
    count = max(d for d in range(1, len(devices) + 1) if num_agents % d == 0)
    if count < len(devices) and jax.process_count() > 1:
        raise ConfigError(f"{num_agents} agents cannot be split evenly over {len(devices)} devices on "
                          f"{jax.process_count()} hosts; use a multiple of {len(devices)}")
    return Mesh(np.array(devices[:count]), (AGENT_AXIS,))


def global_array(values: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """An array sharded over agents; works on one host and across hosts alike."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])
