"""Exploration noise, functional: explicit state in, (noise, new state) out, draws from a numpy Generator.

The training loop passes its own ``numpy.random.Generator``, so the same seed
gives the same noise whichever backend learns. Gaussian noise has no state;
Ornstein-Uhlenbeck noise carries its previous value ``x``::

    x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1)

The Gaussian standard deviation is given per action dimension (the loop passes
``expl_noise * action_scale``); OU's ``sigma``/``mu`` are in action units, like
the seed notebook's (sigma 0.1 on Pendulum's [-2, 2]).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    """Independent N(0, std) per step and dimension."""

    std: tuple[float, ...]

    def init(self) -> np.ndarray:
        return np.zeros(0)  # stateless; an empty array keeps checkpoints uniform

    def sample(self, state: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        std = np.asarray(self.std, np.float64)
        return rng.standard_normal(std.shape) * std, state


@dataclasses.dataclass(frozen=True)
class OrnsteinUhlenbeckNoise:
    """Euler-Maruyama steps of an OU process; the state is the previous noise value."""

    act_dim: int
    theta: float = 0.1
    sigma: float = 0.1
    mu: float = 0.0
    dt: float = 0.01

    def init(self) -> np.ndarray:
        return np.zeros(self.act_dim)

    def sample(self, state: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = (state + self.theta * (self.mu - state) * self.dt
             + self.sigma * np.sqrt(self.dt) * rng.standard_normal(self.act_dim))
        return x, x


@dataclasses.dataclass(frozen=True)
class ScaledGaussianNoise:
    """FastTD3's exploration: N(0, (scale * action_scale)^2) per dimension, where ``scale`` (the state, shape (1,))
    is the environment's own std in units of the action scale, drawn when its episode begins."""

    action_scale: tuple[float, ...]

    def init(self) -> np.ndarray:
        return np.zeros(1)  # the loop draws each environment's scale

    def sample(self, state: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray(self.action_scale, np.float64)
        return rng.standard_normal(scale.shape) * state[0] * scale, state
