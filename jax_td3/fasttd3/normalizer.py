"""Running observation statistics, FastTD3's ``EmpiricalNormalization`` as pure functions.

The loop updates the statistics from the observations it collects; the update only reads them.
FastTD3's variance rule measures the between-batch term with the mean *after* the update, so after
more than one batch ``var`` is not the population variance of all rows seen (the mean is exact):
this module keeps FastTD3's rule, not Chan et al.'s.

The count is int32 (JAX without x64; FastTD3's is int64) and saturates instead of wrapping: an update
folds its N rows in as if at most ``COUNT_LIMIT - N`` had been seen before, so the count stops at
``COUNT_LIMIT`` (2^31 - 1). Below that the rule is FastTD3's exactly. Beyond it a batch weighs
N / COUNT_LIMIT where an int64 count would give it N / (rows seen + N), smaller still: the statistics are
as good as frozen either way. Saturation keeps the state's dtype, so checkpoints load as before; a
count that earlier code let wrap negative means statistics that were already corrupted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_td3.fasttd3.state import NormalizerState

EPS = 1e-2
"""Added to the standard deviation before dividing (FastTD3's eps)."""

COUNT_LIMIT = 2 ** 31 - 1
"""Where the int32 count saturates (the largest int32)."""


def saturated_count(count: int) -> int:
    """A count from elsewhere (PyTorch's int64) as this module keeps it: at most ``COUNT_LIMIT``."""
    return min(count, COUNT_LIMIT)


def normalizer_init(obs_dim: int, dtype: Any = jnp.float32) -> NormalizerState:
    """No observations seen: mean 0, variance 1, count 0."""
    return NormalizerState(mean=jnp.zeros((obs_dim,), dtype), var=jnp.ones((obs_dim,), dtype),
                           count=jnp.zeros((), jnp.int32))


def normalizer_update(state: NormalizerState, obs_batch: ArrayLike) -> NormalizerState:
    """The statistics after also seeing the N rows of ``obs_batch`` (N, obs_dim).

    mean' = mean + (batch_mean - mean) * N / n with n = count + N; delta2 = batch_mean - mean';
    var' = (var * count + batch_var * N + delta2^2 * count * N / n) / n (batch_var: population variance),
    where count is ``min(count, COUNT_LIMIT - N)`` so that n never passes ``COUNT_LIMIT`` (see the module).
    """
    dtype = state.mean.dtype
    x = jnp.asarray(obs_batch, dtype)
    num_rows = x.shape[0]
    batch_mean = jnp.mean(x, axis=0)
    batch_var = jnp.var(x, axis=0)
    seen = jnp.minimum(state.count, COUNT_LIMIT - num_rows)   # saturates: seen + num_rows fits int32
    count = seen.astype(dtype)
    rows = jnp.asarray(num_rows, dtype)
    new_count = count + rows
    mean = state.mean + (batch_mean - state.mean) * (rows / new_count)
    delta2 = batch_mean - mean
    m2 = state.var * count + batch_var * rows + delta2 ** 2 * (count * rows / new_count)
    return NormalizerState(mean=mean, var=m2 / new_count, count=seen + num_rows)


def normalize(state: NormalizerState, obs: ArrayLike) -> jax.Array:
    """(obs - mean) / (sqrt(var) + EPS), in the statistics' dtype."""
    x = jnp.asarray(obs, state.mean.dtype)
    return (x - state.mean) / (jnp.sqrt(state.var) + EPS)
