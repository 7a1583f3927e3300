"""Whole training runs as one compiled program: many agents at once, split across devices.

Environment steps (any JAX-native environment, ``jax_td3.envs.base.JaxEnv``), exploration,
replay writes, updates
(the one shared ``update.update``), target updates and
periodic evaluation all run inside one jitted ``lax.scan`` nest. ``jax.vmap`` runs K
independent agents in the same program: different seeds, and, because a config's
numbers are pytree leaves, different learning rates, tau, noise scales ... (a sweep).
The agent axis is sharded over a 1-D ``jax.sharding.Mesh`` of all devices, so the
same code runs on one CPU, several GPUs, or several hosts after
``jax.distributed.initialize()``.

Loop semantics are the Gymnasium loop's (``jax_td3.loops.host``), through the same rules
(``jax_td3.loops.exploration``): uniform random actions for the first ``learning_starts``
transitions, then the actor's action plus N(0, expl_noise * action_scale), clipped to the box;
updates once more than ``learning_starts`` transitions were taken (``loops.schedule``);
truncation bootstraps (``not_done`` = 0 only on termination, unless ``bootstrap_truncation`` is off);
evaluation every
``eval_every`` transitions (and at 0) as the mean return of ``eval_episodes`` noiseless
episodes, run side by side, that start from the same states every time (their own keys).

Many environments per agent: each agent steps ``num_envs`` (N) environments together (vmapped),
a *vector step*, and writes their N transitions to its replay. ``total_steps``, ``eval_every``
and ``learning_starts`` count transitions (multiples of N, except ``learning_starts``); transition
``v * N + i`` is environment i's at vector step v, and it is a warm-up one while that index is below
``learning_starts``. Learning starts at the first vector step after which more than ``learning_starts``
transitions were taken. ``updates_per_step`` (U) is held as an exact fraction p/q
(``LoopSettings.update_fraction``, the rule of ``loops.schedule``): after the j-th vector step with
learning on (j = 1, 2, ...), the agent has made floor(j p / q) updates in all. So U = 1 is one update per
vector step, U = 2 two, U = 0.25 one update on every 4th (the 4th, 8th, ...), U = 1.5 alternately one and two (1, 2,
1, 2 ...). The schedule is a function of the step number: no state, the same on every agent and
after a resume. With N = 1 and U = 1 this is the single-environment loop, step for step.

FastTD3 (``config.algo == "fasttd3"``) runs in the same program with its own update
(``fasttd3.update.update``), as the host loop runs it (``loops.host``): before acting, the observation
normaliser in the train state sees the N current observations (``normalizer_update``, unless
``obs_normalization`` is off); acting and evaluation normalise with the state's statistics; the
exploration noise is N(0, 1) x the environment's own scale x the action scale, the scales uniform in
[``std_min``, ``std_max``) and redrawn for an environment whose episode ended (``AgentState.explore_scale``);
the replay is ``fasttd3.device_replay``: one ring of ``buffer_size // num_envs`` one-step transitions per
environment, n-step returns assembled when a batch is sampled (each environment's share of a batch from
its own finished starts). ``bootstrap_truncation`` off ends the n-step return at a time limit without
bootstrapping (TD3: ``not_done`` 0 there too). A cosine learning rate needs ``lr_schedule_updates``
(the ``train`` driver sets it to the run's updates with ``loops.host.fasttd3_run_config``).

The TD3 family (TD3's update) can use three of these mechanisms, each on its own, off by default: the
per-environment replay (``per_env_replay``: ``replay_layout`` "per_env", or ``config.n_step`` > 1), whose
n-step windows reach TD3's unchanged update as its usual batch (``device_replay.nstep_td3_gather``:
reward = the n-step return, not_done = bootstrap x gamma^(k-1)); per-environment exploration scales
(``config.std_min``/``std_max`` given: ``config.explore_scales``), drawn and redrawn as fasttd3's; and the
observation normaliser (``config.obs_normalization``: ``td3_normalizes``). TD3's train state has no room for
the statistics, so they live beside it (``AgentState.obs_normalizer``); as fasttd3's, they see the N current
observations before acting, acting and evaluation normalise with them, and the sampled batch's obs and
next_obs are normalised with the statistics of that moment before TD3's update (``normalized_batch``); the
replay keeps raw observations.

A sweep from Python (each agent gets one value; seeds may repeat)::

    config = make_config("td3", max_action=2.0).replace(actor_lr=np.array([1e-3, 3e-4, 1e-4]))
    result = train_compiled(config, LoopSettings(total_steps=10_000), seeds=[0, 0, 0], env=PendulumEnv())
    result.eval_returns          # (3, evaluations, eval_episodes)

The run is a ``ChunkedRun``: one compiled call per chunk of ``chunk_steps`` transitions (by default an
evaluation period) and one per evaluation, the agents' whole state (train states, replay buffers,
environment states, keys) carried between calls on the devices. Between two calls the host can
checkpoint, stop and later resume the run exactly. A chunk's program (the host callback sits outside
``vmap``, so it fires once for all agents)::

    scan over the chunk's progress blocks:
        vmap over agents: scan over the block's vector steps (act, step N envs, store N, update)
        host callback: progress
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import DTypeLike
from numpy.typing import ArrayLike

from jax_td3 import xla_options
from jax_td3.config import TD3Config, static
from jax_td3.envs.base import JaxEnv
from jax_td3.errors import ConfigError
from jax_td3.fasttd3 import device_replay
from jax_td3.fasttd3 import networks as fasttd3_networks
from jax_td3.fasttd3 import update as fasttd3_update
from jax_td3.fasttd3.normalizer import normalize, normalizer_init, normalizer_update
from jax_td3.loops import exploration, schedule
from jax_td3.loops.agents import AGENT_AXIS, agent_mesh, global_array, train_state_axes
from jax_td3.networks import actor_action
from jax_td3.replay import (
    replay_add,
    replay_gather,
    replay_indices_from_bits,
    replay_init,
)
from jax_td3.settings import TrainSettings
from jax_td3.update import Batch, init_train_state, update

MAX_PROGRESS_BLOCK = 1_000    # progress callbacks at least every this many steps (when a divisor allows)
_DEFAULT = TrainSettings()    # LoopSettings' defaults are the run's
AGENT_VMAP_AXIS = "agent"     # the vmap over agents' axis name (for collectives across agents)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """The compiled loop's settings: sizes are static; ``expl_noise`` is a leaf (vmappable). A run's are
    ``compiled_settings(train_settings)``; the defaults are ``TrainSettings``'."""

    total_steps: int = static(_DEFAULT.total_steps)
    learning_starts: int = static(_DEFAULT.learning_starts)
    """Uniform random actions before this many steps; one update per step after it."""
    eval_every: int = static(_DEFAULT.eval_every)
    eval_episodes: int = static(_DEFAULT.eval_episodes)
    buffer_size: int = static(_DEFAULT.buffer_size)
    """Replay capacity in transitions over all the agent's environments. The per-environment replay
    (``per_env_replay``) keeps one ring per environment of ``capacity // num_envs`` one-step transitions
    (FastTD3's per-environment buffer size is ``buffer_size / num_envs`` here)."""
    num_envs: int = static(_DEFAULT.num_envs)
    """Environments per agent stepped together; ``total_steps`` and ``eval_every`` must be multiples."""
    updates_per_step: float = static(_DEFAULT.updates_per_step)
    """Updates per vector step (see the module docstring for fractional values)."""
    expl_noise: float = _DEFAULT.expl_noise
    """Std of the Gaussian exploration noise, in units of the action scale (``config.explore_scales``:
    per-environment scales from the config's ``std_min``/``std_max`` instead)."""
    bootstrap_truncation: bool = static(_DEFAULT.bootstrap_truncation)
    """Bootstrap at a time limit (off: a truncation ends the return like a termination)."""
    replay_layout: str | None = static(_DEFAULT.replay_layout)
    """"flat", "per_env" or None (the algorithm's own): ``per_env_replay``."""

    def __post_init__(self) -> None:
        # Sizes must be Python numbers here; under tracing (vmap, tree_map) only the leaf changes.
        if isinstance(self.num_envs, int) and isinstance(self.total_steps, int):
            self.check()

    def check(self) -> None:
        """ConfigError naming the first size that does not fit the others."""
        n = self.num_envs
        if n < 1:
            raise ConfigError(f"`num_envs` must be >= 1, got {n}")
        for name in ("total_steps", "eval_every"):
            if getattr(self, name) % n:
                raise ConfigError(f"`{name}` {getattr(self, name):,} must be a multiple of `num_envs` {n} "
                                  f"(both count transitions)")
        if self.buffer_size < n:
            raise ConfigError(f"`buffer_size` {self.buffer_size} must hold one vector step (`num_envs` {n})")
        self.update_fraction  # noqa: B018  (raises for a bad `updates_per_step`)

    @property
    def capacity(self) -> int:
        """Replay slots actually allocated: a ring larger than the run never wraps, so it is not needed."""
        return min(self.buffer_size, self.total_steps)

    @property
    def env_capacity(self) -> int:
        """The per-environment replay's one-step transitions in each environment's ring."""
        return self.capacity // self.num_envs

    @property
    def vector_steps(self) -> int:
        return self.total_steps // self.num_envs

    @property
    def first_learning_step(self) -> int:
        """The first vector step with updates: after it more than ``learning_starts`` transitions were taken."""
        return schedule.first_learning_step(self.learning_starts, self.num_envs)

    @property
    def update_fraction(self) -> tuple[int, int]:
        """``updates_per_step`` as an exact fraction (p, q) with q <= 1000 (``loops.schedule``)."""
        return schedule.update_fraction(self.updates_per_step)

    @property
    def max_updates_per_step(self) -> int:
        p, q = self.update_fraction
        return -(-p // q)

    def updates_after(self, vector_steps: int) -> int:
        """Updates an agent has made after ``vector_steps`` vector steps (a Python int)."""
        return schedule.updates_after(vector_steps, self.learning_starts, self.num_envs, *self.update_fraction)

    @property
    def updates(self) -> int:
        return self.updates_after(self.vector_steps)

    def replace(self, **changes: Any) -> LoopSettings:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(LoopSettings)


def compiled_settings(settings: TrainSettings) -> LoopSettings:
    """The compiled loop's settings for ``settings``; ConfigError names a setting it cannot honour."""
    unsupported = [
        (settings.backend != "jax", f"`backend` {settings.backend}"),
        (settings.exploration != "gaussian", f"`exploration` {settings.exploration}"),
        (settings.update_schedule != "step", f"`update_schedule` {settings.update_schedule}"),
        (settings.random_steps not in (None, settings.learning_starts),
         "`random_steps` other than `learning_starts`"),
        (settings.updates_per_call != 1, "`updates_per_call`"),
        (settings.overlap, "`overlap`"),
        (settings.skip_nonfinite, "`skip_nonfinite`"),
        (settings.time_feature, "`time_feature`"),
        (settings.vector_mode != "sync", f"`vector_mode` {settings.vector_mode} (its environments are vmapped)"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ConfigError(f"`compiled` does not support {what}")
    return LoopSettings(total_steps=settings.total_steps, learning_starts=settings.learning_starts,
                        eval_every=settings.eval_every, eval_episodes=settings.eval_episodes,
                        buffer_size=settings.buffer_size, num_envs=settings.num_envs,
                        updates_per_step=float(settings.updates_per_step), expl_noise=settings.expl_noise,
                        bootstrap_truncation=settings.bootstrap_truncation, replay_layout=settings.replay_layout)


class AgentState(NamedTuple):
    """Everything one agent carries from step to step (fasttd3: its own train state, which holds the
    observation normaliser; the per-environment replay: an ``NStepReplayState``; per-environment exploration
    scales: ``explore_scale``; the TD3 family's observation normaliser: ``obs_normalizer``)."""

    train_state: Any             # update.TrainState; fasttd3: fasttd3.state.TrainState
    replay: Any                  # replay.ReplayState; per_env_replay: fasttd3.device_replay.NStepReplayState
    env_state: Any               # the environments' own state pytree, leading axis N (num_envs)
    obs: jax.Array               # (N, obs_dim)
    key: jax.Array
    critic_loss_sum: jax.Array   # over the updates since the last evaluation (for metrics.csv)
    actor_loss_sum: jax.Array
    actor_updates: jax.Array
    updates: jax.Array
    explore_scale: Any = None    # config.explore_scales: (N,) each environment's exploration std (action scale units)
    obs_normalizer: Any = None   # td3_normalizes: fasttd3.state.NormalizerState, the observation statistics


class CompiledResult(NamedTuple):
    agents: AgentState           # leading axis K on every leaf
    eval_steps: np.ndarray       # (N,) env steps at which the evaluations ran
    eval_returns: np.ndarray     # (K, N, eval_episodes) undiscounted returns
    compile_seconds: float
    run_seconds: float


# -- one agent --------------------------------------------------------------------------

def is_fasttd3(config: TD3Config) -> bool:
    return config.algo == "fasttd3"


def td3_normalizes(config: TD3Config) -> bool:
    """Whether the agent keeps observation statistics beside TD3's train state (the TD3 family with
    ``obs_normalization``; fasttd3 keeps them in its own train state)."""
    return config.obs_normalization and not is_fasttd3(config)


def normalized_batch(statistics: Any, batch: Batch) -> Batch:
    """``batch`` with its obs and next_obs normalised with ``statistics`` (what TD3's update is given)."""
    return batch._replace(obs=normalize(statistics, batch.obs), next_obs=normalize(statistics, batch.next_obs))


def per_env_replay(config: TD3Config, settings: LoopSettings) -> bool:
    """Whether the agent keeps ``fasttd3.device_replay``'s rings, one per environment, n-step returns assembled
    at sampling (fasttd3 always; the TD3 family with ``replay_layout`` "per_env" or ``n_step`` > 1), rather
    than ``replay``'s flat ring."""
    return is_fasttd3(config) or settings.replay_layout == "per_env" or config.n_step > 1


def init_agent(config: TD3Config, settings: LoopSettings, env: JaxEnv, seed: jax.Array,
               dtype: DTypeLike) -> AgentState:
    key = jax.random.key(seed)
    init_key, reset_key, loop_key = jax.random.split(key, 3)
    env_state, obs = over_envs(env.reset_from, (0,))(env.draw_resets(reset_key, settings.num_envs, dtype))
    zero = jnp.zeros((), dtype)
    explore_scale = None
    if config.explore_scales:
        scale_draws = jax.random.uniform(jax.random.fold_in(key, 3), (settings.num_envs,), dtype)
        explore_scale = exploration_scale(config, scale_draws)
    replay: Any
    if per_env_replay(config, settings):
        replay = device_replay.nstep_replay_init(settings.env_capacity, settings.num_envs, config.obs_dim,
                                                 config.act_dim, dtype)
    else:
        replay = replay_init(settings.capacity, config.obs_dim, config.act_dim, dtype)
    c: Any = config
    train_state = (fasttd3_update.init_train_state(c, init_key, dtype) if is_fasttd3(config)
                   else init_train_state(config, init_key, dtype))
    obs_normalizer = normalizer_init(config.obs_dim, dtype) if td3_normalizes(config) else None
    return AgentState(
        train_state=train_state, replay=replay, env_state=env_state, obs=obs.astype(dtype), key=loop_key,
        critic_loss_sum=zero, actor_loss_sum=zero,
        actor_updates=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32), explore_scale=explore_scale,
        obs_normalizer=obs_normalizer)


class StepDraws(NamedTuple):
    """The random numbers of one vector step. They are drawn for a whole block of steps at once: one
    vectorised draw per block instead of a handful of small ones per step (each a loop on XLA:CPU).
    N is ``num_envs``, M ``max_updates_per_step``; with N = M = 1 the draws are the single-environment
    loop's (a draw's values depend on its key and element count, not on its shape)."""

    uniform_action: jax.Array   # (N, act_dim) U(0, 1): the warm-up actions
    action_noise: jax.Array     # (N, act_dim) N(0, 1): exploration noise
    reset: Any                  # (N, ...) the environments' draws for their next episode's start (used if one ends)
    replay_bits: jax.Array      # (M, batch) uint32: replay indices (bits mod the buffer's size)
    target_noise: jax.Array     # (M, batch, act_dim) N(0, 1): target-policy smoothing
    scale_uniform: Any = None   # explore_scales: (N,) U(0, 1): the new scale of an environment whose episode ends


def draw_block(config: TD3Config, settings: LoopSettings, env: JaxEnv, key: jax.Array, num_steps: int,
               dtype: DTypeLike) -> StepDraws:
    keys = jax.random.split(key, 5)
    act, batch = config.act_dim, config.batch_size
    n, m = settings.num_envs, settings.max_updates_per_step
    resets = env.draw_resets(keys[2], num_steps * n, dtype)
    scales = jax.random.uniform(jax.random.fold_in(key, 5), (num_steps, n), dtype) if config.explore_scales else None
    return StepDraws(
        uniform_action=jax.random.uniform(keys[0], (num_steps, n, act), dtype),
        action_noise=jax.random.normal(keys[1], (num_steps, n, act), dtype),
        reset=jax.tree_util.tree_map(lambda x: x.reshape((num_steps, n) + x.shape[1:]), resets),
        replay_bits=jax.random.bits(keys[3], (num_steps, m, batch), jnp.uint32),
        target_noise=jax.random.normal(keys[4], (num_steps, m, batch, act), dtype),
        scale_uniform=scales)


def exploration_scale(config: Any, uniform: jax.Array) -> jax.Array:
    """Per-environment exploration stds uniform in [std_min, std_max) from U(0, 1) draws (the host's rule,
    ``fasttd3.replay.draw_exploration_scales``)."""
    return config.std_min + (config.std_max - config.std_min) * uniform


def redraw_scales(config: TD3Config, explore_scale: jax.Array, ended: jax.Array, uniform: jax.Array) -> jax.Array:
    """The N exploration stds after a vector step: a fresh one (from ``uniform``) where the episode ended."""
    return jnp.where(ended, exploration_scale(config, uniform), explore_scale)


def explore(config: TD3Config, settings: LoopSettings, actor_params: Any, obs: jax.Array, transition: jax.Array,
            draws: StepDraws, std: jax.Array | float) -> jax.Array:
    """One environment's action for transition number ``transition``: uniform over the box before
    ``learning_starts``; then mu(s) + N(0, std * scale), clipped (``std``: ``expl_noise``, or the
    environment's own scale)."""
    low = jnp.asarray(config.action_low, obs.dtype)
    high = jnp.asarray(config.action_high, obs.dtype)
    scale = jnp.asarray(config.action_scale, obs.dtype)
    uniform = exploration.warmup_action(draws.uniform_action, low, high)
    noise = draws.action_noise * exploration.gaussian_std(std, scale)
    policy = exploration.explore_action(jnp.clip, actor_action(config, actor_params, obs[None])[0], noise, low, high)
    return jnp.where(exploration.in_warmup(transition, settings.learning_starts), uniform, policy)


def updates_this_step(settings: LoopSettings, step: jax.Array) -> jax.Array:
    """Updates at vector step ``step`` (at or after ``first_learning_step``): floor(j p / q) - floor((j - 1) p / q)
    for the j-th learning step, computed from (j - 1) mod q so that it never overflows int32."""
    return schedule.updates_at(schedule.learning_step(step, settings.learning_starts, settings.num_envs),
                               *settings.update_fraction)


def learn(config: TD3Config, settings: LoopSettings, agent: AgentState, step: jax.Array,
          draws: StepDraws) -> AgentState:
    """The updates of vector step ``step`` (``updates_this_step``) on batches from the agent's replay."""

    def one_update(agent: AgentState, replay_bits: jax.Array, target_noise: jax.Array) -> AgentState:
        train_state: Any
        if is_fasttd3(config):
            c: Any = config
            nstep_batch = device_replay.nstep_sample(agent.replay, replay_bits, c.n_step, c.gamma,
                                                     settings.bootstrap_truncation)
            train_state, metrics = fasttd3_update.update(c, agent.train_state, nstep_batch, target_noise)
        else:
            if per_env_replay(config, settings):   # TD3's own update on the n-step batch (``nstep_td3_sample``)
                batch = device_replay.nstep_td3_sample(agent.replay, replay_bits, config.n_step, config.gamma,
                                                       settings.bootstrap_truncation)
            else:
                batch = replay_gather(agent.replay, replay_indices_from_bits(agent.replay, replay_bits))
            if td3_normalizes(config):   # the replay's raw observations, normalised as they are now
                batch = normalized_batch(agent.obs_normalizer, batch)
            train_state, metrics = update(config, agent.train_state, batch, target_noise)
        return agent._replace(
            train_state=train_state,
            critic_loss_sum=agent.critic_loss_sum + metrics["critic_loss"],
            actor_loss_sum=agent.actor_loss_sum + metrics["actor_loss"],
            actor_updates=agent.actor_updates + metrics["actor_updated"].astype(jnp.int32),
            updates=agent.updates + 1)

    p, q = settings.update_fraction
    if q == 1 and p == 1:
        return one_update(agent, draws.replay_bits[0], draws.target_noise[0])
    if q == 1:  # a whole number: every learning step makes p updates
        return jax.lax.scan(lambda a, x: (one_update(a, *x), None), agent,
                            (draws.replay_bits, draws.target_noise))[0]
    count = updates_this_step(settings, step)

    def slot(agent: AgentState, x: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[AgentState, None]:
        index, replay_bits, target_noise = x
        # ``count`` is not batched over agents, so under vmap this stays a real branch.
        return jax.lax.cond(index < count, lambda a: one_update(a, replay_bits, target_noise), lambda a: a,
                            agent), None

    slots = jnp.arange(settings.max_updates_per_step, dtype=jnp.int32)
    return jax.lax.scan(slot, agent, (slots, draws.replay_bits, draws.target_noise))[0]


def over_envs(fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)`` over the environment axis. With one environment, ``fn`` runs unbatched on
    the squeezed arguments: N = 1 then compiles to the single-environment program step for step (a vmap of
    size 1 is fused differently by XLA and moves float32 results by an ulp)."""
    def call(*args: Any) -> Any:
        batched = [a for a, axis in zip(args, in_axes) if axis is not None]
        if jax.tree_util.tree_leaves(batched)[0].shape[0] != 1:
            return jax.vmap(fn, in_axes)(*args)
        squeezed = [a if axis is None else jax.tree_util.tree_map(lambda x: x[0], a) for a, axis in zip(args, in_axes)]
        return jax.tree_util.tree_map(lambda x: x[None], fn(*squeezed))
    return call


def act_in_env(config: TD3Config, settings: LoopSettings, env: JaxEnv, actor_params: Any, std: jax.Array | float,
               obs: jax.Array, env_state: Any, transition: jax.Array,
               draws: StepDraws) -> tuple[tuple[jax.Array, ...], Any]:
    """One environment's step: act (exploration std ``std``) and step. Returns the transition's (action,
    next_obs, reward, terminated, truncated) and the environment's state after the step (``reset_ended``
    resets it if the episode ended)."""
    action = explore(config, settings, actor_params, obs, transition, draws, std)
    env_state, next_obs, reward, terminated, truncated = env.step(env_state, action)
    return (action, next_obs, reward, terminated, truncated), env_state


def reset_ended(env: JaxEnv, env_state: Any, next_obs: jax.Array, ended: jax.Array, reset_draws: Any,
                over: Callable[..., Any], agent_axis: str | None) -> tuple[Any, jax.Array]:
    """The N environments' state and observation to go on from: each one's fresh start (from its
    pre-drawn ``reset_draws``) where its episode ended, else its state after the step. ``over`` maps a
    one-environment function over the N (``jax.vmap`` or ``over_envs``).

    The resets are computed only on vector steps where some environment of some agent ended (a
    ``lax.cond``): a reset can cost far more than a step (some environments settle the model for hundreds of
    physics steps). Under a vmap over agents (named ``agent_axis``) the predicate is reduced over the
    agents, so it is not batched and the cond stays a branch (a batched one would compute both sides);
    with agents sharded over devices the reduction is one all-reduce per vector step. Where none ended
    the selection would keep every state, so skipping it changes no value."""
    some_ended = jnp.any(ended).astype(jnp.int32)
    if agent_axis is not None:
        some_ended = jax.lax.pmax(some_ended, agent_axis)

    def fresh(operand: tuple[Any, jax.Array]) -> tuple[Any, jax.Array]:
        env_state, next_obs = operand
        return over(functools.partial(select_reset, env), (0, 0, 0, 0))(ended, env_state, next_obs, reset_draws)

    return jax.lax.cond(some_ended > 0, fresh, lambda operand: operand, (env_state, next_obs))


def select_reset(env: JaxEnv, ended: jax.Array, env_state: Any, next_obs: jax.Array,
                 reset_draws: Any) -> tuple[Any, jax.Array]:
    """One environment's state and observation to go on from: its fresh start if its episode ended."""
    fresh_state, fresh_obs = env.reset_from(reset_draws)
    env_state = jax.tree_util.tree_map(lambda a, b: jnp.where(ended, a, b), fresh_state, env_state)
    return env_state, jnp.where(ended, fresh_obs.astype(next_obs.dtype), next_obs)


def env_step(config: TD3Config, settings: LoopSettings, env: JaxEnv, agent: AgentState, step: jax.Array,
             draws: StepDraws, agent_axis: str | None = None) -> AgentState:
    """Vector step number ``step`` (0-based, the same for all agents): (``td3_normalizes``: fold the N current
    observations into the statistics,) act in and step the N environments, store their N transitions, reset
    those whose episode ended (and redraw their exploration scales, with ``config.explore_scales``), update."""
    n = settings.num_envs
    acting_obs = agent.obs
    if td3_normalizes(config):   # fasttd3's rule: the statistics see the observations before the actor does
        agent = agent._replace(obs_normalizer=normalizer_update(agent.obs_normalizer, agent.obs))
        acting_obs = normalize(agent.obs_normalizer, agent.obs)
    transitions = step * n + jnp.arange(n, dtype=jnp.int32)
    # The replay's, the updates' and the new scales' draws are not the environments'.
    env_draws = draws._replace(replay_bits=None, target_noise=None, scale_uniform=None)  # type: ignore[arg-type]
    step_one = functools.partial(act_in_env, config, settings, env)
    std, std_axis = (agent.explore_scale, 0) if config.explore_scales else (settings.expl_noise, None)
    (action, next_obs, reward, terminated, truncated), env_state = over_envs(step_one, (None, std_axis, 0, 0, 0, 0))(
        agent.train_state.actor_params, std, acting_obs, agent.env_state, transitions, env_draws)
    ended = terminated | truncated
    env_state, obs = reset_ended(env, env_state, next_obs, ended, draws.reset, over_envs, agent_axis)
    replay: Any
    if per_env_replay(config, settings):
        replay = device_replay.nstep_replay_add(agent.replay, agent.obs, action, reward, next_obs, terminated,
                                                truncated, config.n_step)
    else:
        ends_return = terminated if settings.bootstrap_truncation else ended
        replay = replay_add(agent.replay, Batch(agent.obs, action, next_obs, reward.reshape(n, 1),
                                                (1 - ends_return.astype(reward.dtype)).reshape(n, 1)))
    agent = agent._replace(replay=replay, env_state=env_state, obs=obs)
    if config.explore_scales:
        agent = agent._replace(explore_scale=redraw_scales(config, agent.explore_scale, ended, draws.scale_uniform))
    # ``step`` is not batched over agents, so under vmap this stays a real branch (no wasted update).
    return jax.lax.cond(schedule.learns_at(step, settings.learning_starts, settings.num_envs),
                        lambda a: learn(config, settings, a, step, draws), lambda a: a, agent)


def fasttd3_policy(config: Any, train_state: Any, obs: jax.Array) -> jax.Array:
    """fasttd3's noiseless actions (B, act_dim) for raw observations (normalised with the state's statistics)."""
    if config.obs_normalization:
        obs = normalize(train_state.obs_normalizer, obs)
    return fasttd3_networks.actor_action(config, train_state.actor_params, obs)


def fasttd3_env_step(config: Any, settings: LoopSettings, env: JaxEnv, agent: AgentState, step: jax.Array,
                     draws: StepDraws, agent_axis: str | None = None) -> AgentState:
    """fasttd3's vector step ``step``: the normaliser sees the N current observations, the N environments
    act (uniform in the warm-up, else the actor's action plus N(0, 1) x each environment's scale x the
    action scale, clipped), step and reset where their episode ended; the ring stores the N one-step
    transitions; an environment whose episode ended draws a new scale; then the updates owed."""
    n = settings.num_envs
    train_state = agent.train_state
    if config.obs_normalization:
        train_state = train_state._replace(obs_normalizer=normalizer_update(train_state.obs_normalizer, agent.obs))
    dtype = agent.obs.dtype
    low, high = jnp.asarray(config.action_low, dtype), jnp.asarray(config.action_high, dtype)
    scale = jnp.asarray(config.action_scale, dtype)
    noise = draws.action_noise * (agent.explore_scale[:, None] * scale)
    policy = exploration.explore_action(jnp.clip, fasttd3_policy(config, train_state, agent.obs), noise, low, high)
    uniform = exploration.warmup_action(draws.uniform_action, low, high)
    transitions = step * n + jnp.arange(n, dtype=jnp.int32)
    action = jnp.where(exploration.in_warmup(transitions, settings.learning_starts)[:, None], uniform, policy)
    env_state, next_obs, reward, terminated, truncated = jax.vmap(env.step)(agent.env_state, action)
    env_state, obs = reset_ended(env, env_state, next_obs, terminated | truncated, draws.reset, jax.vmap,
                                 agent_axis)
    replay = device_replay.nstep_replay_add(agent.replay, agent.obs, action, reward, next_obs, terminated, truncated,
                                            config.n_step)
    explore_scale = redraw_scales(config, agent.explore_scale, terminated | truncated, draws.scale_uniform)
    agent = agent._replace(train_state=train_state, replay=replay, env_state=env_state, obs=obs,
                           explore_scale=explore_scale)
    if settings.first_learning_step >= settings.vector_steps:   # a run that never learns compiles no update
        return agent
    return jax.lax.cond(schedule.learns_at(step, settings.learning_starts, settings.num_envs),
                        lambda a: learn(config, settings, a, step, draws), lambda a: a, agent)


def run_steps(config: TD3Config, settings: LoopSettings, env: JaxEnv, agent: AgentState, first_step: jax.Array,
              num_steps: int, agent_axis: str | None = None) -> AgentState:
    """``num_steps`` vector steps from vector step ``first_step``; ``agent_axis``: the name of the vmap
    over agents this runs under, if any (resets are then computed when any agent needs one)."""
    key, block_key = jax.random.split(agent.key)
    draws = draw_block(config, settings, env, block_key, num_steps, agent.obs.dtype)
    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
    step_fn = fasttd3_env_step if is_fasttd3(config) else env_step
    agent, _ = jax.lax.scan(lambda a, x: (step_fn(config, settings, env, a, *x, agent_axis), None), agent,
                            (steps, draws))
    return agent._replace(key=key)


def evaluate(config: TD3Config, settings: LoopSettings, env: JaxEnv, actor_params: Any, key: jax.Array,
             dtype: DTypeLike, train_state: Any = None, obs_normalizer: Any = None) -> jax.Array:
    """Returns of ``eval_episodes`` noiseless episodes, run side by side (one batch of environments) for
    the time limit; an episode that ends earlier stops counting reward there. fasttd3 acts from its
    ``train_state`` (``actor_params`` unused), normalising with its frozen statistics; the TD3 family with
    ``td3_normalizes`` normalises with ``obs_normalizer`` (frozen likewise)."""
    env_states, obs = jax.vmap(lambda k: env.reset(k, dtype))(jax.random.split(key, settings.eval_episodes))

    def policy(obs: jax.Array) -> jax.Array:
        if is_fasttd3(config):
            return fasttd3_policy(config, train_state, obs)
        if td3_normalizes(config):
            obs = normalize(obs_normalizer, obs)
        return actor_action(config, actor_params, obs)

    def one_step(carry: tuple, _: None) -> tuple[tuple, None]:
        env_states, obs, returns, running = carry
        actions = policy(obs)
        env_states, obs, rewards, terminated, truncated = jax.vmap(env.step)(env_states, actions)
        returns = returns + jnp.where(running, rewards, jnp.zeros_like(rewards))
        return (env_states, obs, returns, running & ~(terminated | truncated)), None

    running = jnp.ones(settings.eval_episodes, bool)
    (_, _, returns, _), _ = jax.lax.scan(
        one_step, (env_states, obs, jnp.zeros(settings.eval_episodes, dtype), running), None,
        env.spec.max_episode_steps)
    return returns


# -- many agents, one program -----------------------------------------------------------

def progress_block(eval_every: int) -> int:
    """Steps between progress callbacks: the largest divisor of ``eval_every`` up to a tenth of it
    (at most MAX_PROGRESS_BLOCK); ``eval_every`` itself when that divisor is too small to be worth it."""
    target = min(max(eval_every // 10, 1), MAX_PROGRESS_BLOCK)
    block = max(d for d in range(1, target + 1) if eval_every % d == 0)
    return block if block >= max(target // 10, 1) else eval_every


def batch_hyperparameters(config: TD3Config, settings: LoopSettings, num_agents: int,
                          dtype: DTypeLike) -> tuple[TD3Config, LoopSettings]:
    """Config and settings whose numeric leaves are arrays of shape (K,) in ``dtype``.

    A leaf may be a scalar (the same for every agent) or a sequence of K values (a sweep).
    """
    def broadcast(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype)
        if x.ndim == 0:
            return np.full((num_agents,), x)
        if x.shape != (num_agents,):
            raise ConfigError(f"a swept hyperparameter needs {num_agents} values (one per agent), got {x.shape}")
        return x

    return jax.tree_util.tree_map(broadcast, (config, settings))


class _Pieces:
    """The parts every program of a ``ChunkedRun`` is made of: agents initialised, trained for some vector
    steps and evaluated, all K at once, sharded over ``mesh``."""

    def __init__(self, config: TD3Config, settings: LoopSettings, env: JaxEnv, dtype: DTypeLike, mesh: Mesh,
                 on_progress: Callable | None = None):
        self.settings, self.env, self.dtype = settings, env, dtype
        self.on_progress = on_progress
        agent_sharding = NamedSharding(mesh, PartitionSpec(AGENT_AXIS))
        self.shard = lambda tree: jax.tree_util.tree_map(
            lambda x: jax.lax.with_sharding_constraint(x, agent_sharding), tree)

    def init(self, hparams: Any, seeds: jax.Array) -> AgentState:
        env, dtype = self.env, self.dtype
        return self.shard(jax.vmap(lambda h, s: init_agent(h[0], h[1], env, s, dtype))(hparams, seeds))

    def eval_keys(self, seeds: jax.Array) -> jax.Array:
        return self.shard(jax.vmap(jax.random.key)(exploration.evaluation_seed(seeds)))

    def train_for(self, hparams: Any, agents: AgentState, first_step: jax.Array, num_steps: int) -> AgentState:
        """``num_steps`` vector steps from ``first_step`` (not batched: the same for every agent)."""
        # All agents share the update counter, so it enters vmap unbatched: the delayed actor update's
        # lax.cond inside ``update`` then stays a branch instead of becoming a select of both sides.
        num_agents = agents.obs.shape[0]
        shared_step = agents.train_state.step[0]
        env = self.env

        def one(h: Any, agent: AgentState, step: jax.Array) -> tuple[AgentState, jax.Array]:
            agent = agent._replace(train_state=agent.train_state._replace(step=step))
            agent = run_steps(h[0], h[1], env, agent, first_step, num_steps, AGENT_VMAP_AXIS)
            # The step leaves the vmap unbatched (out_axes None), beside the agent.
            return (agent._replace(train_state=agent.train_state._replace(step=None)),  # type: ignore[arg-type]
                    agent.train_state.step)

        in_axes = (0, _agent_axes(agents), None)
        agents, step = jax.vmap(one, in_axes, out_axes=(0, None), axis_name=AGENT_VMAP_AXIS)(hparams, agents,
                                                                                          shared_step)
        step = jnp.broadcast_to(step, (num_agents,))
        return self.shard(agents._replace(train_state=agents.train_state._replace(step=step)))

    def train_blocks(self, hparams: Any, agents: AgentState, first_step: jax.Array, num_blocks: int,
                     block: int) -> AgentState:
        """``num_blocks`` x ``block`` vector steps from ``first_step``, reporting progress (in transitions)
        after each block."""
        n = self.settings.num_envs

        def progress(agents: AgentState, block_index: jax.Array) -> tuple[AgentState, None]:
            first = first_step + block_index * block
            agents = self.train_for(hparams, agents, first, block)
            if self.on_progress is not None:
                jax.debug.callback(self.on_progress, (first + block) * n)
            return agents, None

        return jax.lax.scan(progress, agents, jnp.arange(num_blocks, dtype=jnp.int32))[0]

    def draws(self, hparams: Any, keys: jax.Array, num_steps: int) -> StepDraws:
        """The random draws of one block of ``num_steps`` vector steps for all K agents (what ``run_steps``
        draws at once; for the memory they take: ``ChunkedRun.allocation_shapes``)."""
        env, dtype = self.env, self.dtype
        return jax.vmap(lambda h, k: draw_block(h[0], h[1], env, k, num_steps, dtype))(hparams, keys)

    def evaluate_all(self, hparams: Any, agents: AgentState,
                     eval_keys: jax.Array) -> tuple[AgentState, jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
        """(agents with the loss sums reset, returns (K, E), report): report is (critic_loss, actor_loss,
        updates), each (K,), the means over the updates since the last evaluation."""
        env, dtype = self.env, self.dtype
        returns = jax.vmap(lambda h, a, k: evaluate(h[0], h[1], env, a.train_state.actor_params, k, dtype,
                                                    a.train_state, a.obs_normalizer))(hparams, agents, eval_keys)
        actor_updates = jnp.maximum(agents.actor_updates, 1).astype(dtype)
        critic_loss = agents.critic_loss_sum / jnp.maximum(agents.updates, 1).astype(dtype)
        report = (critic_loss, agents.actor_loss_sum / actor_updates, agents.updates)
        zero = jnp.zeros_like(agents.critic_loss_sum)
        agents = self.shard(agents._replace(critic_loss_sum=zero, actor_loss_sum=zero,
                                            actor_updates=jnp.zeros_like(agents.actor_updates)))
        return agents, returns, report


def _agent_axes(agents: AgentState) -> AgentState:
    """vmap axes of AgentState: every leaf batched, the train state as ``agents.train_state_axes``."""
    return jax.tree_util.tree_map(lambda _: 0, agents)._replace(train_state=train_state_axes(type(agents.train_state)))


def eval_steps(settings: LoopSettings) -> np.ndarray:
    steps = list(range(0, settings.total_steps + 1, settings.eval_every))
    if steps[-1] != settings.total_steps:
        steps.append(settings.total_steps)
    return np.array(steps)


# -- a run in chunks: one compiled call per chunk, the state carried between calls ---------

class Evaluation(NamedTuple):
    """One evaluation of all K agents, on the host."""

    step: int                    # transitions done (over all environments) when it ran
    returns: np.ndarray          # (K, eval_episodes)
    critic_loss: np.ndarray      # (K,) means over the updates since the previous evaluation
    actor_loss: np.ndarray       # (K,)
    updates: np.ndarray          # (K,) updates so far


def _check_dims(config: TD3Config, env: JaxEnv) -> None:
    spec = env.spec
    if (config.obs_dim, config.act_dim) != (spec.obs_dim, spec.act_dim):
        raise ConfigError(f"config is for obs/act dims {config.obs_dim}/{config.act_dim}, {spec.env_id} has "
                          f"{spec.obs_dim}/{spec.act_dim}")


def _check_replay(config: TD3Config, settings: LoopSettings) -> None:
    """ConfigError for a replay layout the algorithm cannot use, or sizes the per-environment replay cannot serve."""
    n_step, n = config.n_step, settings.num_envs
    if settings.replay_layout == "flat" and (is_fasttd3(config) or n_step > 1):
        why = "fasttd3 keeps one ring per environment" if is_fasttd3(config) else f"`n_step` {n_step} needs it"
        raise ConfigError(f"`replay_layout` flat: {why}; use per_env")
    if not per_env_replay(config, settings):
        return
    if settings.env_capacity < n_step:
        raise ConfigError(f"the per-environment replay holds {settings.env_capacity:,} steps per environment "
                          f"(`buffer_size` {settings.buffer_size:,} / `num_envs` {n}); `n_step` {n_step} needs at "
                          f"least {n_step}")
    if settings.learning_starts < (n_step - 1) * n:
        raise ConfigError(f"{config.algo} with `n_step` {n_step} needs `learning_starts` >= {(n_step - 1) * n} "
                          f"((n_step - 1) x num_envs), so that every environment has a finished transition when "
                          f"updates start")


def _check_fasttd3(config: Any, settings: LoopSettings) -> None:
    """ConfigError for what fasttd3's update cannot run without."""
    if (config.actor_lr_end is not None or config.critic_lr_end is not None) and not config.lr_schedule_updates:
        raise ConfigError("a cosine learning rate (`actor_lr_end`, `critic_lr_end`) needs `lr_schedule_updates` "
                          "(`loops.host.fasttd3_run_config` sets it to the run's updates)")


def _to_host(x: Any) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


class ChunkedRun:
    """The compiled run: a sequence of compiled calls of ``chunk_steps`` transitions each (default:
    ``eval_every``; it must divide ``eval_every``), plus one call per evaluation; ``run()`` runs it from
    start to end (``train_compiled``).

    The agents' state stays on the devices between calls (each call donates it to the next), so the
    results do not depend on the chunk size but by rounding. Between calls the caller may save
    ``host_state(agents)`` and stop; ``agents_from_host`` rebuilds the state and the run continues
    bit for bit (the same compiled programs on the same inputs)::

        run = ChunkedRun(config, settings, seeds, env=env)
        agents, first = run.start()                 # initial agents and the evaluation at step 0
        agents, done = run.advance(agents, 0)       # one chunk
        saved = run.host_state(agents)              # what a checkpoint stores before it stops
        agents, evaluations = run.run_from(agents, done)                  # the rest, to total_steps
        resumed, again = run.run_from(run.agents_from_host(saved), done)  # the same, bit for bit

    ``run_from`` is the loop of ``advance``, ``evaluates_at`` and ``evaluate``; a caller that saves
    between chunks calls those itself.
    """

    def __init__(self, config: TD3Config, settings: LoopSettings, seeds: ArrayLike, *, env: JaxEnv,
                 dtype: DTypeLike = jnp.float32, chunk_steps: int | None = None,
                 devices: Sequence[jax.Device] | None = None, on_progress: Callable | None = None,
                 compiler_options: dict | None = None):
        _check_dims(config, env)
        settings.check()
        _check_replay(config, settings)
        if is_fasttd3(config):
            _check_fasttd3(config, settings)
        n = settings.num_envs
        # Random numbers are drawn per progress block of the evaluation period; a chunk holds whole blocks,
        # so that every chunk size draws (and computes) the same.
        self.block = progress_block(settings.eval_every // n)
        chunk_steps = settings.eval_every if chunk_steps is None else int(chunk_steps)
        if chunk_steps < 1 or chunk_steps % (self.block * n) or settings.eval_every % chunk_steps:
            raise ConfigError(f"`chunk_steps` {chunk_steps:,} must divide `eval_every` {settings.eval_every:,} "
                              f"and be a multiple of {self.block * n:,} (the steps whose random numbers are "
                              f"drawn together)")
        self.settings, self.chunk_steps, self.env = settings, chunk_steps, env
        self.seeds = np.asarray(seeds, np.int32).reshape(-1)
        self.dtype = jnp.dtype(dtype)
        mesh = agent_mesh(len(self.seeds), devices)
        sharding = NamedSharding(mesh, PartitionSpec(AGENT_AXIS))
        hparams = batch_hyperparameters(config, settings, len(self.seeds), self.dtype)
        self.hparams = jax.tree_util.tree_map(lambda x: global_array(x, sharding), hparams)
        self.seed_array = global_array(self.seeds, sharding)
        self.sharding = sharding
        self.pieces = _Pieces(config, settings, env, self.dtype, mesh, on_progress)
        self.options = xla_options.with_defaults(compiler_options)
        self.compile_seconds = 0.0
        self.run_seconds = 0.0
        self._executables: dict = {}
        self._eval_keys: jax.Array | None = None

    def for_agents(self, seeds: ArrayLike, config: TD3Config, settings: LoopSettings | None = None) -> ChunkedRun:
        """This run for other seeds or other hyperparameter values (the leaves of ``config`` and ``settings``;
        the same sizes and number of agents), sharing its compiled programs: they take those as inputs."""
        settings = self.settings if settings is None else settings
        other = copy.copy(self)
        other.seeds = np.asarray(seeds, np.int32).reshape(-1)
        hparams = batch_hyperparameters(config, settings, len(self.seeds), self.dtype)
        if len(other.seeds) != len(self.seeds) or \
                jax.tree_util.tree_structure(hparams) != jax.tree_util.tree_structure(self.hparams):  # type: ignore[operator]  # PyTreeDef's stub does not resolve
            raise ConfigError("`for_agents` takes as many seeds, and a config and settings of the same sizes")
        other.hparams = jax.tree_util.tree_map(lambda x: global_array(x, self.sharding), hparams)
        other.seed_array = global_array(other.seeds, self.sharding)
        other._eval_keys = None
        return other

    def run(self, on_eval: Callable | None = None) -> CompiledResult:
        """The whole run from step 0: its final agents and every evaluation's returns. ``on_eval(step,
        returns (K, E), critic_loss (K,), actor_loss (K,), updates (K,))`` receives each evaluation on
        the host (steps in transitions; losses the means since the previous evaluation)."""
        compile_seconds, run_seconds = self.compile_seconds, self.run_seconds
        agents, first = self.start()
        if on_eval is not None:
            on_eval(*first)
        agents, evaluations = self.run_from(agents, 0, on_eval)
        curve = [first.returns] + [evaluation.returns for evaluation in evaluations]
        return CompiledResult(agents, eval_steps(self.settings), np.stack(curve, axis=1),
                              self.compile_seconds - compile_seconds, self.run_seconds - run_seconds)

    def run_from(self, agents: AgentState, done_steps: int,
                 on_eval: Callable | None = None) -> tuple[AgentState, list[Evaluation]]:
        """The run from ``done_steps`` transitions (a chunk boundary, e.g. a saved state's) to
        ``settings.total_steps``: chunks of ``advance``, each followed by ``evaluate`` where
        ``evaluates_at`` says. Returns ``(agents, evaluations)``: the final agents (on the devices) and
        the evaluations it made, in step order (``Evaluation``; none at ``done_steps`` itself, so a run
        from 0 leaves out ``start``'s). ``on_eval`` receives each as ``run``'s does, when it is made.
        ``agents`` is donated to the first call, as to ``advance``."""
        evaluations = []
        done = done_steps
        while done < self.settings.total_steps:
            agents, done = self.advance(agents, done)
            if self.evaluates_at(done):
                agents, evaluation = self.evaluate(agents, done)
                evaluations.append(evaluation)
                if on_eval is not None:
                    on_eval(*evaluation)
        return agents, evaluations

    def agent_shapes(self) -> AgentState:
        """Shapes and dtypes of the agents' whole state (``jax.eval_shape`` of its initialisation)."""
        return jax.eval_shape(self.pieces.init, self.hparams, self.seed_array)

    def allocation_shapes(self, done_steps: int = 0) -> tuple[AgentState, StepDraws | None]:
        """(agents, draws): shapes and dtypes of what the run from ``done_steps`` allocates, from
        ``jax.eval_shape`` of the functions that allocate it: the agents' whole state (leading axis K) and
        the largest block of random draws it makes at once (all K agents')."""
        agents = self.agent_shapes()
        blocks, done = set(), done_steps
        while done < self.settings.total_steps:
            num, block = self._chunk(done)
            blocks.add(block)
            done += num * self.settings.num_envs
        draws = [jax.eval_shape(lambda h, k, b=b: self.pieces.draws(h, k, b), self.hparams, agents.key)
                 for b in sorted(blocks)]
        return agents, max(draws, key=_tree_bytes) if draws else None

    def _compile(self, name: Hashable, make: Callable[[], jax.stages.Wrapped], *args: Any) -> None:
        if name not in self._executables:
            start = time.perf_counter()
            self._executables[name] = make().lower(*args).compile(self.options)
            self.compile_seconds += time.perf_counter() - start

    def _call(self, name: Hashable, make: Callable[[], jax.stages.Wrapped], *args: Any) -> Any:
        """Run the compiled program ``name`` (compiled on first use, timed apart from its runs)."""
        self._compile(name, make, *args)
        start = time.perf_counter()
        out = jax.block_until_ready(self._executables[name](*args))
        self.run_seconds += time.perf_counter() - start
        return out

    def _keys(self) -> jax.Array:
        if self._eval_keys is None:
            self._eval_keys = self._call("eval_keys", lambda: jax.jit(self.pieces.eval_keys), self.seed_array)
        return self._eval_keys

    def compile_ahead(self, done_steps: int = 0) -> None:
        """Compile the programs a run from ``done_steps`` calls (but the last chunk's, when it is shorter),
        so that the run's first calls start at once."""
        agents = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.sharding),
                                        self.agent_shapes())
        if done_steps == 0:
            self._compile("init", lambda: jax.jit(self.pieces.init), self.hparams, self.seed_array)
        self._keys()
        self._compile("evaluate", self._evaluate_program, self.hparams, agents, self._keys())
        num, block = self._chunk(done_steps)
        self._compile(("train", num, block), lambda: self._train_program(num, block), self.hparams, agents,
                      jnp.int32(done_steps // self.settings.num_envs))

    def initial_agents(self) -> AgentState:
        return self._call("init", lambda: jax.jit(self.pieces.init), self.hparams, self.seed_array)

    def start(self) -> tuple[AgentState, Evaluation]:
        """Fresh agents and their evaluation at step 0."""
        return self.evaluate(self.initial_agents(), 0)

    def evaluates_at(self, step: int) -> bool:
        settings = self.settings
        return schedule.evaluation_due(step - settings.num_envs, step, settings.eval_every, settings.total_steps)

    def advance(self, agents: AgentState, done_steps: int) -> tuple[AgentState, int]:
        """One chunk from ``done_steps`` transitions (a chunk boundary): ``(agents, done_steps)`` after it."""
        num, block = self._chunk(done_steps)
        n = self.settings.num_envs
        agents = self._call(("train", num, block), lambda: self._train_program(num, block), self.hparams, agents,
                            jnp.int32(done_steps // n))
        return agents, done_steps + num * n

    def _chunk(self, done_steps: int) -> tuple[int, int]:
        """(vector steps, block) of the chunk from ``done_steps``: a chunk of whole blocks, or in the last,
        partial evaluation period (where the one program runs it as one block) the rest of the run.

        A resumed run may start off this run's grid of chunks: at a checkpoint of another ``chunk_steps``
        (its first chunk then runs whole blocks up to the next chunk boundary, drawing what the other
        chunks draw), or at the end of a finished run extended with a larger ``total_steps`` that ended in
        a partial block (one block up to the next block boundary: its random draws differ from those of
        a run that had the larger ``total_steps`` from the start)."""
        settings, n = self.settings, self.settings.num_envs
        period, chunk = settings.eval_every // n, self.chunk_steps // n
        first = done_steps // n
        if first >= settings.vector_steps // period * period:
            return settings.vector_steps - first, settings.vector_steps - first
        if first % self.block:
            return self.block - first % self.block, self.block - first % self.block
        return chunk - first % chunk, self.block

    def _train_program(self, num: int, block: int) -> jax.stages.Wrapped:
        return jax.jit(lambda h, a, first: self.pieces.train_blocks(h, a, first, num // block, block),
                       donate_argnums=1)

    def _evaluate_program(self) -> jax.stages.Wrapped:
        return jax.jit(self.pieces.evaluate_all, donate_argnums=1)

    def evaluate(self, agents: AgentState, step: int) -> tuple[AgentState, Evaluation]:
        agents, returns, report = self._call("evaluate", self._evaluate_program, self.hparams, agents, self._keys())
        return agents, Evaluation(step, _to_host(returns), *(_to_host(x) for x in report))

    def host_state(self, agents: AgentState) -> dict[str, np.ndarray]:
        """Every leaf of the agents' state as a host array (PRNG keys as their key data), keyed by tree path
        (``backends.base.leaf_names``): what a checkpoint stores to resume exactly. Single-process runs only."""
        from jax_td3.backends.base import leaf_names

        return {name: np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
                for name, x in leaf_names(agents)}

    def agents_from_host(self, leaves: dict[str, np.ndarray] | list[np.ndarray]) -> AgentState:
        """The agents' state from ``host_state``'s arrays (or a format-1 checkpoint's list of leaves in tree
        order), placed on the devices as ``start`` places it."""
        from jax_td3.backends.base import leaf_names

        shapes = self.agent_shapes()
        structure = jax.tree_util.tree_structure(shapes)
        expected = jax.tree_util.tree_leaves(shapes)
        if isinstance(leaves, dict):
            names = [name for name, _ in leaf_names(shapes)]
            missing, unexpected = sorted(set(names) - set(leaves)), sorted(set(leaves) - set(names))
            if missing or unexpected:
                raise ConfigError(f"the saved state's arrays differ from this run's: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")
            leaves = [leaves[name] for name in names]
        if len(leaves) != len(expected):
            raise ConfigError(f"the saved state has {len(leaves)} arrays, this run's has {len(expected)}")
        leaves = jax.tree_util.tree_leaves(_resize_replay(jax.tree_util.tree_unflatten(structure, list(leaves)),
                                                        self.settings.capacity))
        restored = []
        for leaf, shape in zip(leaves, expected):
            leaf = np.asarray(leaf)
            if jnp.issubdtype(shape.dtype, jax.dtypes.prng_key):
                array = global_array(leaf, self.sharding)
                restored.append(jax.random.wrap_key_data(array))
                continue
            if leaf.shape != shape.shape or leaf.dtype != shape.dtype:
                raise ConfigError(f"a saved array has shape {leaf.shape} {leaf.dtype}, this run's has "
                                  f"{shape.shape} {shape.dtype}")
            restored.append(global_array(leaf, self.sharding))
        return jax.tree_util.tree_unflatten(structure, restored)


def _resize_replay(agents: AgentState, capacity: int) -> AgentState:
    """Saved agents with their replay rings resized to ``capacity`` slots. A run whose ``total_steps``
    changes on resume allocates another number of slots (``LoopSettings.capacity``); a ring smaller than
    the buffer size has never wrapped, so its transitions sit in its first slots, as they would in a
    ring of the new size from the start (the other slots empty). A ring filled exactly (a finished run's,
    whose ``total_steps`` is its capacity) has its write position back at slot 0 without having wrapped;
    in the larger ring it continues after its last transition."""
    replay = agents.replay
    saved = replay.obs.shape[1]
    if isinstance(replay, device_replay.NStepReplayState):   # per-environment rings
        capacity = capacity // replay.obs.shape[2]
    if saved == capacity:
        return agents
    position, size = np.asarray(replay.position), np.asarray(replay.size)
    if np.any(position != size % saved) or np.any(size > capacity):
        raise ConfigError(f"the saved replay ({saved:,} slots) has wrapped and cannot become {capacity:,} slots")

    def resize(x: Any) -> np.ndarray:
        x = np.asarray(x)[:, :capacity]
        return np.concatenate([x, np.zeros((x.shape[0], capacity - x.shape[1]) + x.shape[2:], x.dtype)], axis=1)

    # Host arrays in the device layout's place: ``agents_from_host`` places them on the devices.
    rings = device_replay.RING_FIELDS if isinstance(replay, device_replay.NStepReplayState) else Batch._fields
    return agents._replace(replay=replay._replace(**{name: resize(getattr(replay, name)) for name in rings},
                                                  position=(size % capacity).astype(position.dtype)))


def _tree_bytes(tree: Any) -> int:
    return sum(int(np.prod(x.shape, dtype=np.int64)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def train_compiled(config: TD3Config, settings: LoopSettings, seeds: ArrayLike, *, env: JaxEnv,
                   dtype: DTypeLike = jnp.float32, chunk_steps: int | None = None,
                   devices: Sequence[jax.Device] | None = None, on_progress: Callable | None = None,
                   on_eval: Callable | None = None, compiler_options: dict | None = None) -> CompiledResult:
    """Train ``len(seeds)`` agents from start to end as one ``ChunkedRun``; see the module docstring.

    ``config`` and ``settings`` leaves (numbers) may be length-K sequences to sweep them.
    ``devices`` (default: all) carry the agent axis. ``compiler_options`` go to XLA
    (e.g. ``{"xla_backend_optimization_level": 0}`` compiles faster, runs slower), on top of
    ``xla_options.compiler_options()``. ``on_progress(step)`` is called on the host after every progress
    block and ``on_eval`` after every evaluation (``ChunkedRun.run``). Compilation is timed apart from the run.
    """
    run = ChunkedRun(config, settings, seeds, env=env, dtype=dtype, chunk_steps=chunk_steps, devices=devices,
                     on_progress=on_progress, compiler_options=compiler_options)
    return run.run(on_eval)
