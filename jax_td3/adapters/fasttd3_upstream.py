"""FastTD3's own networks (github.com/younggyoseo/FastTD3, ``fast_td3/fast_td3.py``) holding our weights.

For a user who has FastTD3's source: either the ``fast_td3`` package is importable, or the environment
variable ``JAX_TD3_FASTTD3_SRC`` names a clone (or its ``fast_td3`` folder). Only ``fast_td3.py`` is
loaded, as a module of its own: the package's ``__init__`` also imports its replay buffer and deployment
helpers, which need libraries (tensordict) the networks do not.

FastTD3's modules express a subset of our configs: hidden sizes h, h/2, h/4 for both networks, no
LayerNorm, the box [-1, 1] (its actor outputs tanh directly). Their parameter names are torch_ref's
(``net.0``, ``fc_head.0``, ``fc_mu.0``; ``qnet1.net.0`` ...), so a neutral state loads into them by name.
``parity_tests/test_fasttd3_upstream.py`` compares their logits, ``projection`` and actions with ours.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from types import ModuleType
from typing import Any

import numpy as np
import torch

from jax_td3.adapters.base import NeutralState
from jax_td3.config import FastTD3Config
from jax_td3.errors import ConfigError

SOURCE_VARIABLE = "JAX_TD3_FASTTD3_SRC"
MODULE_NAME = "jax_td3_fasttd3_upstream"


def locate_source() -> pathlib.Path | None:
    """FastTD3's ``fast_td3/fast_td3.py``: under ``$JAX_TD3_FASTTD3_SRC`` (a clone or its ``fast_td3``
    folder) or in the importable ``fast_td3`` package (found without running it); None where neither."""
    given = os.environ.get(SOURCE_VARIABLE)
    if given:
        root = pathlib.Path(given).expanduser()
        for candidate in (root / "fast_td3" / "fast_td3.py", root / "fast_td3.py"):
            if candidate.is_file():
                return candidate
        return None
    spec = importlib.util.find_spec("fast_td3")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = pathlib.Path(location) / "fast_td3.py"
        if candidate.is_file():
            return candidate
    return None


def load_fast_td3() -> ModuleType:
    """FastTD3's ``fast_td3.py`` as a module (``DistributionalQNetwork``, ``Critic``, ``Actor``)."""
    path = locate_source()
    if path is None:
        raise ConfigError(f"FastTD3's source is not available: install its fast_td3 package or set "
                          f"{SOURCE_VARIABLE} to a clone of github.com/younggyoseo/FastTD3")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inexpressible(config: FastTD3Config) -> str | None:
    """Why FastTD3's modules cannot hold networks of ``config`` (None: they can)."""
    for name, sizes in (("hidden", config.actor_hidden), ("critic_hidden", config.critic_hidden_sizes)):
        h = sizes[0]
        if tuple(sizes) != (h, h // 2, h // 4):
            return f"{name} {sizes} is not (h, h/2, h/4)"
    if config.critic_layer_norm:
        return "its critics have no LayerNorm"
    if any(lo != -1.0 for lo in config.action_low) or any(hi != 1.0 for hi in config.action_high):
        return "its actor outputs tanh in [-1, 1] (no action box)"
    return None


def upstream_networks(config: FastTD3Config, state: NeutralState, dtype: torch.dtype = torch.float64,
                      module: ModuleType | None = None) -> tuple[Any, Any, Any]:
    """FastTD3's ``(Actor, Critic, Critic)`` holding the neutral state's actor, critic and critic target.

    Built with ``dtype`` as torch's default so that their support buffer (a ``linspace``) is computed in it.
    """
    reason = inexpressible(config)
    if reason is not None:
        raise ConfigError(f"FastTD3's own modules cannot express this config: {reason}")
    fast_td3 = module or load_fast_td3()
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        actor = fast_td3.Actor(config.obs_dim, config.act_dim, num_envs=1, init_scale=config.init_scale,
                               hidden_dim=config.actor_hidden[0])
        critics = [fast_td3.Critic(config.obs_dim, config.act_dim, config.num_atoms, config.v_min, config.v_max,
                                   hidden_dim=config.critic_hidden_sizes[0], sim_type="", sim_dimension=64, seq_len=8)
                   for _ in range(2)]
    finally:
        torch.set_default_dtype(before)
    for net, family in ((actor, "actor"), (critics[0], "critic"), (critics[1], "critic_target")):
        params = dict(net.named_parameters())
        names = {key[len(family) + 1:] for key in state if key.startswith(family + ".")}
        if names != set(params):
            raise ConfigError(f"{family}: FastTD3's parameters {sorted(params)} are not the state's {sorted(names)}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.as_tensor(np.array(state[f"{family}.{name}"]), dtype=dtype))
    return actor, critics[0], critics[1]


__all__ = ["SOURCE_VARIABLE", "inexpressible", "load_fast_td3", "locate_source", "upstream_networks"]
