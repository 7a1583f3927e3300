"""The JAX-native Pendulum against gymnasium.make("Pendulum-v1"), side by side.

Both start from the same (theta, theta_dot) and receive the same actions for whole
episodes (past the 200-step time limit). Actions include values outside [-2, 2]
so that the clipping is exercised.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_td3.envs import pendulum

EPISODES = 3
F32_EPS = float(np.finfo(np.float32).eps)


@pytest.fixture
def gym_env():
    gymnasium = pytest.importorskip("gymnasium")
    env = gymnasium.make("Pendulum-v1")
    yield env
    env.close()


def _actions(seed, n):
    return np.random.default_rng(seed).uniform(-3.0, 3.0, size=(n, 1))


def _start_gym_episode(env, state):
    env.reset(seed=0)
    env.unwrapped.state = np.array([float(state.theta), float(state.theta_dot)], np.float64)


@pytest.fixture(scope="module")
def jit_step():
    return jax.jit(pendulum.step)


def check_float64_episodes(resync: bool, episodes: int = EPISODES) -> None:
    """Step both envs in float64 over whole episodes; with ``resync`` each step starts from Gymnasium's state."""
    import gymnasium

    env = gymnasium.make("Pendulum-v1")
    jit_step = jax.jit(pendulum.step)
    with jax.enable_x64(True):
        for episode in range(episodes):
            state, obs = pendulum.reset(jax.random.key(episode), jnp.float64)
            assert obs.dtype == jnp.float64
            _start_gym_episode(env, state)
            for t, action in enumerate(_actions(episode, pendulum.MAX_EPISODE_STEPS)):
                if resync:
                    theta, theta_dot = env.unwrapped.state
                    state = pendulum.PendulumState(jnp.float64(theta), jnp.float64(theta_dot), jnp.int32(t))
                state, obs, reward, terminated, truncated = jit_step(state, jnp.asarray(action))
                gym_obs, gym_reward, gym_terminated, gym_truncated, _ = env.step(action)
                gym_state = env.unwrapped.state
                np.testing.assert_allclose([state.theta, state.theta_dot], gym_state, rtol=0, atol=1e-12)
                # Gymnasium's float64 observation before its cast to float32.
                gym_obs64 = np.array([np.cos(gym_state[0]), np.sin(gym_state[0]), gym_state[1]])
                np.testing.assert_allclose(obs, gym_obs64, rtol=0, atol=1e-12)
                np.testing.assert_allclose(np.asarray(obs, np.float32), gym_obs, rtol=0, atol=F32_EPS)
                assert abs(float(reward) - float(gym_reward)) <= 1e-12
                assert bool(terminated) is False and gym_terminated is False
                assert bool(truncated) == gym_truncated == (t == pendulum.MAX_EPISODE_STEPS - 1)
    env.close()


def test_float64_steps_match_gymnasium():
    pytest.importorskip("gymnasium")
    check_float64_episodes(resync=True)


def test_float64_free_running_episodes_match_gymnasium_without_fma():
    """Whole float64 episodes without re-syncing agree to 1e-12, in fact bit for bit.

    XLA's CPU code generator contracts ``a * b + c`` into one fused multiply-add,
    which rounds once instead of twice: a 1-ulp difference per step that the
    unstable upright position amplifies to ~1e-12 over 200 steps. The arithmetic
    itself is Gymnasium's, which this shows by compiling for an instruction set
    without FMA (in a subprocess, as XLA flags are read once per process).
    """
    pytest.importorskip("gymnasium")
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_max_isa=AVX", JAX_PLATFORMS="cpu")
    code = "import test_pendulum_jax as t; t.check_float64_episodes(resync=False)"
    result = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_float32_steps_match_gymnasium_within_rounding(gym_env, jit_step):
    """Every step starts from Gymnasium's float64 state rounded to float32.

    Free-running float32 and float64 trajectories drift apart (the upright position
    is unstable and amplifies rounding by up to e^(sqrt(15) * 10 s)), so the float32
    twin is compared one step at a time over whole episodes. Tolerance: the rounding
    of theta (|theta| eps32 / 2, theta is not wrapped and can grow) and of theta_dot
    enters cos/sin/theta_dot with gain <= 1 + dt and the reward with gain
    <= 2 pi + 0.2 * 8 < 8; each float32 operation adds <= eps32 / 2 relative, a few
    dozen operations in all. 32 eps32 * (1 + |theta| + |theta_dot|) for the
    observation and 8x that for the reward (costs up to 16.3) bound all of it with
    room, while a wrong formula (e.g. no clipping) is off by >= 1e-3.
    """
    for episode in range(EPISODES):
        state, obs = pendulum.reset(jax.random.key(100 + episode))
        assert obs.dtype == jnp.float32
        _start_gym_episode(gym_env, state)
        for t, action in enumerate(_actions(100 + episode, pendulum.MAX_EPISODE_STEPS).astype(np.float32)):
            gym_state = np.array(gym_env.unwrapped.state)
            start = pendulum.PendulumState(jnp.float32(gym_state[0]), jnp.float32(gym_state[1]), jnp.int32(t))
            _, obs, reward, terminated, truncated = jit_step(start, jnp.asarray(action))
            gym_obs, gym_reward, gym_terminated, gym_truncated, _ = gym_env.step(action)
            scale = 1.0 + abs(gym_state[0]) + abs(gym_state[1])
            np.testing.assert_allclose(obs, gym_obs, rtol=0, atol=32 * F32_EPS * scale)
            assert abs(float(reward) - float(gym_reward)) <= 256 * F32_EPS * scale
            assert not bool(terminated) and not gym_terminated
            assert bool(truncated) == gym_truncated == (t == pendulum.MAX_EPISODE_STEPS - 1)


def test_reset_distribution_is_uniform_over_gymnasium_box():
    states, obs = jax.vmap(pendulum.reset)(jax.random.split(jax.random.key(0), 4000))
    theta, theta_dot = np.asarray(states.theta), np.asarray(states.theta_dot)
    assert np.all(np.abs(theta) <= np.pi) and np.all(np.abs(theta_dot) <= 1.0)
    # Uniform: mean 0, variance high^2 / 3 (standard errors ~0.03 and ~0.05 here).
    assert abs(theta.mean()) < 0.15 and abs(theta.var() - np.pi**2 / 3) < 0.25
    assert abs(theta_dot.mean()) < 0.05 and abs(theta_dot.var() - 1 / 3) < 0.03
    np.testing.assert_allclose(obs, np.stack([np.cos(theta), np.sin(theta), theta_dot], -1), atol=1e-6)
    assert np.all(np.asarray(states.t) == 0)


def test_no_termination_and_truncation_every_200_steps(jit_step):
    state, _ = pendulum.reset(jax.random.key(1))
    truncations = []
    for t in range(pendulum.MAX_EPISODE_STEPS):
        state, _, _, terminated, truncated = jit_step(state, jnp.array([2.0]))
        assert not bool(terminated)
        truncations.append(bool(truncated))
    assert truncations == [False] * (pendulum.MAX_EPISODE_STEPS - 1) + [True]
