"""Evaluating the noiseless policy: sequentially on one environment, or as a batch of environments.

``evaluate_policy`` is the reference: the E episodes run one after another on one environment, after
one discarded ``reset(seed=seed)`` (PyBullet's first reset builds the scene and later ones restore it,
so the first differs); episode 0 starts with ``reset(seed=seed)``, later ones with ``reset()``, which
continue the environment's ``np_random``. ``BatchedEvaluator`` (and ``evaluate_policy_batched``) runs
the same E episodes on E environment instances stepped in lockstep, with one batched policy forward per
step (``act_batch``, (rows, obs_dim) -> (rows, act_dim)), and gives the same returns, bit for bit.

Why the returns are the same:

* Start states. Episode i of the sequential evaluation starts from the env's RNG state
  (``env.unwrapped.np_random.bit_generator.state``) just before its i-th reset. Where ``step`` does not
  draw from that generator, that state is the one right after reset i-1, so all of them are found up
  front by resetting one environment E-1 times without stepping (``reset_rng_states``). Sub-env i then
  does its own discarded ``reset(seed=seed)``, gets that RNG state and resets (sub-env 0:
  ``reset(seed=seed)``, as the sequential run does). Pendulum-v1 (its reset draws the start state; its
  step never draws), the PyBullet locomotion envs (the robot shares the env's generator, drawn from only
  in reset; the physics restores a saved state on every reset after the first) and Gymnasium's MuJoCo
  tasks (reset noise only) are such environments; the time-feature wrapper (``make_env(...,
  time_feature=True)``) keeps only a step counter that every reset clears. Some are not:
  HumanoidFlagrunBulletEnv moves its flag, and the "Harder" variant throws cubes, from ``step``. So the
  batch checks, per sub-env, that its generator is untouched by its steps and that its reset left it in
  the state the next episode was to start from (the scratch env's); if not, it warns in one line and runs
  the sequential evaluation instead (and keeps doing so for that evaluator), so a result is never
  silently different. What it cannot see is an episode depending on the env's history other than through
  its generator (a counter of resets, say); that is the same assumption checkpoint resume makes
  (``Trainer.restore`` replays an episode from the RNG state at its reset), and the built-in ids meet it.

* The forward. A batched forward differs from a one-row forward in the last bits (measured, 256-256 and
  400-300 actors: float32 up to 3e-7, float64 up to 6e-16, both backends), and over 1,000 PyBullet steps
  that moves returns (HalfCheetahBulletEnv, float32: by 2e-5 with a 400-300 actor, by 0.6 in one episode
  with a 64-64 one). But at a fixed input shape, each row's result is independent of the other rows'
  contents: measured for the JAX and torch backends, float32 and float64, 256-256 and 400-300, nine batch
  shapes from 1 to 33 rows, 20 fillings each (random, zeros, copies of another row): not one bit
  differed. It does depend on the row's position (the same observation gave different
  actions in different rows of one batch for some shapes). So both evaluations compute actions with
  ``act_batch`` on blocks of a fixed ``rows`` rows (``FORWARD_ROWS``, 16), episode i always in row
  ``i % rows`` of block ``i // rows``: the sequential run fills the current episode's row (the other rows
  hold whatever they held), the batched run every live episode's row (a finished episode's row keeps its
  last observation). Row i then gets the same actions in both, so the returns are bit-identical by
  construction. Up to 16 episodes this is one forward per step; more take one forward per 16 episodes,
  so an episode's return never depends on how many episodes are evaluated (as with the one-row ``act``).
  A GPU matrix multiply is expected to keep this row independence at a fixed shape too (its kernel is
  chosen by the shape, not the values), but that was measured on CPU only.

The batch saves policy forwards, not physics: the E environments still step one after another in this
process. HalfCheetahBulletEnv, 10 episodes, 400-300 actor, JAX float32 on a busy 2-core CPU: 4.7 s of
CPU per evaluation batched against 6.5 s sequential with the one-row ``act`` (8.6 s with the 16-row
blocks, the price of the exact reference).

``on_step`` (video recording) exists only in the sequential evaluation; with ``act_batch`` it gives the
same returns as the batched one.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jax_td3.envs.base import HostEnv

Act = Callable[[np.ndarray], ArrayLike]          # one observation -> its action
ActBatch = Callable[[np.ndarray], ArrayLike]     # (rows, obs_dim) observations -> (rows, act_dim) actions

# Rows of every policy forward in an evaluation through ``act_batch``.
FORWARD_ROWS = 16


def _rng(env: HostEnv) -> np.random.Generator:
    return env.unwrapped.np_random


def _same_state(a: Any, b: Any) -> bool:
    """Equality of two bit-generator states (dicts that may hold numpy arrays)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _env_id(env: HostEnv) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


class _Forward:
    """Actions of E episodes from ``act_batch`` over fixed (rows, obs_dim) blocks: episode i is row i % rows."""

    def __init__(self, act_batch: ActBatch, episodes: int, obs_dim: int, dtype: DTypeLike, rows: int):
        self.act_batch, self.rows = act_batch, rows
        self.blocks = np.zeros((math.ceil(episodes / rows), rows, obs_dim), np.dtype(dtype))

    def put(self, episode: int, obs: ArrayLike) -> None:
        self.blocks[episode // self.rows, episode % self.rows] = np.reshape(obs, -1)

    def block_actions(self, block: int) -> np.ndarray:
        return np.asarray(self.act_batch(self.blocks[block]), np.float64)


def evaluate_policy(act: Act | None, env: HostEnv, episodes: int, seed: int, dtype: DTypeLike = np.float32,
                    on_step: Callable[[HostEnv], object] | None = None, act_batch: ActBatch | None = None,
                    rows: int = FORWARD_ROWS) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes run one after another; the first reset uses ``seed``.

    Actions come from ``act`` (one observation -> action) or, if given, from ``act_batch`` on fixed
    (``rows``, obs_dim) blocks, episode i in row ``i % rows``; the latter gives exactly the returns of the
    batched evaluation (``BatchedEvaluator``) of the same policy and seed. ``on_step(env)``, if given, is
    called after every ``env.step`` (e.g. to record ``env.render()``); it must not touch the episode (no
    reset, no step, no use of the env's random generator).
    """
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    forward = None
    if act_batch is not None:
        forward = _Forward(act_batch, episodes, int(np.prod(env.observation_space.shape)), dtype, rows)
    # A first reset can differ from later ones with the same seed (PyBullet's locomotion envs build
    # their scene on the first and restore a saved state afterwards: returns differed in the 5th
    # digit). One discarded reset makes an evaluation independent of the env's history, so
    # `jax-td3 eval` in a new process reproduces what training reported.
    env.reset(seed=seed)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        total, finished = 0.0, False
        while not finished:
            if forward is None:
                assert act is not None, "evaluate_policy needs act or act_batch"
                action = act(np.asarray(obs, dtype))
            else:
                forward.put(episode, obs)
                action = forward.block_actions(episode // rows)[episode % rows]
            action = np.clip(action, low, high)
            obs, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
            if on_step is not None:
                on_step(env)
            total += float(reward)
            finished = terminated or truncated
        returns.append(total)
    return returns


def reset_rng_states(env: HostEnv, episodes: int, seed: int) -> list[Mapping[str, Any] | None]:
    """The RNG state just before each episode's reset in ``evaluate_policy`` on ``env``, if steps never draw.

    Entry 0 is None (episode 0 resets with ``seed``); entry i is ``env.unwrapped.np_random``'s
    ``bit_generator.state`` after the reset of episode i-1, found by resetting ``env`` without stepping.
    """
    env.reset(seed=seed)
    states: list[Mapping[str, Any] | None] = [None]
    for episode in range(episodes - 1):
        env.reset(seed=seed if episode == 0 else None)
        states.append(copy.deepcopy(_rng(env).bit_generator.state))
    return states


class BatchedEvaluator:
    """E evaluation episodes on E environments in lockstep, one batched forward per step; the returns of
    ``evaluate_policy`` (see the module docstring).

    The environments come from ``make_env()`` when first needed and are kept for later evaluations (a
    PyBullet env starts its own physics client); ``close()`` closes them. ``rows``: rows of each forward.
    """

    def __init__(self, make_env: Callable[[], HostEnv], rows: int = FORWARD_ROWS):
        if rows < 1:
            raise ValueError(f"rows must be positive, got {rows}")
        self.make_env, self.rows = make_env, rows
        self.envs: list[HostEnv] = []
        self.sequential = False   # set once an env's step was seen drawing from its generator

    def prepare(self, episodes: int) -> list[HostEnv]:
        """The first ``episodes`` environments, creating any missing."""
        while len(self.envs) < episodes:
            self.envs.append(self.make_env())
        return self.envs[:episodes]

    def evaluate(self, act_batch: ActBatch, episodes: int, seed: int, dtype: DTypeLike = np.float32) -> list[float]:
        """Undiscounted returns of ``episodes`` episodes of ``act_batch`` ((rows, obs_dim) -> (rows, act_dim))."""
        envs = self.prepare(episodes)
        if not self.sequential:
            returns = self._batched(act_batch, envs, seed, dtype)
            if not isinstance(returns, str):
                return returns
            self.sequential = True
            warnings.warn(f"{_env_id(envs[0])}: {returns}, so its evaluation episodes run one after another "
                          f"(in a batch they would start from other states)", RuntimeWarning, stacklevel=2)
        return evaluate_policy(None, envs[0], episodes, seed, dtype, act_batch=act_batch, rows=self.rows)

    def _batched(self, act_batch: ActBatch, envs: list[HostEnv], seed: int,
                 dtype: DTypeLike) -> list[float] | str:
        """The returns, or why the batch may differ from the sequential evaluation (a generator check failed)."""
        episodes, rows = len(envs), self.rows
        space = envs[0].action_space
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        forward = _Forward(act_batch, episodes, int(np.prod(envs[0].observation_space.shape)), dtype, rows)
        starts = reset_rng_states(envs[0], episodes, seed)
        after_reset = []
        for i, env in enumerate(envs):
            env.reset(seed=seed)  # discarded, as in evaluate_policy
            if i == 0:
                obs, _ = env.reset(seed=seed)
            else:
                _rng(env).bit_generator.state = cast(Mapping[str, Any], starts[i])  # None only at i == 0
                obs, _ = env.reset()
            rng = _rng(env)
            after_reset.append((rng, copy.deepcopy(rng.bit_generator.state)))
            if i + 1 < episodes and not _same_state(after_reset[i][1], starts[i + 1]):
                return "a reset drew differently from its random generator after a discarded reset"
            forward.put(i, obs)
        totals = [0.0] * episodes
        live = list(range(episodes))
        while live:
            actions = {}
            for block in sorted({i // rows for i in live}):
                actions[block] = forward.block_actions(block)
            still = []
            for i in live:
                action = np.clip(actions[i // rows][i % rows], low, high)
                obs, reward, terminated, truncated, _ = envs[i].step(action.astype(space.dtype))
                totals[i] += float(reward)
                if terminated or truncated:
                    rng, state = after_reset[i]
                    if _rng(envs[i]) is not rng or not _same_state(rng.bit_generator.state, state):
                        return "a step drew from its random generator"
                else:
                    forward.put(i, obs)
                    still.append(i)
            live = still
        return totals

    def close(self) -> None:
        envs, self.envs = self.envs, []
        for env in envs:
            env.close()

    def __enter__(self) -> BatchedEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate_policy_batched(act_batch: ActBatch, make_eval_env: Callable[[], HostEnv], episodes: int, seed: int,
                            dtype: DTypeLike = np.float32, rows: int = FORWARD_ROWS) -> list[float]:
    """``BatchedEvaluator.evaluate`` on environments made for this call and closed after it."""
    with BatchedEvaluator(make_eval_env, rows) as evaluator:
        return evaluator.evaluate(act_batch, episodes, seed, dtype)
