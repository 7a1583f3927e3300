"""The containers FastTD3's update reads and writes: a batch of n-step transitions and the train state."""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import numpy as np
import optax

from jax_td3.networks import Params

BatchArray = Union[jax.Array, np.ndarray]


class Batch(NamedTuple):
    """n-step transitions. ``obs``/``next_obs`` are raw (the update normalises them); the rest are (B,).

    ``reward`` is the n-step return sum_{i<k} gamma^i r_i over the k steps actually taken (k < n_step
    where the episode ended first); ``next_obs`` is the observation after those k steps (the true final
    observation where the episode ended); ``bootstrap`` is 1.0 where the target adds the next state's
    value, 0.0 where it does not (termination; also time limits with ``disable_bootstrap``);
    ``discount`` is gamma^k.
    """

    obs: BatchArray
    action: BatchArray
    next_obs: BatchArray
    reward: BatchArray
    bootstrap: BatchArray
    discount: BatchArray


class NormalizerState(NamedTuple):
    """Running mean and (population) variance of the observations seen, and how many were seen."""

    mean: jax.Array      # (obs_dim,)
    var: jax.Array       # (obs_dim,)
    count: jax.Array  # type: ignore[assignment]  # () int32, saturating (normalizer.COUNT_LIMIT); the field shadows tuple.count, on purpose


class TrainState(NamedTuple):
    actor_params: Params
    critic_params: Params         # leading axis: one slice per critic (2)
    critic_target_params: Params  # FastTD3 has no actor target: target actions come from the actor
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    obs_normalizer: NormalizerState
    step: jax.Array               # updates done so far (int32); the next update is number step + 1
