"""The two environment interfaces.

- The host interface is Gymnasium's own (``reset``/``step`` on NumPy arrays, a Box action
  space): ``jax_td3.envs.gymnasium`` builds and checks such environments for the host loop.
- The JAX-native interface (``JaxEnv`` below) is pure functions over an explicit state, so
  that the compiled loop can step, vmap and scan it. Any environment that implements it
  trains with ``train --compiled``; the loop knows nothing else about it.

Both describe themselves with an ``EnvSpec``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What the agent needs to know about an environment."""

    env_id: str
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int | None

    @property
    def action_scale(self) -> tuple[float, ...]:
        return tuple((high - low) / 2.0 for low, high in zip(self.action_low, self.action_high))


class HostEnv(Protocol):
    """What the host loops use of a Gymnasium environment (any ``gymnasium.Env`` has it); the loops name
    no environment library, so they take this. Its spaces are Boxes (``envs.gymnasium.env_spec`` checks)."""

    @property
    def action_space(self) -> Any: ...
    @property
    def observation_space(self) -> Any: ...
    @property
    def unwrapped(self) -> Any: ...
    @property
    def spec(self) -> Any: ...
    @property
    def metadata(self) -> dict[str, Any]: ...

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """``(obs, info)`` of a new episode."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """``(obs, reward, terminated, truncated, info)``."""

    def render(self) -> Any:
        """A frame (an RGB array under ``render_mode="rgb_array"``), or None."""

    def close(self) -> None:
        """Release the environment's resources."""


class JaxEnv(Protocol):
    """A JAX-native environment: hashable (it is closed over by ``jit``), pure, with a time limit.

    ``step`` keeps termination (a true end: no bootstrapping) and time-limit truncation apart
    and never resets; the loop resets, from draws it makes in bulk (``draw_resets``) because
    one small ``jax.random`` call per step is slow on XLA:CPU.
    """

    @property
    def spec(self) -> EnvSpec:
        """max_episode_steps must be set: evaluation runs that many steps."""

    def draw_resets(self, key: Any, num: int, dtype: Any) -> Any:
        """The random numbers of ``num`` episode starts: a pytree with leading axis ``num``."""

    def reset_from(self, draws: Any) -> tuple[Any, Any]:
        """``(env_state, obs)`` of a fresh episode, from one slice of ``draw_resets``."""

    def reset(self, key: Any, dtype: Any) -> tuple[Any, Any]:
        """``(env_state, obs)`` of a fresh episode; the same as ``reset_from`` of one draw."""

    def step(self, env_state: Any, action: Any) -> tuple[Any, Any, Any, Any, Any]:
        """``(env_state, obs, reward, terminated, truncated)``; the caller resets when either is True."""
