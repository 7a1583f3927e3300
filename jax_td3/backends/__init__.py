"""Backends for the training loop: ``jax`` (the jitted update) and ``torch`` (the PyTorch reference)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jax_td3.backends.base import UPDATE_METRICS, Backend
from jax_td3.errors import ConfigError, require_torch
from jax_td3.settings import BACKENDS

if TYPE_CHECKING:  # for annotations only: the update module imports JAX
    from jax_td3.config import TD3Config
    from jax_td3.update import TrainState


def make_backend(name: str, config: TD3Config, initial_state: TrainState, dtype: str = "float32") -> Backend:
    """The backend ``name`` holding ``initial_state`` (a JAX-layout train state)."""
    if name == "jax":
        from jax_td3.backends.jax_backend import JaxBackend
        return JaxBackend(config, initial_state, dtype)
    if name == "torch":
        require_torch("`backend` torch")
        from jax_td3.backends.torch_backend import TorchBackend
        return TorchBackend(config, initial_state, dtype)
    raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


# What the host loop needs from JAX whichever backend learns, reached through this package so that a loop
# never names one backend (tests/test_architecture.py). JAX is always installed; PyTorch is the extra.

def initial_state_and_key(config: Any, seed: int, dtype: Any) -> tuple[Any, Any]:
    """(initial train state, key of the fused path's draws) from ``seed``. JAX's init builds it for either
    backend, so a torch run starts from the weights a JAX run with the same seed starts from."""
    from jax_td3.backends import jax_backend

    return jax_backend.initial_state_and_key(config, seed, dtype)


def compile_many_ahead(config: Any, dtype: Any, capacity: int, num_updates: int) -> Any:
    """The JAX backend's fused call compiled in a background thread (``jax_backend.compile_many_ahead``)."""
    from jax_td3.backends import jax_backend

    return jax_backend.compile_many_ahead(config, dtype, capacity, num_updates)


def split_key(key: Any) -> tuple[Any, Any]:
    """The fused path's key split in two, as one compiled program (``jax_backend.split_key``)."""
    from jax_td3.backends import jax_backend

    return jax_backend.split_key(key)


__all__ = ["BACKENDS", "UPDATE_METRICS", "Backend", "compile_many_ahead", "initial_state_and_key", "make_backend",
           "split_key"]
