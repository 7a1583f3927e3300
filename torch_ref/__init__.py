"""A faithful PyTorch reference of TD3, the DDPG variants and FastTD3. Imports nothing from jax_td3."""

from torch_ref.ddpg import DDPG, OurDDPG, SeedDDPG
from torch_ref.fasttd3 import Batch as FastTD3Batch
from torch_ref.fasttd3 import FastTD3
from torch_ref.td3 import TD3, Batch

AGENTS = {"td3": TD3, "ourddpg": OurDDPG, "ddpg": DDPG, "seed-ddpg": SeedDDPG, "fasttd3": FastTD3}

__all__ = ["AGENTS", "Batch", "DDPG", "FastTD3", "FastTD3Batch", "OurDDPG", "SeedDDPG", "TD3"]
