"""Environments behind two interfaces (``base``): Gymnasium ones for the host loop, JAX-native ones
for the compiled loop.

Nothing here imports Gymnasium, PyBullet or JAX at import time: the host constructors import
Gymnasium when called, and a JAX-native environment's module is imported when it is asked for.
"""

from __future__ import annotations

import importlib

from jax_td3.envs.base import EnvSpec, JaxEnv
from jax_td3.envs.gymnasium import env_spec, make_env
from jax_td3.errors import EnvError

# id -> (module, class) of every JAX-native environment.
JAX_ENVS = {"Pendulum-v1": ("jax_td3.envs.pendulum", "PendulumEnv")}


def make_jax_env(env_id: str) -> JaxEnv:
    """The JAX-native environment ``env_id``; EnvError names the ones there are."""
    if env_id not in JAX_ENVS:
        raise EnvError(f"no JAX-native environment {env_id!r} (JAX-native: {', '.join(JAX_ENVS)}); "
                       f"train it with the Gymnasium loop instead")
    module, name = JAX_ENVS[env_id]
    return getattr(importlib.import_module(module), name)()


__all__ = ["EnvError", "EnvSpec", "JAX_ENVS", "JaxEnv", "env_spec", "make_env", "make_jax_env"]
