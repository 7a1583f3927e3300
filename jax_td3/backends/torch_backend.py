"""The PyTorch backend: the ``torch_ref`` agent, loaded from and saved to the JAX-layout train state.

The loop hands it the same host batches and target-policy noise as the JAX backend;
in float64 the two give the same run (the parity suite holds them to ~1e-9).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import torch

import torch_ref
from jax_td3.adapters.torch_ref import torch_dtype
from jax_td3.backends.base import is_fasttd3
from jax_td3.convert import (
    fasttd3_from_torch,
    fasttd3_to_torch,
    make_fasttd3_agent,
    make_torch_agent,
    state_from_torch,
    state_to_torch,
)
from jax_td3.dtypes import float_dtype
from jax_td3.errors import ConfigError, ConversionError
from jax_td3.update import TrainState

if TYPE_CHECKING:  # for annotations only
    from jax_td3.config import TD3Config


class TorchBackend:
    name = "torch"

    def __init__(self, config: TD3Config, initial_state: TrainState, dtype: str = "float32",
                 num_threads: int | None = None):
        """``num_threads``: if given, torch's intra-op threads. That is a process-wide setting, so by default
        the backend leaves it to its caller (``jax-td3 train`` uses one: the loop's small MLPs run fastest
        on one)."""
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.config = config
        self.dtype = float_dtype(dtype)
        self.torch_dtype = torch_dtype(self.dtype)
        self.fasttd3 = is_fasttd3(config)
        if self.fasttd3:
            try:
                self.agent = make_fasttd3_agent(config, self.torch_dtype)
            except ConversionError as err:
                raise ConfigError(f"backend 'torch': {err}; use backend 'jax'") from None
        else:
            self.agent = make_torch_agent(config, self.torch_dtype)
        # The JAX-layout tree structure, for state(); its values are never used.
        self._template = jax.tree_util.tree_map(np.asarray, initial_state)
        self.load_state(initial_state)

    def _tensor(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.torch_dtype)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.fasttd3:
            return self.act_batch(np.asarray(obs)[None])[0]
        return np.asarray(self.agent.select_action(np.asarray(obs, self.dtype)), np.float64)

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = self._tensor(np.asarray(obs, self.dtype))
            if self.fasttd3:
                x = self.agent.normalize_obs(x)   # the statistics as they are (frozen while acting)
            return self.agent.actor(x).numpy().astype(np.float64)

    def observe(self, obs: np.ndarray) -> None:
        """fasttd3: fold ``obs`` (N, obs_dim) into the agent's observation normaliser; a no-op otherwise."""
        if self.fasttd3:
            self.agent.normalizer_update(self._tensor(np.asarray(obs, self.dtype)))

    def update(self, batch: Any, target_noise: np.ndarray) -> dict[str, float]:
        if self.fasttd3:
            info = self.agent.train(torch_ref.FastTD3Batch(*(self._tensor(x) for x in batch)),
                                    self._tensor(target_noise))
            return {"critic_loss": float(info["critic_loss"]), "actor_loss": float(info["actor_loss"]),
                    "actor_updated": float(info["actor_updated"])}
        info = self.agent.train(torch_ref.Batch(*(self._tensor(x) for x in batch)), noise=self._tensor(target_noise))
        actor_updated = "actor_loss" in info
        return {"critic_loss": float(info["critic_loss"]),
                "actor_loss": float(info["actor_loss"]) if actor_updated else 0.0,
                "actor_updated": float(actor_updated)}

    def state(self) -> TrainState:
        if self.fasttd3:
            state = fasttd3_from_torch(self.agent, self._template)
        else:
            state = state_from_torch(self.config, self.agent, self._template)
        return jax.tree_util.tree_map(lambda x: np.array(x), jax.device_get(state))

    def load_state(self, state: TrainState) -> None:
        if self.fasttd3:
            fasttd3_to_torch(state, self.agent)
        else:
            state_to_torch(self.config, state, self.agent)
