"""Backends for the training loop: ``jax`` (the jitted update) and ``torch`` (the PyTorch reference)."""

from __future__ import annotations

from jax_td3.backends.base import UPDATE_METRICS, Backend
from jax_td3.errors import ConfigError, require_torch
from jax_td3.settings import BACKENDS


def make_backend(name: str, config, initial_state, dtype: str = "float32") -> Backend:
    """The backend ``name`` holding ``initial_state`` (a JAX-layout train state)."""
    if name == "jax":
        from jax_td3.backends.jax_backend import JaxBackend
        return JaxBackend(config, initial_state, dtype)
    if name == "torch":
        require_torch("`backend` torch")
        from jax_td3.backends.torch_backend import TorchBackend
        return TorchBackend(config, initial_state, dtype)
    raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "UPDATE_METRICS", "Backend", "make_backend"]
