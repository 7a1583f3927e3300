"""A faithful PyTorch reference of TD3 and the DDPG variants. Imports nothing from jax_td3."""

from torch_ref.ddpg import DDPG, OurDDPG, SeedDDPG
from torch_ref.td3 import TD3, Batch

AGENTS = {"td3": TD3, "ourddpg": OurDDPG, "ddpg": DDPG, "seed-ddpg": SeedDDPG}

__all__ = ["AGENTS", "Batch", "DDPG", "OurDDPG", "SeedDDPG", "TD3"]
