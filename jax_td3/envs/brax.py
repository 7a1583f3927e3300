"""Brax environments behind the JAX-native interface (``jax_td3.envs.base.JaxEnv``), as ``brax:NAME``.

Brax is an optional extra (``pip install 'jax-td3[brax]'``); it is imported only when a Brax
environment is built, so this module is light to import.

What the adapter keeps apart: Brax's own ``state.done`` is termination (e.g. an unhealthy hopper);
the time limit is the adapter's (``max_episode_steps``, default 1000, Brax's and Gymnasium's
episode length for these tasks) and shows as ``truncated``. Brax's training wrappers are not used:
their ``EpisodeWrapper`` folds truncation into ``done`` (with ``info['truncation']``) and their
auto-reset would hide the final observation; the compiled loop needs both apart, so that a
truncation bootstraps (``not_done`` = 1 - terminated) as in the Gymnasium loop, and it resets
itself. Brax's actions are in [-1, 1]; observation and reward come back in the run's dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from jax_td3.envs.base import EnvSpec
from jax_td3.errors import EnvError

if TYPE_CHECKING:
    import jax

PREFIX = "brax:"
BACKENDS = ("spring", "positional", "generalized", "mjx")
# Measured on the 2-core CPU (halfcheetah, 16 environments vmapped, scanned): spring 197 us per
# environment step, generalized 424, mjx 452, positional 486 (benchmarks/README.md, "Brax").
DEFAULT_BACKEND = "spring"
DEFAULT_EPISODE_STEPS = 1000
INSTALL = "pip install 'jax-td3[brax]'"


def is_brax_id(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


def import_brax_envs() -> ModuleType:
    """``brax.envs``, imported quietly: MuJoCo prints a line about its optional GPU backend (warp)
    to stdout and Brax warns that it is in maintenance mode; neither concerns a run."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import brax.envs as brax_envs
    except ImportError as err:
        raise EnvError(f"Brax environments need the brax extra ({INSTALL}): {err}") from None
    return brax_envs


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Brax's functions warn at trace time about MuJoCo APIs it uses (deprecations that are Brax's to fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class BraxState(NamedTuple):
    brax_state: Any        # Brax's own State (pipeline state, obs, reward, done, metrics, info)
    t: Any                 # int32: steps taken in this episode


@dataclasses.dataclass(frozen=True)
class BraxEnv:
    """Brax environment ``name`` on physics ``backend``, with a time limit of ``max_episode_steps``.

    Hashable and compared by (name, backend, max_episode_steps): ``jit`` closes over it.
    An episode start takes one PRNG key (Brax's ``reset`` draws its own noise from it).
    """

    name: str
    backend: str = DEFAULT_BACKEND
    max_episode_steps: int = DEFAULT_EPISODE_STEPS
    env: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    spec: EnvSpec = dataclasses.field(init=False, compare=False, hash=False, repr=False)   # set from Brax's env

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EnvError(f"unknown `brax_backend` {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.max_episode_steps < 1:
            raise EnvError(f"a Brax episode needs at least one step, got {self.max_episode_steps}")
        brax_envs = import_brax_envs()
        known = getattr(brax_envs, "_envs", {})
        if self.name not in known:
            raise EnvError(f"no Brax environment {PREFIX}{self.name} (Brax knows: "
                           f"{', '.join(PREFIX + n for n in sorted(known))})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = brax_envs.get_environment(self.name, backend=self.backend)
        obs_size = env.observation_size
        if not isinstance(obs_size, int):
            raise EnvError(f"{PREFIX}{self.name} has a structured observation {obs_size}; a vector is needed")
        act = env.action_size
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "spec", EnvSpec(f"{PREFIX}{self.name}", obs_size, act, (-1.0,) * act,
                                                 (1.0,) * act, self.max_episode_steps))

    def draw_resets(self, key: jax.Array, num: int, dtype: Any) -> jax.Array:
        import jax

        return jax.random.split(key, num)

    def reset_from(self, draws: jax.Array) -> tuple[BraxState, jax.Array]:
        import jax.numpy as jnp

        with _quiet():
            state = self.env.reset(draws)
        # The observation comes in Brax's dtype (float32 unless x64 is on); the loop casts it to the run's.
        return BraxState(state, jnp.zeros((), jnp.int32)), state.obs

    def reset(self, key: jax.Array, dtype: Any) -> tuple[BraxState, jax.Array]:
        env_state, obs = self.reset_from(key)
        return env_state, obs.astype(dtype)

    def step(self, env_state: BraxState,
             action: jax.Array) -> tuple[BraxState, jax.Array, jax.Array, jax.Array, jax.Array]:
        with _quiet():
            state = self.env.step(env_state.brax_state, action.astype(env_state.brax_state.obs.dtype))
        t = env_state.t + 1
        terminated = state.done > 0.5
        truncated = t >= self.max_episode_steps
        dtype = action.dtype
        return BraxState(state, t), state.obs.astype(dtype), state.reward.astype(dtype), terminated, truncated
