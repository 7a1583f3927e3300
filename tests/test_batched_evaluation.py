"""Batched evaluation (E environments in lockstep, one forward per step) returns exactly the sequential returns."""

import warnings

import gymnasium as gym
import jax
import numpy as np
import pytest

from jax_td3.backends import make_backend
from jax_td3.config import config_for_env, make_config
from jax_td3.envs import env_spec, make_env
from jax_td3.loops.evaluation import BatchedEvaluator, evaluate_policy, evaluate_policy_batched
from jax_td3.update import init_train_state


def random_state(config, dtype="float32", seed=0, scale=1.0):
    """A train state (numpy leaves) whose actor has random weights, N(0, scale^2 / fan_in); zeros elsewhere.
    (Shapes from ``jax.eval_shape``: compiling ``init_train_state`` would cost seconds per config.)"""
    shapes = jax.eval_shape(lambda: init_train_state(config, jax.random.PRNGKey(0), np.dtype(dtype)))
    rng = np.random.default_rng(seed)

    def fill(leaf):  # kernels (fan_in, fan_out) and biases
        std = scale / np.sqrt(leaf.shape[0]) if len(leaf.shape) == 2 else 0.1 * scale
        return rng.normal(0, std, leaf.shape).astype(leaf.dtype)

    zeros = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    return zeros._replace(actor_params=jax.tree_util.tree_map(fill, shapes.actor_params))


def policy(env, backend="jax", dtype="float32", hidden=(32, 32), seed=0, scale=1.0):
    """A backend holding a random actor for ``env``."""
    config = config_for_env("td3", env_spec(env), hidden=hidden)
    return make_backend(backend, config, random_state(config, dtype, seed, scale), dtype)


def both(env_id, learner, episodes, seed, dtype, rows=None, **env_kwargs):
    """(sequential, batched) returns of ``learner``'s policy on ``env_id``."""
    extra = {} if rows is None else {"rows": rows}
    env = make_env(env_id, **env_kwargs)
    try:
        sequential = evaluate_policy(None, env, episodes, seed, np.dtype(dtype), act_batch=learner.act_batch, **extra)
    finally:
        env.close()
    batched = evaluate_policy_batched(learner.act_batch, lambda: make_env(env_id, **env_kwargs), episodes, seed,
                                      np.dtype(dtype), **extra)
    return sequential, batched


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_row_of_a_fixed_shape_forward_does_not_depend_on_the_other_rows(backend, dtype):
    # What makes the batch exact: at one input shape, row i's action depends on row i only.
    config = make_config("td3", obs_dim=26, act_dim=6, max_action=1.0, hidden=(400, 300))
    learner = make_backend(backend, config, random_state(config, dtype), dtype)
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 2, (16, 26)).astype(dtype)
    reference = learner.act_batch(obs)
    for fill in (np.zeros_like(obs), rng.normal(0, 2, obs.shape).astype(dtype), np.repeat(obs[:1], 16, 0)):
        for i in (0, 5, 15):
            other = fill.copy()
            other[i] = obs[i]
            assert np.array_equal(learner.act_batch(other)[i], reference[i])


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pendulum_batched_equals_sequential(backend, dtype):
    learner = policy(make_env("Pendulum-v1"), backend, dtype, scale=3.0)
    sequential, batched = both("Pendulum-v1", learner, 3, 11, dtype)
    assert np.array_equal(sequential, batched), (sequential, batched)
    assert len(set(batched)) == 3  # three different start states


def test_forward_blocks_and_episode_count_do_not_change_an_episode():
    learner = policy(make_env("Pendulum-v1"), scale=3.0)
    sequential, batched = both("Pendulum-v1", learner, 3, 5, "float32", rows=2)  # two forwards per step
    assert np.array_equal(sequential, batched)
    # With the default 16-row forward, an episode's return does not depend on how many are evaluated.
    three = evaluate_policy_batched(learner.act_batch, lambda: make_env("Pendulum-v1"), 3, 5)
    two = evaluate_policy_batched(learner.act_batch, lambda: make_env("Pendulum-v1"), 2, 5)
    assert np.array_equal(three[:2], two)


@pytest.mark.parametrize("time_feature", [False, True])
def test_pybullet_batched_equals_sequential(time_feature):
    pytest.importorskip("pybullet_envs_gymnasium")
    env_id = "HalfCheetahBulletEnv-v0"
    short = {"time_feature": time_feature, "max_episode_steps": 300}  # 1,000 steps would be slow for a test
    learner = policy(make_env(env_id, **short), "jax", "float32", hidden=(64, 64), seed=3)
    sequential, batched = both(env_id, learner, 2, 100, "float32", **short)
    assert np.array_equal(sequential, batched), (sequential, batched)
    assert sequential[0] != sequential[1]


class EpisodeLengths(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.lengths = []

    def reset(self, **kwargs):
        self.lengths.append(0)
        return self.env.reset(**kwargs)

    def step(self, action):
        self.lengths[-1] += 1
        return self.env.step(action)


def test_mujoco_batched_equals_sequential_with_episodes_of_different_lengths(x64):
    pytest.importorskip("mujoco")
    learner = policy(make_env("Hopper-v5"), "torch", "float64", seed=1, scale=0.3)
    env = EpisodeLengths(make_env("Hopper-v5"))
    sequential = evaluate_policy(None, env, 3, 4, np.float64, act_batch=learner.act_batch)
    batched = evaluate_policy_batched(learner.act_batch, lambda: make_env("Hopper-v5"), 3, 4, np.float64)
    assert np.array_equal(sequential, batched), (sequential, batched)
    lengths = env.lengths[1:]  # after the discarded reset
    assert len(set(lengths)) > 1 and max(lengths) < 1000, lengths  # terminated early, at different steps


def test_the_evaluator_keeps_its_environments_and_closes_them():
    made = []

    def make():
        made.append(make_env("Pendulum-v1"))
        return made[-1]

    learner = policy(make_env("Pendulum-v1"))
    with BatchedEvaluator(make) as evaluator:
        first = evaluator.evaluate(learner.act_batch, 2, 1)
        again = evaluator.evaluate(learner.act_batch, 2, 1)
        assert len(made) == 2 and first == again
        more = evaluator.evaluate(learner.act_batch, 3, 1)
        assert len(made) == 3 and more[:2] == first
    assert evaluator.envs == []


class NoisyStepEnv(gym.Env):
    """x' = x + a + N(0, 0.1) from the env's generator in ``step``; reward -x^2; 6 steps an episode."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-1, 1)), 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += float(action[0]) + float(self.np_random.normal(0, 0.1))
        self.t += 1
        return np.array([self.x], np.float32), -self.x ** 2, False, self.t == 6, {}


class AlternatingResetEnv(NoisyStepEnv):
    """A deterministic step, but every second reset after a seeded one draws one number more: a reset that
    draws differently after a discarded reset than after another episode (the batch detects it)."""

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.since_seed = 0 if seed is not None else self.since_seed + 1
        if self.since_seed % 2:
            self.np_random.uniform()
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        return np.array([self.x], np.float32), -self.x ** 2, False, self.t == 6, {}


@pytest.mark.parametrize("env_class", [NoisyStepEnv, AlternatingResetEnv])
def test_an_env_that_breaks_the_batch_falls_back_to_the_sequential_evaluation(env_class):
    config = make_config("td3", obs_dim=1, act_dim=1, max_action=1.0, hidden=(8, 8))
    learner = make_backend("jax", config, random_state(config), "float32")
    sequential = evaluate_policy(None, env_class(), 4, 3, act_batch=learner.act_batch)
    with BatchedEvaluator(env_class) as evaluator:
        with pytest.warns(RuntimeWarning, match="drew.*one after another"):
            batched = evaluator.evaluate(learner.act_batch, 4, 3)
        assert np.array_equal(sequential, batched)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.array_equal(evaluator.evaluate(learner.act_batch, 4, 3), sequential)  # no second warning


def test_jax_td3_eval_runs_a_batch_with_the_sequential_returns():
    from jax_td3.evaluate import _run_policy

    config = make_config("td3", obs_dim=4, act_dim=1, max_action=2.0, hidden=(16, 16))
    state = random_state(config, seed=2)
    batched = _run_policy(config, "float32", state, "Pendulum-v1", 3, 9, "jax", time_feature=True)
    sequential = _run_policy(config, "float32", state, "Pendulum-v1", 3, 9, "jax", time_feature=True, sequential=True)
    assert batched["returns"] == sequential["returns"] and batched["eval_return_mean"] == sequential["eval_return_mean"]
