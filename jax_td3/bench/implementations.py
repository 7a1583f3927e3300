"""The update implementations the suite times, each behind one small interface.

``build(name, config, setup, data)`` returns a ``Runner``: ``call()`` performs
``updates_per_call`` updates (sampling from a replay buffer included, as in
training), ``sync(result)`` waits for them. An implementation that cannot run
here raises ``Unavailable`` with the reason, which goes into the results.

Every JAX runner calls the project's one update (``jax_td3.update.update`` or
``jax_td3.replay.multi_update``); the PyTorch ones (``jax_td3.bench.torch_runners``) are
``torch_ref`` as written and ``jax_td3.bench.torch_tuned``, imported only when a PyTorch row runs:
without PyTorch (the torch extra) those rows are ``Unavailable``.

FastTD3 rows (``config.algo`` "fasttd3") keep the implementation names: ``jax_jit`` and ``jax_scan``
run ``jax_td3.fasttd3.update.update`` (``fasttd3_runners``); ``torch_tuned``, ``torch_compile`` and
``torch_cudagraph`` run ``jax_td3.bench.torch_fasttd3`` eager, compiled, and compiled with
mode="reduce-overhead"; ``torch_ref`` and ``jax_vmap`` are not timed for it.
"""

from __future__ import annotations

import functools
from typing import Callable, ContextManager, cast

import jax
import jax.numpy as jnp
import numpy as np

from jax_td3.bench.replay_data import device_replay
from jax_td3.bench.runner import Runner, Setup, Unavailable
from jax_td3.config import FastTD3Config, TD3Config
from jax_td3.errors import MissingExtraError, require_torch
from jax_td3.loops.agents import train_state_axes
from jax_td3.replay import ReplayState, draw_updates, multi_update, replay_gather, replay_indices_from_bits
from jax_td3.update import Batch, Metrics, TrainState, init_train_state, update
from jax_td3.xla_options import compiler_options

Data = dict[str, np.ndarray]   # replay_data.random_transitions: {field: (count, width)}

IMPLEMENTATIONS = {
    "torch_ref": "torch_ref as written (Fujimoto's TD3.py style), numpy replay sampled on the host",
    "torch_tuned": "PyTorch eager, tuned: stacked twin critic, fused Adam, foreach-lerp Polyak, device replay",
    "torch_compile": "the tuned update with both losses under torch.compile (forward and backward compiled)",
    "torch_cudagraph": "the tuned update (sampling included) captured in a CUDA graph, one replay per actor cycle",
    "jax_jit": "jax.jit(update, static_argnums=0), state donated, one update per call (+ one sampling call)",
    "jax_scan": "jax.jit(replay.multi_update): K (sample, update) steps per call in one lax.scan",
    "jax_vmap": "jax.jit(jax.vmap(sample + update)) over N agents, one update each per call",
}


# -- JAX ------------------------------------------------------------------------------------

def _jax_precision(setup: Setup) -> ContextManager[object]:
    # float32 rows use full float32 matmuls (on NVIDIA GPUs JAX's default would be TF32).
    return jax.default_matmul_precision("bfloat16" if setup.bf16 else "float32")


def _fresh_state(config: TD3Config, seed: int, agents: int | None = None) -> TrainState:
    """A train state of ``init_train_state``'s structure with random weights and zeroed Adam states;
    ``agents`` of them stacked on a leading axis (sharing one step counter) when given.

    The update's cost does not depend on the values, and filling the structure from numpy
    avoids compiling the initializers, which costs seconds on a small CPU. Targets get
    buffers of their own: a donated argument cannot hold one buffer twice.
    """
    shapes = jax.eval_shape(lambda key: init_train_state(config, key), jax.random.PRNGKey(0))
    lead = () if agents is None else (agents,)
    rng = np.random.default_rng(seed)
    weights = lambda x: jax.device_put(rng.uniform(-0.1, 0.1, lead + x.shape).astype(x.dtype))
    zeros = lambda x: jax.device_put(np.zeros(lead + x.shape, x.dtype))
    actor = jax.tree_util.tree_map(weights, shapes.actor_params)
    critic = jax.tree_util.tree_map(weights, shapes.critic_params)
    copy = lambda tree: jax.tree_util.tree_map(lambda x: jax.device_put(np.array(x)), tree)
    return TrainState(actor, critic, copy(actor), copy(critic),
                      jax.tree_util.tree_map(zeros, shapes.actor_opt_state),
                      jax.tree_util.tree_map(zeros, shapes.critic_opt_state),
                      jax.device_put(np.zeros((), np.int32)))


def _jax_sync(result: object) -> None:
    jax.block_until_ready(result)


class _Holder:
    """Mutable home of a donated JAX state between calls."""

    def __init__(self, state: TrainState, key: jax.Array) -> None:
        self.state, self.key = state, key


def _one_draw(config: TD3Config, replay: ReplayState, key: jax.Array) -> tuple[Batch, jax.Array]:
    """(batch, target noise) of one update, drawn as the training loops draw them (``replay.draw_updates``)."""
    draws = draw_updates(config, replay, key, 1)
    return replay_gather(replay, replay_indices_from_bits(replay, draws.replay_bits[0])), draws.target_noise[0]


def _jax_jit(config: TD3Config, setup: Setup, data: Data) -> Runner:
    replay = device_replay(data)
    jit_update = jax.jit(update, static_argnums=0, donate_argnums=1, compiler_options=compiler_options())

    @functools.partial(jax.jit, compiler_options=compiler_options())
    def sample(replay: ReplayState, key: jax.Array) -> tuple[jax.Array, Batch, jax.Array]:
        key, draw_key = jax.random.split(key)
        return key, *_one_draw(config, replay, draw_key)

    holder = _Holder(_fresh_state(config, setup.seed), jax.random.PRNGKey(setup.seed + 1))

    def call() -> Metrics:
        with _jax_precision(setup):
            holder.key, batch, noise = sample(replay, holder.key)
            holder.state, metrics = jit_update(config, holder.state, batch, noise)
        return metrics
    return Runner(call, _jax_sync, 1)


def _jax_scan(config: TD3Config, setup: Setup, data: Data) -> Runner:
    replay = device_replay(data)
    k = setup.scan_updates

    def fused_updates(state: TrainState, replay: ReplayState,
                      key: jax.Array) -> tuple[TrainState, jax.Array, Metrics]:
        key, step_key = jax.random.split(key)
        state, metrics = multi_update(config, state, replay, step_key, k)
        return state, key, metrics
    fused = jax.jit(fused_updates, donate_argnums=0, compiler_options=compiler_options())
    holder = _Holder(_fresh_state(config, setup.seed), jax.random.PRNGKey(setup.seed + 1))

    def call() -> Metrics:
        with _jax_precision(setup):
            holder.state, holder.key, metrics = fused(holder.state, replay, holder.key)
        return metrics
    return Runner(call, _jax_sync, k, notes=f"K={k} updates per call")


def _jax_vmap(config: TD3Config, setup: Setup, data: Data) -> Runner:
    replay = device_replay(data)
    n = setup.vmap_agents
    # Agents step in lockstep: one shared update counter (not vmapped) keeps TD3's delayed actor
    # update a real branch; a per-agent counter would turn lax.cond into computing both branches.
    state_axes = train_state_axes()

    def agents_step(states: TrainState, replay: ReplayState,
                    key: jax.Array) -> tuple[TrainState, jax.Array, Metrics]:
        key, *agent_keys = jax.random.split(key, n + 1)
        one_agent = lambda state, replay, key: update(config, state, *_one_draw(config, replay, key))
        states, metrics = jax.vmap(one_agent, in_axes=(state_axes, None, 0), out_axes=(state_axes, 0))(
            states, replay, jnp.stack(agent_keys))
        return states, key, metrics
    step = jax.jit(agents_step, donate_argnums=0, compiler_options=compiler_options())

    holder = _Holder(_fresh_state(config, setup.seed, agents=n), jax.random.PRNGKey(setup.seed + 1))

    def call() -> Metrics:
        with _jax_precision(setup):
            holder.state, holder.key, metrics = step(holder.state, replay, holder.key)
        return metrics
    return Runner(call, _jax_sync, n, agents=n, notes=f"N={n} agents")


def _torch_runner(name: str) -> Callable:
    def build(config: TD3Config, setup: Setup, data: Data) -> Runner:
        if config.algo == "fasttd3" and name == "torch_ref":
            raise Unavailable("torch_ref is timed for TD3 and OurDDPG; FastTD3's PyTorch rows are the fast "
                              "update (torch_tuned, torch_compile, torch_cudagraph)")
        try:
            require_torch("the PyTorch rows")
        except MissingExtraError as err:
            raise Unavailable(str(err)) from None
        from jax_td3.bench.torch_runners import BUILDERS, FASTTD3_BUILDERS

        return (FASTTD3_BUILDERS if config.algo == "fasttd3" else BUILDERS)[name](config, setup, data)
    return build


_BUILDERS = {
    **{name: _torch_runner(name) for name in ("torch_ref", "torch_tuned", "torch_compile", "torch_cudagraph")},
    "jax_jit": _jax_jit,
    "jax_scan": _jax_scan,
    "jax_vmap": _jax_vmap,
}


def build(name: str, config: TD3Config, setup: Setup, data: Data) -> Runner:
    if config.algo == "fasttd3" and not name.startswith("torch_"):
        from jax_td3.bench import fasttd3_runners

        if name not in fasttd3_runners.BUILDERS:
            raise Unavailable(f"{name} is not timed for FastTD3 (its JAX rows: "
                              f"{', '.join(fasttd3_runners.BUILDERS)})")
        return fasttd3_runners.BUILDERS[name](cast(FastTD3Config, config), setup, data)
    return _BUILDERS[name](config, setup, data)
