"""JAX train state <-> PyTorch reference agent, both ways, with optimizer states.

Composed from the two adapters' layout functions through the neutral state
(``jax_td3.adapters``): ``adapters.jax`` knows the JAX layout, ``adapters.torch_ref``
torch_ref's; this module knows neither. Moving a state across and back is exact
(a copy, no arithmetic), so a run can change framework mid-training and continue
identically.
"""

from __future__ import annotations

from typing import Any

from jax_td3.adapters import jax as jax_layout
from jax_td3.config import TD3Config
from jax_td3.errors import ConversionError, require_torch
from jax_td3.update import TrainState


def _torch_layout() -> Any:
    """``adapters.torch_ref``, imported on first use: PyTorch is an extra (one-line error without it)."""
    require_torch("moving a train state to or from PyTorch (jax_td3.convert)")
    from jax_td3.adapters import torch_ref

    return torch_ref


def make_torch_agent(config: TD3Config, dtype: Any = "float32", device: Any = "cpu") -> Any:
    """The torch_ref agent with the same architecture and hyperparameters as ``config`` (``dtype``: a
    torch dtype or a name)."""
    return _torch_layout().make_agent(config, dtype, device)


def state_to_torch(config: TD3Config, state: TrainState, agent: Any) -> None:
    """Load a JAX train state into a torch_ref agent: online and target weights, Adam states, counter."""
    _torch_layout().load_agent(agent, jax_layout.to_neutral(config, state), source="from JAX")


def state_from_torch(config: TD3Config, agent: Any, template: TrainState) -> TrainState:
    """A JAX train state holding the torch agent's weights, targets, Adam states and counter.

    ``template`` (e.g. ``init_train_state(config, key, dtype)``) gives the tree structure.
    """
    return jax_layout.from_neutral(config, _torch_layout().agent_state(agent), template, source="torch")


__all__ = ["ConversionError", "make_torch_agent", "state_from_torch", "state_to_torch"]
