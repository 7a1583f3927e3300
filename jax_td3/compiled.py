"""Whole training runs as one compiled program: many agents at once, split across devices.

Environment steps (the JAX-native Pendulum), exploration, replay writes, updates
(the one shared ``update.update``), target updates and
periodic evaluation all run inside one jitted ``lax.scan`` nest. ``jax.vmap`` runs K
independent agents in the same program: different seeds, and, because a config's
numbers are pytree leaves, different learning rates, tau, noise scales ... (a sweep).
The agent axis is sharded over a 1-D ``jax.sharding.Mesh`` of all devices, so the
same code runs on one CPU, several GPUs, or several hosts after
``jax.distributed.initialize()``.

Loop semantics are the Gymnasium loop's (``jax_td3.train``): uniform random actions
for the first ``learning_starts`` steps, then the actor's action plus
N(0, expl_noise * action_scale), clipped to the box; one update per step once the
buffer holds more than ``learning_starts`` transitions; truncation bootstraps
(``not_done`` = 0 only on termination, which Pendulum never reports); evaluation
every ``eval_every`` steps (and at step 0) as the mean return of ``eval_episodes``
noiseless episodes that start from the same states every time (their own keys).

A sweep from Python (each agent gets one value; seeds may repeat)::

    config = make_config("td3", max_action=2.0).replace(actor_lr=np.array([1e-3, 3e-4, 1e-4]))
    result = train_compiled(config, LoopSettings(total_steps=10_000), seeds=[0, 0, 0])
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
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_td3 import xla_options
from jax_td3.config import TD3Config, static
from jax_td3.envs import pendulum
from jax_td3.networks import actor_action
from jax_td3.replay import ReplayState, replay_add, replay_gather, replay_indices_from_bits, replay_init
from jax_td3.update import Batch, TrainState, init_train_state, update

AGENT_AXIS = "agents"
EVAL_SEED_OFFSET = 100        # evaluation environments are seeded with seed + 100, as in the Gymnasium loop
MAX_PROGRESS_BLOCK = 1_000    # progress callbacks at least every this many steps (when a divisor allows)
SUPPORTED_ENVS = (pendulum.ENV_ID,)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """The compiled loop's settings: sizes are static; ``expl_noise`` is a leaf (vmappable)."""

    total_steps: int = static(15_000)
    learning_starts: int = static(1_000)
    """Uniform random actions before this many steps; one update per step after it."""
    eval_every: int = static(1_000)
    eval_episodes: int = static(10)
    buffer_size: int = static(1_000_000)
    expl_noise: float = 0.1
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
    env_state: pendulum.PendulumState
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

def init_agent(config: TD3Config, settings: LoopSettings, seed, dtype) -> AgentState:
    key = jax.random.key(seed)
    init_key, reset_key, loop_key = jax.random.split(key, 3)
    env_state, obs = pendulum.reset(reset_key, dtype)
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
    reset: jax.Array            # (2,) U(0, 1): the next episode's start, used when this step ends one
    replay_bits: jax.Array      # (batch,) uint32: replay indices (bits mod the buffer's size)
    target_noise: jax.Array     # (batch, act_dim) N(0, 1): target-policy smoothing


def draw_block(config: TD3Config, key, num_steps: int, dtype) -> StepDraws:
    keys = jax.random.split(key, 5)
    act, batch = config.act_dim, config.batch_size
    return StepDraws(
        uniform_action=jax.random.uniform(keys[0], (num_steps, act), dtype),
        action_noise=jax.random.normal(keys[1], (num_steps, act), dtype),
        reset=jax.random.uniform(keys[2], (num_steps, 2), dtype),
        replay_bits=jax.random.bits(keys[3], (num_steps, batch), jnp.uint32),
        target_noise=jax.random.normal(keys[4], (num_steps, batch, act), dtype))


def explore(config: TD3Config, settings: LoopSettings, actor_params, obs, step, draws: StepDraws):
    """Uniform over the box before ``learning_starts``; then mu(s) + N(0, expl_noise * scale), clipped."""
    low = jnp.asarray(config.action_low, obs.dtype)
    high = jnp.asarray(config.action_high, obs.dtype)
    scale = jnp.asarray(config.action_scale, obs.dtype)
    uniform = low + (high - low) * draws.uniform_action
    noise = draws.action_noise * (settings.expl_noise * scale)
    policy = jnp.clip(actor_action(config, actor_params, obs[None])[0] + noise, low, high)
    return jnp.where(step < settings.learning_starts, uniform, policy)


def env_step(config: TD3Config, settings: LoopSettings, agent: AgentState, step, draws: StepDraws) -> AgentState:
    """Env step number ``step`` (0-based, the same for all agents): act, store, reset if done, update."""
    action = explore(config, settings, agent.train_state.actor_params, agent.obs, step, draws)
    env_state, next_obs, reward, terminated, truncated = pendulum.step(agent.env_state, action)
    transition = Batch(agent.obs[None], action[None], next_obs[None], reward.reshape(1, 1),
                       (1 - terminated.astype(reward.dtype)).reshape(1, 1))
    replay = replay_add(agent.replay, transition)

    done = terminated | truncated
    fresh_state, fresh_obs = pendulum.reset_from_uniform(draws.reset)
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


def run_steps(config: TD3Config, settings: LoopSettings, agent: AgentState, first_step, num_steps: int):
    key, block_key = jax.random.split(agent.key)
    draws = draw_block(config, block_key, num_steps, agent.obs.dtype)
    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
    agent, _ = jax.lax.scan(lambda a, x: (env_step(config, settings, a, *x), None), agent, (steps, draws))
    return agent._replace(key=key)


def evaluate(config: TD3Config, settings: LoopSettings, actor_params, key, dtype):
    """Returns of ``eval_episodes`` noiseless episodes (each exactly 200 steps: Pendulum never terminates)."""
    env_states, obs = jax.vmap(lambda k: pendulum.reset(k, dtype))(jax.random.split(key, settings.eval_episodes))

    def one_step(carry, _):
        env_states, obs, returns = carry
        actions = actor_action(config, actor_params, obs)
        env_states, obs, rewards, _, _ = jax.vmap(pendulum.step)(env_states, actions)
        return (env_states, obs, returns + rewards), None

    (_, _, returns), _ = jax.lax.scan(one_step, (env_states, obs, jnp.zeros(settings.eval_episodes, dtype)),
                                      None, pendulum.MAX_EPISODE_STEPS)
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
            raise ValueError(f"a swept hyperparameter needs {num_agents} values (one per agent), got {x.shape}")
        return x

    return jax.tree_util.tree_map(broadcast, (config, settings))


def agent_mesh(num_agents: int, devices=None) -> Mesh:
    """A 1-D mesh over the agent axis: all devices if they divide K, else the most that do."""
    devices = list(jax.devices() if devices is None else devices)
    count = max(d for d in range(1, len(devices) + 1) if num_agents % d == 0)
    if count < len(devices) and jax.process_count() > 1:
        raise ValueError(f"{num_agents} agents cannot be split evenly over {len(devices)} devices on "
                         f"{jax.process_count()} hosts; use a multiple of {len(devices)}")
    return Mesh(np.array(devices[:count]), (AGENT_AXIS,))


def make_program(config: TD3Config, settings: LoopSettings, dtype, mesh: Mesh,
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
            agent = run_steps(h[0], h[1], agent, first_step, num_steps)
            return agent._replace(train_state=agent.train_state._replace(step=None)), agent.train_state.step

        in_axes = (0, _agent_axes(agents), None)
        agents, step = jax.vmap(one, in_axes, out_axes=(0, None))(hparams, agents, shared_step)
        step = jnp.broadcast_to(step, (num_agents,))
        return agents._replace(train_state=agents.train_state._replace(step=step))

    def evaluate_all(hparams, agents, eval_keys, step):
        returns = jax.vmap(lambda h, a, k: evaluate(h[0], h[1], a.train_state.actor_params, k, dtype))(
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
        agents = shard(jax.vmap(lambda h, s: init_agent(h[0], h[1], s, dtype))(hparams, seeds))
        eval_keys = shard(jax.vmap(jax.random.key)(seeds + EVAL_SEED_OFFSET))
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
    """vmap axes of AgentState: every leaf batched except the shared update counter."""
    ts = agents.train_state
    return jax.tree_util.tree_map(lambda _: 0, agents)._replace(
        train_state=TrainState(*([0] * (len(ts) - 1)), None))


def eval_steps(settings: LoopSettings) -> np.ndarray:
    steps = list(range(0, settings.total_steps + 1, settings.eval_every))
    if steps[-1] != settings.total_steps:
        steps.append(settings.total_steps)
    return np.array(steps)


def _global_array(values: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """An array sharded over agents; works on one host and across hosts alike."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def train_compiled(config: TD3Config, settings: LoopSettings, seeds, *, dtype=jnp.float32, devices=None,
                   on_progress: Callable | None = None, on_eval: Callable | None = None,
                   compiler_options: dict | None = None) -> CompiledResult:
    """Train ``len(seeds)`` agents in one compiled program; see the module docstring.

    ``config`` and ``settings`` leaves (numbers) may be length-K sequences to sweep them.
    ``devices`` (default: all) carry the agent axis. ``compiler_options`` go to XLA
    (e.g. ``{"xla_backend_optimization_level": 0}`` compiles faster, runs slower), on top of
    ``xla_options.compiler_options()``.
    Compilation is timed separately from the run.
    """
    seeds = np.asarray(seeds, np.int32).reshape(-1)
    num_agents = len(seeds)
    dtype = jnp.dtype(dtype)
    mesh = agent_mesh(num_agents, devices)
    sharding = NamedSharding(mesh, PartitionSpec(AGENT_AXIS))
    hparams = batch_hyperparameters(config, settings, num_agents, dtype)
    inputs = (jax.tree_util.tree_map(lambda x: _global_array(x, sharding), hparams), _global_array(seeds, sharding))
    program = make_program(config, settings, dtype, mesh, on_progress, on_eval)

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


# -- the `jax-td3 train --compiled` command ---------------------------------------------

def _loop_settings_from(settings, num_seeds: int) -> LoopSettings:
    """LoopSettings from the Gymnasium loop's TrainSettings; options it cannot honour are usage errors."""
    from jax_td3.cli import UsageError

    if settings.env not in SUPPORTED_ENVS:
        raise UsageError(f"--compiled supports {', '.join(SUPPORTED_ENVS)} (its JAX-native twin), "
                         f"not {settings.env!r}; drop --compiled to train on it with Gymnasium")
    unsupported = [
        (settings.backend != "jax", "--backend torch"),
        (settings.exploration != "gaussian", "--exploration ou"),
        (settings.update_schedule != "step", "--update-schedule episode"),
        (not settings.bootstrap_truncation, "--no-bootstrap-truncation"),
        (settings.random_steps not in (None, settings.learning_starts), "--random-steps other than --learning-starts"),
        (settings.updates_per_call != 1, "--updates-per-call"),
    ]
    for bad, flag in unsupported:
        if bad:
            raise UsageError(f"--compiled does not support {flag}")
    if num_seeds < 1:
        raise UsageError(f"--num-seeds must be positive, got {num_seeds}")
    return LoopSettings(total_steps=settings.total_steps, learning_starts=settings.learning_starts,
                        eval_every=settings.eval_every, eval_episodes=settings.eval_episodes,
                        buffer_size=settings.buffer_size, expl_noise=settings.expl_noise)


class _Reporter:
    """Host side of the callbacks: a tqdm bar and one metrics.csv row per evaluation.

    The bar opens at the first callback, i.e. when the compiled program starts running,
    so that its rate and wall_time exclude compilation.
    """

    def __init__(self, logger, total_steps: int, num_seeds: int, progress: bool):
        self.logger = logger
        self.total_steps = total_steps
        self.num_seeds = num_seeds
        self.progress = progress
        self.bar = None
        self.start = None

    def _started(self) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.start = time.perf_counter()
            self.bar = tqdm(total=self.total_steps, unit="step", dynamic_ncols=True, disable=not self.progress,
                            mininterval=0.5, desc=f"compiled x{self.num_seeds}" if self.num_seeds > 1 else "compiled")

    def on_progress(self, step) -> None:
        if jax.process_index() == 0:
            self._started()
            self.bar.update(int(step) - self.bar.n)

    def on_eval(self, step, returns, critic_loss, actor_loss, updates) -> None:
        if jax.process_index() != 0:
            return
        self._started()
        returns = np.asarray(returns, np.float64)
        per_seed = returns.mean(axis=1)
        trained = int(np.max(updates)) > 0
        row = {"step": int(step), "wall_time": round(time.perf_counter() - self.start, 3),
               "eval_return_mean": float(per_seed.mean()), "eval_return_std": float(returns.std()),
               "critic_loss": float(np.mean(critic_loss)) if trained else None,
               "actor_loss": float(np.mean(actor_loss)) if trained else None,
               "updates": int(np.max(updates))}
        if self.num_seeds > 1:
            row.update({f"eval_return_seed{i}": float(r) for i, r in enumerate(per_seed)})
        self.logger.log_eval(row)
        self.bar.set_postfix(eval_return=f"{row['eval_return_mean']:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _save_final_checkpoint(out_dir, config, settings: LoopSettings, dtype: str, seeds, agents) -> str | None:
    """One checkpoint holding every agent's final train state (single-host runs)."""
    if jax.process_count() > 1:
        return None
    from jax_td3 import __version__
    from jax_td3.checkpoint import pack_train_state, save_checkpoint

    states = [jax.tree_util.tree_map(lambda x: x[i], agents.train_state) for i in range(len(seeds))]
    contents = {
        "config": {"algo": config.algo, "fields": dataclasses.asdict(config)},
        "compiled": {"loop": dataclasses.asdict(settings), "seeds": [int(s) for s in seeds]},
        "train_states": [pack_train_state(s) for s in states],
    }
    metadata = {"backend": "jax-compiled", "dtype": dtype, "algo": config.algo, "env": pendulum.ENV_ID,
                "env_steps": settings.total_steps, "num_seeds": len(seeds), "jax_td3_version": __version__}
    return str(save_checkpoint(out_dir, settings.total_steps, contents, metadata, keep=None))


def train_compiled_from_args(args) -> int:
    """``jax-td3 train --compiled``: flags as parsed by ``jax_td3.train.add_arguments``."""
    from jax_td3.backends.base import enable_dtype
    from jax_td3.logger import RunLogger
    from jax_td3.cli import UsageError
    from jax_td3.train import config_for_env, holds_run, resolve_args

    algo, overrides, settings, outputs = resolve_args(args)
    num_seeds = getattr(args, "num_seeds", None) or 1
    loop = _loop_settings_from(settings, num_seeds)
    enable_dtype(settings.dtype)
    config = config_for_env(algo, pendulum_spec(), **overrides)
    seeds = settings.seed + np.arange(num_seeds)
    out_dir = getattr(args, "out", None) or f"runs/{settings.env}-{algo}-compiled-seed{settings.seed}" + (
        f"-x{num_seeds}" if num_seeds > 1 else "")
    if holds_run(Path(out_dir)):
        raise UsageError(f"{out_dir} already holds a run; choose another --out (compiled runs cannot be resumed)")
    run_config = {"algo": algo, "preset": getattr(args, "preset", None), "compiled": True,
                  "num_seeds": num_seeds, "seeds": seeds.tolist(), "config": dataclasses.asdict(config),
                  "settings": dataclasses.asdict(settings), "loop": dataclasses.asdict(loop),
                  "devices": [str(d) for d in jax.devices()]}
    logger = RunLogger(out_dir, run_config)
    reporter = _Reporter(logger, loop.total_steps, num_seeds, progress=not getattr(args, "no_progress", False))
    start = time.perf_counter()
    if reporter.progress:
        print(f"compiling the training program for {num_seeds} agent(s) on {len(jax.devices())} device(s) ...",
              file=sys.stderr, flush=True)
    try:
        result = train_compiled(config, loop, seeds, dtype=np.dtype(settings.dtype),
                                on_progress=reporter.on_progress, on_eval=reporter.on_eval)
    finally:
        reporter.close()
    wall_seconds = time.perf_counter() - start
    final = result.eval_returns[:, -1, :].mean(axis=1)
    checkpoint = _save_final_checkpoint(out_dir, config, loop, settings.dtype, seeds, result.agents)
    summary = {
        "algo": algo, "env": settings.env, "compiled": True, "num_seeds": num_seeds, "seeds": seeds.tolist(),
        "final_eval_return": [float(x) for x in final], "final_eval_return_mean": float(final.mean()),
        "eval_steps": result.eval_steps.tolist(),
        "eval_return_curve": result.eval_returns.mean(axis=2).tolist(),
        "env_steps": loop.total_steps, "updates": loop.updates,
        "compile_seconds": round(result.compile_seconds, 3), "run_seconds": round(result.run_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "env_steps_per_second": round(num_seeds * loop.total_steps / result.run_seconds, 1),
        "devices": len(jax.devices()), "dtype": settings.dtype, "interrupted": False,
        "last_checkpoint": checkpoint,
    }
    summary_path = logger.finish(summary)
    spread = f" (per seed: {', '.join(f'{x:.1f}' for x in final)})" if num_seeds > 1 else ""
    print(f"final eval return {final.mean():.1f}{spread} after {loop.total_steps:,} steps, {loop.updates:,} updates "
          f"per seed; compile {result.compile_seconds:.1f} s, run {result.run_seconds:.1f} s")
    print(f"learning curve: {logger.curve_path}")
    print(f"metrics:        {logger.metrics_path}")
    print(f"summary:        {summary_path}")
    if checkpoint:
        print(f"checkpoint:     {checkpoint}")
    return 0


def pendulum_spec():
    """The JAX-native Pendulum's EnvSpec (the same fields ``jax_td3.envs.env_spec`` gives for Gymnasium's)."""
    from jax_td3.envs import EnvSpec

    return EnvSpec(pendulum.ENV_ID, pendulum.OBS_DIM, pendulum.ACT_DIM, (-pendulum.MAX_TORQUE,),
                   (pendulum.MAX_TORQUE,), pendulum.MAX_EPISODE_STEPS)

