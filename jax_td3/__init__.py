"""jax-td3: a jitted, purely functional TD3/DDPG in JAX, cross-checked against a PyTorch reference."""

from jax_td3.config import ALGOS, CONFIGS, ConfigError, DDPGConfig, OurDDPGConfig, SeedDDPGConfig, TD3Config, make_config
from jax_td3.update import Batch, TrainState, init_train_state, update, update_from_key, update_with_internals

__version__ = "0.1.0"

__all__ = [
    "ALGOS", "CONFIGS", "Batch", "ConfigError", "DDPGConfig", "OurDDPGConfig", "SeedDDPGConfig", "TD3Config",
    "TrainState", "init_train_state", "make_config", "update", "update_from_key", "update_with_internals",
]
