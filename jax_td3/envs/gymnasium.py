"""The host environments: Gymnasium construction (classic control, PyBullet locomotion) with clear errors.

Gymnasium and pybullet are imported only inside these functions, so modules that
benchmark or test the update never import them. PyBullet ids (``...BulletEnv-v0``)
come from ``pybullet_envs_gymnasium``, imported only when such an id is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jax_td3.envs.base import EnvSpec, HostEnv
from jax_td3.errors import EnvError

if TYPE_CHECKING:  # imported for annotations only: Gymnasium is imported when an environment is made
    import gymnasium


def is_bullet_id(env_id: str) -> bool:
    return "Bullet" in env_id


def _register_bullet() -> None:
    try:
        import pybullet_envs_gymnasium  # noqa: F401  (registers the *BulletEnv-v0 ids)
    except ImportError as err:
        raise EnvError(f"PyBullet environments need pybullet-envs-gymnasium (pip install 'jax-td3[envs]'): "
                       f"{err}") from None


def make_env(env_id: str, seed: int | None = None, time_feature: bool = False, **kwargs: Any) -> gymnasium.Env:
    """A Gymnasium env with a 1-D Box observation and a finite Box action space.

    ``seed`` seeds the first ``reset`` and the action space. ``time_feature`` appends the
    remaining fraction of the episode's time limit to each observation (``with_time_feature``).
    Raises ``EnvError`` for an unknown id, a non-Box (e.g. discrete) action space or an
    unbounded action box.
    """
    try:
        import gymnasium as gym
    except ImportError:
        raise EnvError("environments need gymnasium (pip install 'jax-td3[envs]')") from None
    if is_bullet_id(env_id):
        _register_bullet()
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise EnvError(f"unknown environment id {env_id!r} ({_first_line(err)})") from None
    try:
        env_spec(env)
        if time_feature:
            env = with_time_feature(env)
    except EnvError:
        env.close()
        raise
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def with_time_feature(env: gymnasium.Env) -> gymnasium.Env:
    """``env`` with one more observation entry: the time left before its time limit, as a fraction.

    After ``t`` steps of an episode limited to ``T`` steps the entry is ``1 - t / T``: 1.0 right after
    a reset, 0.0 in the observation that the time limit truncates. With it the time limit is part of
    the state, so an agent can tell "the episode is about to be cut" from "nothing happens". (The RL
    Baselines3 Zoo trains its PyBullet TD3 agents with such an entry; Pardo et al. 2018, "Time Limits
    in Reinforcement Learning", argue for it.) The bounds of the new entry are [0, 1].
    """
    import gymnasium as gym
    import numpy as np

    limit = env.spec.max_episode_steps if env.spec is not None else None
    if not limit:
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise EnvError(f"`time_feature` needs a time limit, and {env_id} has none")
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise EnvError(f"`time_feature` needs a 1-D Box observation, got {space}")
    time_limit: int = limit         # both narrowed above, for the wrapper's methods below
    obs_box: gym.spaces.Box = space

    class TimeFeature(gym.Wrapper):
        def __init__(self, inner: gymnasium.Env) -> None:
            super().__init__(inner)
            # Box's dtype parameter is annotated float32-only; it takes any NumPy dtype (the inner one's here).
            self.observation_space = gym.spaces.Box(np.append(obs_box.low, 0.0).astype(obs_box.dtype),
                                                    np.append(obs_box.high, 1.0).astype(obs_box.dtype),
                                                    dtype=obs_box.dtype)  # type: ignore[arg-type]
            self.steps_taken = 0

        def _observe(self, obs: np.ndarray) -> np.ndarray:
            return np.append(obs, 1.0 - self.steps_taken / time_limit).astype(obs_box.dtype)

        def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
            self.steps_taken = 0
            obs, info = self.env.reset(**kwargs)
            return self._observe(obs), info

        def step(self, action: np.ndarray) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
            self.steps_taken += 1
            obs, reward, terminated, truncated, info = self.env.step(action)
            return self._observe(obs), reward, terminated, truncated, info

    return TimeFeature(env)


def env_spec(env: HostEnv) -> EnvSpec:
    """Dimensions and action box of ``env``; raises EnvError if TD3 cannot act in it."""
    import numpy as np
    from gymnasium import spaces

    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    action_space = env.action_space
    if not isinstance(action_space, spaces.Box):
        raise EnvError(f"{env_id} has a {type(action_space).__name__} action space; TD3/DDPG need a continuous "
                       f"Box action space")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise EnvError(f"{env_id} has an unbounded action box; TD3/DDPG need finite action bounds")
    if not isinstance(env.observation_space, spaces.Box):
        raise EnvError(f"{env_id} has a {type(env.observation_space).__name__} observation space; "
                       f"a Box (vector) observation is needed")
    return EnvSpec(
        env_id=env_id,
        obs_dim=int(np.prod(env.observation_space.shape)),
        act_dim=int(np.prod(action_space.shape)),
        action_low=tuple(float(x) for x in np.ravel(action_space.low)),
        action_high=tuple(float(x) for x in np.ravel(action_space.high)),
        max_episode_steps=env.spec.max_episode_steps if env.spec is not None else None,
    )


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
