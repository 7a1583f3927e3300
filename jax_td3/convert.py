"""JAX train state <-> PyTorch reference agent, both ways, with optimizer states.

Composed from the two adapters' layout functions through the neutral state
(``jax_td3.adapters``): ``adapters.jax`` knows the JAX layout, ``adapters.torch_ref``
torch_ref's; this module knows neither. Moving a state across and back is exact
(a copy, no arithmetic), so a run can change framework mid-training and continue
identically.
"""

from __future__ import annotations

from typing import Any

import torch
from numpy.typing import DTypeLike

from jax_td3.adapters import jax as jax_layout
from jax_td3.adapters import torch_ref as torch_layout
from jax_td3.config import TD3Config
from jax_td3.errors import ConversionError
from jax_td3.update import TrainState


def make_torch_agent(config: TD3Config, dtype: DTypeLike | torch.dtype = torch.float32,
                     device: str | torch.device = "cpu") -> torch_layout.Agent:
    """The torch_ref agent with the same architecture and hyperparameters as ``config``."""
    return torch_layout.make_agent(config, dtype, device)


def state_to_torch(config: TD3Config, state: TrainState, agent: Any) -> None:
    """Load a JAX train state into a torch_ref agent: online and target weights, Adam states, counter."""
    torch_layout.load_agent(agent, jax_layout.to_neutral(config, state), source="from JAX")


def state_from_torch(config: TD3Config, agent: Any, template: TrainState) -> TrainState:
    """A JAX train state holding the torch agent's weights, targets, Adam states and counter.

    ``template`` (e.g. ``init_train_state(config, key, dtype)``) gives the tree structure.
    """
    return jax_layout.from_neutral(config, torch_layout.agent_state(agent), template, source="torch")


__all__ = ["ConversionError", "make_torch_agent", "state_from_torch", "state_to_torch"]
