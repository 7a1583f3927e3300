"""jax-td3: a jitted, purely functional TD3/DDPG in JAX, cross-checked against a PyTorch reference."""

import importlib
from typing import Any

__version__ = "0.2.0"

# Loaded on first use (PEP 562), so `jax-td3 --help`, checkpoint tools and subprocesses that only
# need a submodule do not pay for importing JAX and Flax. __init__.pyi gives type checkers the same
# names with their types (tests/test_typecheck.py checks that the two lists agree).
_EXPORTS = {
    "jax_td3.config": ("ALGOS", "CONFIGS", "DDPGConfig", "OurDDPGConfig", "SeedDDPGConfig", "TD3Config",
                       "config_for_env", "make_config"),
    "jax_td3.errors": ("CheckpointError", "ConfigError", "ConversionError", "EnvError", "JaxTD3Error",
                       "MissingExtraError", "NonFiniteError"),
    "jax_td3.run.training": ("train",),
    "jax_td3.settings": ("TrainSettings",),
    "jax_td3.update": ("Batch", "TrainState", "init_train_state", "update", "update_from_key",
                       "update_with_internals"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'jax_td3' has no attribute {name!r}")
