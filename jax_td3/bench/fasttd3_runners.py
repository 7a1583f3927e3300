"""The JAX runners of the update suite for FastTD3: ``jax_td3.fasttd3.update.update`` jitted, one
update per call (``jax_jit``) or K per call in one ``lax.scan`` (``jax_scan``), sampling from a device
replay of random n-step transitions included.

``jax_td3.fasttd3.update`` is imported when a row is built; where it is missing the rows are
``Unavailable`` with the reason. The PyTorch rows are in ``torch_runners`` (``jax_td3.bench.torch_fasttd3``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from typing import Any, Callable, ContextManager

import jax
import jax.numpy as jnp
import numpy as np

from jax_td3.bench.replay_data import NSTEP_FIELDS
from jax_td3.bench.runner import Runner, Setup, Unavailable
from jax_td3.config import FastTD3Config
from jax_td3.xla_options import compiler_options

Data = dict[str, np.ndarray]   # replay_data.random_nstep_transitions: {field: array}
UPDATE_MODULE = "jax_td3.fasttd3.update"


def _update_module() -> Any:
    if importlib.util.find_spec(UPDATE_MODULE) is None:
        raise Unavailable(f"{UPDATE_MODULE} (the JAX FastTD3 update) is not in this installation")
    return importlib.import_module(UPDATE_MODULE)


def _precision(setup: Setup) -> ContextManager[object]:
    # float32 rows use full float32 matmuls (on NVIDIA GPUs JAX's default would be TF32); bf16 rows
    # set the config's bfloat16_matmuls instead.
    return contextlib.nullcontext() if setup.bf16 else jax.default_matmul_precision("float32")


class _Holder:
    """Mutable home of a donated JAX state between calls."""

    def __init__(self, state: Any, key: jax.Array) -> None:
        self.state, self.key = state, key


def _prepare(config: FastTD3Config, setup: Setup, data: Data) -> tuple[Any, FastTD3Config, Callable, _Holder]:
    """(update module, the row's config, sample(replay, key) -> (batch, noise), holder of state and key)."""
    module = _update_module()
    from jax_td3.fasttd3.state import Batch

    if setup.bf16:
        config = config.replace(bfloat16_matmuls=True)
    replay = tuple(jax.device_put(np.asarray(data[name], np.float32)) for name in NSTEP_FIELDS)
    size = len(data["obs"])

    def sample(replay: tuple[jax.Array, ...], key: jax.Array) -> tuple[Any, jax.Array]:
        index_key, noise_key = jax.random.split(key)
        index = jax.random.randint(index_key, (config.batch_size,), 0, size)
        noise = jax.random.normal(noise_key, (config.batch_size, config.act_dim), jnp.float32)
        return Batch(*(jnp.take(field, index, axis=0) for field in replay)), noise

    state = jax.jit(lambda key: module.init_train_state(config, key, jnp.float32))(jax.random.PRNGKey(setup.seed))
    holder = _Holder(state, jax.random.PRNGKey(setup.seed + 1))
    return module, config, functools.partial(sample, replay), holder


def _sync(result: object) -> None:
    jax.block_until_ready(result)


def jax_jit(config: FastTD3Config, setup: Setup, data: Data) -> Runner:
    module, config, sample, holder = _prepare(config, setup, data)
    jit_update = jax.jit(module.update, static_argnums=0, donate_argnums=1, compiler_options=compiler_options())

    @functools.partial(jax.jit, compiler_options=compiler_options())
    def draw(key: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
        key, draw_key = jax.random.split(key)
        return key, *sample(draw_key)

    def call() -> object:
        with _precision(setup):
            holder.key, batch, noise = draw(holder.key)
            holder.state, metrics = jit_update(config, holder.state, batch, noise)
        return metrics
    return Runner(call, _sync, 1)


def jax_scan(config: FastTD3Config, setup: Setup, data: Data) -> Runner:
    module, config, sample, holder = _prepare(config, setup, data)
    k = setup.scan_updates

    def fused_updates(state: Any, key: jax.Array) -> tuple[Any, jax.Array, Any]:
        def one(state: Any, step_key: jax.Array) -> tuple[Any, Any]:
            return module.update(config, state, *sample(step_key))
        key, *step_keys = jax.random.split(key, k + 1)
        state, metrics = jax.lax.scan(one, state, jnp.stack(step_keys))
        return state, key, metrics
    fused = jax.jit(fused_updates, donate_argnums=0, compiler_options=compiler_options())

    def call() -> object:
        with _precision(setup):
            holder.state, holder.key, metrics = fused(holder.state, holder.key)
        return metrics
    return Runner(call, _sync, k, notes=f"K={k} updates per call")


BUILDERS = {"jax_jit": jax_jit, "jax_scan": jax_scan}
