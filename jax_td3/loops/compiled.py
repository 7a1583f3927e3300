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
steps, then the actor's action plus N(0, expl_noise * action_scale), clipped to the box;
one update per step once the buffer holds more than ``learning_starts`` transitions;
truncation bootstraps (``not_done`` = 0 only on termination); evaluation every
``eval_every`` steps (and at step 0) as the mean return of ``eval_episodes`` noiseless
episodes that start from the same states every time (their own keys).

A sweep from Python (each agent gets one value; seeds may repeat)::

    config = make_config("td3", max_action=2.0).replace(actor_lr=np.array([1e-3, 3e-4, 1e-4]))
    result = train_compiled(config, LoopSettings(total_steps=10_000), seeds=[0, 0, 0], env=PendulumEnv())
    result.eval_returns          # (3, evaluations, eval_episodes)

Structure of the program (the host callbacks sit outside ``vmap``, so each fires
once for all agents):

    scan over evaluation periods:
        scan over progress blocks:
            vmap over agents: scan over the block's env steps (act, step, store, update)
            host callback: progress
        vmap over agents: evaluate
        host callback: evaluation row (metrics.csv)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_td3 import xla_options
from jax_td3.config import TD3Config, static
from jax_td3.presets import DEFAULTS
from jax_td3.envs.base import JaxEnv
from jax_td3.errors import ConfigError
from jax_td3.loops import exploration
from jax_td3.loops.agents import AGENT_AXIS, agent_mesh, global_array, train_state_axes
from jax_td3.networks import actor_action
from jax_td3.replay import ReplayState, replay_add, replay_gather, replay_indices_from_bits, replay_init
from jax_td3.update import Batch, TrainState, init_train_state, update

MAX_PROGRESS_BLOCK = 1_000    # progress callbacks at least every this many steps (when a divisor allows)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """The compiled loop's settings: sizes are static; ``expl_noise`` is a leaf (vmappable)."""

    total_steps: int = static(DEFAULTS["total_steps"])
    learning_starts: int = static(DEFAULTS["learning_starts"])
    """Uniform random actions before this many steps; one update per step after it."""
    eval_every: int = static(DEFAULTS["eval_every"])
    eval_episodes: int = static(DEFAULTS["eval_episodes"])
    buffer_size: int = static(DEFAULTS["buffer_size"])
    expl_noise: float = DEFAULTS["expl_noise"]
    """Std of the Gaussian exploration noise, in units of the action scale."""

    @property
    def capacity(self) -> int:
        """Replay slots actually allocated: a ring larger than the run never wraps, so it is not needed."""
        return min(self.buffer_size, self.total_steps)

    @property
    def updates(self) -> int:
        return max(self.total_steps - self.learning_starts, 0)

    def replace(self, **changes) -> "LoopSettings":
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(LoopSettings)


class AgentState(NamedTuple):
    """Everything one agent carries from step to step."""

    train_state: TrainState
    replay: ReplayState
    env_state: Any               # the environment's own state pytree
    obs: jax.Array
    key: jax.Array
    critic_loss_sum: jax.Array   # over the updates since the last evaluation (for metrics.csv)
    actor_loss_sum: jax.Array
    actor_updates: jax.Array
    updates: jax.Array


class CompiledResult(NamedTuple):
    agents: AgentState           # leading axis K on every leaf
    eval_steps: np.ndarray       # (N,) env steps at which the evaluations ran
    eval_returns: np.ndarray     # (K, N, eval_episodes) undiscounted returns
    compile_seconds: float
    run_seconds: float


# -- one agent --------------------------------------------------------------------------

def init_agent(config: TD3Config, settings: LoopSettings, env: JaxEnv, seed, dtype) -> AgentState:
    key = jax.random.key(seed)
    init_key, reset_key, loop_key = jax.random.split(key, 3)
    env_state, obs = env.reset(reset_key, dtype)
    zero = jnp.zeros((), dtype)
    return AgentState(
        train_state=init_train_state(config, init_key, dtype),
        replay=replay_init(settings.capacity, config.obs_dim, config.act_dim, dtype),
        env_state=env_state, obs=obs, key=loop_key,
        critic_loss_sum=zero, actor_loss_sum=zero,
        actor_updates=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32))


class StepDraws(NamedTuple):
    """The random numbers of one env step. They are drawn for a whole block of steps at once: one
    vectorised draw per block instead of a handful of small ones per step (each a loop on XLA:CPU)."""

    uniform_action: jax.Array   # (act_dim,) U(0, 1): the warm-up action
    action_noise: jax.Array     # (act_dim,) N(0, 1): exploration noise
    reset: Any                  # the environment's draws for the next episode's start (used if this step ends one)
    replay_bits: jax.Array      # (batch,) uint32: replay indices (bits mod the buffer's size)
    target_noise: jax.Array     # (batch, act_dim) N(0, 1): target-policy smoothing


def draw_block(config: TD3Config, env: JaxEnv, key, num_steps: int, dtype) -> StepDraws:
    keys = jax.random.split(key, 5)
    act, batch = config.act_dim, config.batch_size
    return StepDraws(
        uniform_action=jax.random.uniform(keys[0], (num_steps, act), dtype),
        action_noise=jax.random.normal(keys[1], (num_steps, act), dtype),
        reset=env.draw_resets(keys[2], num_steps, dtype),
        replay_bits=jax.random.bits(keys[3], (num_steps, batch), jnp.uint32),
        target_noise=jax.random.normal(keys[4], (num_steps, batch, act), dtype))


def explore(config: TD3Config, settings: LoopSettings, actor_params, obs, step, draws: StepDraws):
    """Uniform over the box before ``learning_starts``; then mu(s) + N(0, expl_noise * scale), clipped."""
    low = jnp.asarray(config.action_low, obs.dtype)
    high = jnp.asarray(config.action_high, obs.dtype)
    scale = jnp.asarray(config.action_scale, obs.dtype)
    uniform = exploration.warmup_action(draws.uniform_action, low, high)
    noise = draws.action_noise * exploration.gaussian_std(settings.expl_noise, scale)
    policy = exploration.explore_action(jnp.clip, actor_action(config, actor_params, obs[None])[0], noise, low, high)
    return jnp.where(exploration.in_warmup(step, settings.learning_starts), uniform, policy)


def env_step(config: TD3Config, settings: LoopSettings, env: JaxEnv, agent: AgentState, step,
             draws: StepDraws) -> AgentState:
    """Env step number ``step`` (0-based, the same for all agents): act, store, reset if done, update."""
    action = explore(config, settings, agent.train_state.actor_params, agent.obs, step, draws)
    env_state, next_obs, reward, terminated, truncated = env.step(agent.env_state, action)
    transition = Batch(agent.obs[None], action[None], next_obs[None], reward.reshape(1, 1),
                       (1 - terminated.astype(reward.dtype)).reshape(1, 1))
    replay = replay_add(agent.replay, transition)

    done = terminated | truncated
    fresh_state, fresh_obs = env.reset_from(draws.reset)
    env_state = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh_state, env_state)
    obs = jnp.where(done, fresh_obs, next_obs)

    def train(agent):
        batch = replay_gather(replay, replay_indices_from_bits(replay, draws.replay_bits))
        train_state, metrics = update(config, agent.train_state, batch, draws.target_noise)
        return agent._replace(
            train_state=train_state,
            critic_loss_sum=agent.critic_loss_sum + metrics["critic_loss"],
            actor_loss_sum=agent.actor_loss_sum + metrics["actor_loss"],
            actor_updates=agent.actor_updates + metrics["actor_updated"].astype(jnp.int32),
            updates=agent.updates + 1)

    agent = agent._replace(replay=replay, env_state=env_state, obs=obs)
    # ``step`` is not batched over agents, so under vmap this stays a real branch (no wasted update).
    return jax.lax.cond(step >= settings.learning_starts, train, lambda a: a, agent)


def run_steps(config: TD3Config, settings: LoopSettings, env: JaxEnv, agent: AgentState, first_step,
              num_steps: int):
    key, block_key = jax.random.split(agent.key)
    draws = draw_block(config, env, block_key, num_steps, agent.obs.dtype)
    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
    agent, _ = jax.lax.scan(lambda a, x: (env_step(config, settings, env, a, *x), None), agent, (steps, draws))
    return agent._replace(key=key)


def evaluate(config: TD3Config, settings: LoopSettings, env: JaxEnv, actor_params, key, dtype):
    """Returns of ``eval_episodes`` noiseless episodes, run side by side for the time limit; an episode
    that ends earlier stops counting reward there."""
    env_states, obs = jax.vmap(lambda k: env.reset(k, dtype))(jax.random.split(key, settings.eval_episodes))

    def one_step(carry, _):
        env_states, obs, returns, running = carry
        actions = actor_action(config, actor_params, obs)
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


def batch_hyperparameters(config: TD3Config, settings: LoopSettings, num_agents: int, dtype):
    """Config and settings whose numeric leaves are arrays of shape (K,) in ``dtype``.

    A leaf may be a scalar (the same for every agent) or a sequence of K values (a sweep).
    """
    def broadcast(x):
        x = np.asarray(x, dtype)
        if x.ndim == 0:
            return np.full((num_agents,), x)
        if x.shape != (num_agents,):
            raise ConfigError(f"a swept hyperparameter needs {num_agents} values (one per agent), got {x.shape}")
        return x

    return jax.tree_util.tree_map(broadcast, (config, settings))


def make_program(config: TD3Config, settings: LoopSettings, env: JaxEnv, dtype, mesh: Mesh,
                 on_progress: Callable | None = None, on_eval: Callable | None = None):
    """The jitted run: ``(batched_hparams, seeds) -> (agents, eval_returns)``.

    ``batched_hparams`` is ``batch_hyperparameters(...)`` (leaves (K,)), ``seeds`` int32 (K,).
    ``on_progress(step)`` and ``on_eval(step, returns (K, E), critic_loss (K,), actor_loss (K,))``
    are called on the host while the program runs.
    """
    agent_sharding = NamedSharding(mesh, PartitionSpec(AGENT_AXIS))
    shard = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, agent_sharding), tree)
    block = progress_block(settings.eval_every)
    periods, remainder = divmod(settings.total_steps, settings.eval_every)

    def train_for(hparams, agents, first_step, num_steps):
        # All agents share the update counter, so it enters vmap unbatched: the delayed actor update's
        # lax.cond inside ``update`` then stays a branch instead of becoming a select of both sides.
        num_agents = agents.obs.shape[0]
        shared_step = agents.train_state.step[0]

        def one(h, agent, step):
            agent = agent._replace(train_state=agent.train_state._replace(step=step))
            agent = run_steps(h[0], h[1], env, agent, first_step, num_steps)
            return agent._replace(train_state=agent.train_state._replace(step=None)), agent.train_state.step

        in_axes = (0, _agent_axes(agents), None)
        agents, step = jax.vmap(one, in_axes, out_axes=(0, None))(hparams, agents, shared_step)
        step = jnp.broadcast_to(step, (num_agents,))
        return agents._replace(train_state=agents.train_state._replace(step=step))

    def evaluate_all(hparams, agents, eval_keys, step):
        returns = jax.vmap(lambda h, a, k: evaluate(h[0], h[1], env, a.train_state.actor_params, k, dtype))(
            hparams, agents, eval_keys)
        if on_eval is not None:
            actor_updates = jnp.maximum(agents.actor_updates, 1).astype(dtype)
            critic_loss = agents.critic_loss_sum / jnp.maximum(agents.updates, 1).astype(dtype)
            jax.debug.callback(on_eval, step, returns, critic_loss, agents.actor_loss_sum / actor_updates,
                               agents.updates)
        zero = jnp.zeros_like(agents.critic_loss_sum)
        agents = agents._replace(critic_loss_sum=zero, actor_loss_sum=zero,
                                 actor_updates=jnp.zeros_like(agents.actor_updates))
        return agents, returns

    def program(hparams, seeds):
        agents = shard(jax.vmap(lambda h, s: init_agent(h[0], h[1], env, s, dtype))(hparams, seeds))
        eval_keys = shard(jax.vmap(jax.random.key)(exploration.evaluation_seed(seeds)))
        agents, first_returns = evaluate_all(hparams, agents, eval_keys, jnp.int32(0))

        def period(agents, period_index):
            def progress(agents, block_index):
                first = period_index * settings.eval_every + block_index * block
                agents = shard(train_for(hparams, agents, first, block))
                if on_progress is not None:
                    jax.debug.callback(on_progress, first + block)
                return agents, None

            agents, _ = jax.lax.scan(progress, agents, jnp.arange(settings.eval_every // block, dtype=jnp.int32))
            return evaluate_all(hparams, agents, eval_keys, (period_index + 1) * settings.eval_every)

        agents, returns = jax.lax.scan(period, agents, jnp.arange(periods, dtype=jnp.int32))
        curve = [first_returns[None], returns]
        if remainder:
            agents = shard(train_for(hparams, agents, periods * settings.eval_every, remainder))
            if on_progress is not None:
                jax.debug.callback(on_progress, jnp.int32(settings.total_steps))
            agents, last = evaluate_all(hparams, agents, eval_keys, jnp.int32(settings.total_steps))
            curve.append(last[None])
        # (N, K, E) -> (K, N, E)
        return agents, jnp.swapaxes(jnp.concatenate(curve, axis=0), 0, 1)

    return jax.jit(program)


def _agent_axes(agents: AgentState) -> AgentState:
    """vmap axes of AgentState: every leaf batched, the train state as ``agents.train_state_axes``."""
    return jax.tree_util.tree_map(lambda _: 0, agents)._replace(train_state=train_state_axes())


def eval_steps(settings: LoopSettings) -> np.ndarray:
    steps = list(range(0, settings.total_steps + 1, settings.eval_every))
    if steps[-1] != settings.total_steps:
        steps.append(settings.total_steps)
    return np.array(steps)


def train_compiled(config: TD3Config, settings: LoopSettings, seeds, *, env: JaxEnv, dtype=jnp.float32,
                   devices=None,
                   on_progress: Callable | None = None, on_eval: Callable | None = None,
                   compiler_options: dict | None = None) -> CompiledResult:
    """Train ``len(seeds)`` agents in one compiled program; see the module docstring.

    ``config`` and ``settings`` leaves (numbers) may be length-K sequences to sweep them.
    ``devices`` (default: all) carry the agent axis. ``compiler_options`` go to XLA
    (e.g. ``{"xla_backend_optimization_level": 0}`` compiles faster, runs slower), on top of
    ``xla_options.compiler_options()``.
    Compilation is timed separately from the run.
    """
    spec = env.spec
    if (config.obs_dim, config.act_dim) != (spec.obs_dim, spec.act_dim):
        raise ConfigError(f"config is for obs/act dims {config.obs_dim}/{config.act_dim}, {spec.env_id} has "
                          f"{spec.obs_dim}/{spec.act_dim}")
    seeds = np.asarray(seeds, np.int32).reshape(-1)
    num_agents = len(seeds)
    dtype = jnp.dtype(dtype)
    mesh = agent_mesh(num_agents, devices)
    sharding = NamedSharding(mesh, PartitionSpec(AGENT_AXIS))
    hparams = batch_hyperparameters(config, settings, num_agents, dtype)
    inputs = (jax.tree_util.tree_map(lambda x: global_array(x, sharding), hparams), global_array(seeds, sharding))
    program = make_program(config, settings, env, dtype, mesh, on_progress, on_eval)

    start = time.perf_counter()
    compiled = program.lower(*inputs).compile(xla_options.with_defaults(compiler_options))
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    agents, returns = jax.block_until_ready(compiled(*inputs))
    run_seconds = time.perf_counter() - start
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        returns = multihost_utils.process_allgather(returns, tiled=True)
    return CompiledResult(agents, eval_steps(settings), np.asarray(returns), compile_seconds, run_seconds)
