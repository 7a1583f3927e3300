"""Environments behind two interfaces (``base``): Gymnasium ones for the host loop, JAX-native ones
for the compiled loop.

Nothing here imports Gymnasium, PyBullet or JAX at import time: the host constructors import
Gymnasium when called, and a JAX-native environment's module is imported when it is asked for.
"""

from __future__ import annotations

import importlib

from jax_td3.envs.base import EnvSpec, HostEnv, JaxEnv
from jax_td3.envs.brax import PREFIX as BRAX_PREFIX
from jax_td3.envs.brax import is_brax_id
from jax_td3.envs.gymnasium import env_spec, make_env
from jax_td3.envs.playground import PREFIX as PLAYGROUND_PREFIX
from jax_td3.envs.playground import is_playground_id
from jax_td3.errors import EnvError

# id -> (module, class) of every JAX-native environment.
JAX_ENVS = {"Pendulum-v1": ("jax_td3.envs.pendulum", "PendulumEnv")}


def make_jax_env(env_id: str, *, brax_backend: str | None = None, playground_impl: str | None = None) -> JaxEnv:
    """The JAX-native environment ``env_id``; EnvError names the ones there are.

    ``brax:NAME`` is Brax's environment NAME (any the installed Brax registers) on physics
    ``brax_backend`` (default ``envs.brax.DEFAULT_BACKEND``); without Brax, EnvError names the extra.
    ``playground:NAME`` is MuJoCo Playground's task NAME on physics ``playground_impl`` (default
    ``envs.playground.DEFAULT_IMPL``); without Playground, EnvError names the extra.
    """
    if is_brax_id(env_id):
        from jax_td3.envs.brax import DEFAULT_BACKEND, BraxEnv

        return BraxEnv(env_id[len(BRAX_PREFIX):], brax_backend or DEFAULT_BACKEND)
    if is_playground_id(env_id):
        from jax_td3.envs.playground import DEFAULT_IMPL, PlaygroundEnv

        return PlaygroundEnv(env_id[len(PLAYGROUND_PREFIX):], playground_impl or DEFAULT_IMPL)
    if env_id not in JAX_ENVS:
        raise EnvError(f"no JAX-native environment {env_id!r} (JAX-native: {', '.join(JAX_ENVS)}); Brax's "
                       f"are {BRAX_PREFIX}NAME (the brax extra), MuJoCo Playground's {PLAYGROUND_PREFIX}NAME "
                       f"(the playground extra), others train with the Gymnasium loop")
    module, name = JAX_ENVS[env_id]
    return getattr(importlib.import_module(module), name)()


__all__ = ["JAX_ENVS", "EnvError", "EnvSpec", "HostEnv", "JaxEnv", "env_spec", "is_brax_id", "is_playground_id",
           "make_env", "make_jax_env"]
