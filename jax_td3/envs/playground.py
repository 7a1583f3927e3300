"""MuJoCo Playground environments behind the JAX-native interface (``jax_td3.envs.base.JaxEnv``), as
``playground:NAME`` (``playground:CheetahRun``, ``playground:WalkerWalk``, ...).

Playground is an optional extra (``pip install 'jax-td3[playground]'``); it is imported only when a
Playground environment is built, so this module is light to import.

The adapter steps Playground's raw environment (``registry.load(name)``), not the training wrappers of
``mujoco_playground.wrapper``: their auto-reset replaces the observation of the step that ended an
episode with the reset observation (Playground issue #305), and their episode wrapper folds truncation
into ``done``. Without those wrappers Playground's ``state.done`` is termination only (a fallen robot, a
NaN in the physics); the time limit is the adapter's (``max_episode_steps``, by default the task's own
``episode_length``, 1000 for the DM Control Suite) and shows as ``truncated``. The compiled loop then
resets and vmaps, as for every JAX-native environment, and keeps the true final observation.

Playground's actions are in [-1, 1]. A task whose observation is a dict (the locomotion tasks:
``state`` for the actor, ``privileged_state`` for an asymmetric critic) gives its ``state`` entry.
The physics is ``impl``: "jax" (MJX's JAX implementation), "warp" (MuJoCo Warp, NVIDIA GPUs only), or
"auto": "jax" when JAX sees no NVIDIA GPU, else the task's own default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple

from jax_td3.envs.base import EnvSpec
from jax_td3.errors import EnvError

if TYPE_CHECKING:
    import jax

PREFIX = "playground:"
IMPLS = ("auto", "jax", "warp")
DEFAULT_IMPL = "auto"
STATE_KEY = "state"   # the actor's entry of a dict observation (the critic's is "privileged_state")
INSTALL = "pip install 'jax-td3[playground]'"


def is_playground_id(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Playground and MuJoCo print and warn while importing and loading (MuJoCo's optional GPU backend,
    deprecations that are theirs to fix); none of it concerns a run."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def import_registry() -> ModuleType:
    """``mujoco_playground.registry``, imported quietly."""
    try:
        with _quiet():
            from mujoco_playground import registry
    except ImportError as err:
        raise EnvError(f"Playground environments need the playground extra ({INSTALL}): {err}") from None
    return registry


def resolve_impl(impl: str) -> str | None:
    """The physics to ask for: "auto" is "jax" without an NVIDIA GPU, else None (the task's default)."""
    if impl not in IMPLS:
        raise EnvError(f"unknown `playground_impl` {impl!r}; choose from {', '.join(IMPLS)}")
    if impl != "auto":
        return impl
    import jax

    try:
        jax.devices("cuda")
    except RuntimeError:
        return "jax"
    return None


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class PlaygroundState(NamedTuple):
    state: Any             # Playground's own State (MJX data, obs, reward, done, metrics, info)
    t: Any                 # int32: steps taken in this episode


@dataclasses.dataclass(frozen=True)
class PlaygroundEnv:
    """Playground task ``name`` on physics ``impl``, with a time limit of ``max_episode_steps`` (None: the
    task's ``episode_length``).

    Hashable and compared by (name, impl, max_episode_steps), ``impl`` and the limit as resolved:
    ``jit`` closes over it. An episode start takes one PRNG key (Playground's ``reset`` draws from it).
    """

    name: str
    impl: str = DEFAULT_IMPL
    max_episode_steps: int | None = None
    env: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    obs_key: str | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    spec: EnvSpec = dataclasses.field(init=False, compare=False, hash=False, repr=False)   # set from the task

    def __post_init__(self) -> None:
        impl = resolve_impl(self.impl)
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise EnvError(f"a Playground episode needs at least one step, got {self.max_episode_steps}")
        registry = import_registry()
        if self.name not in registry.ALL_ENVS:
            raise EnvError(f"no Playground environment {PREFIX}{self.name} (Playground knows: "
                           f"{', '.join(PREFIX + n for n in sorted(registry.ALL_ENVS))})")
        try:
            with _quiet():
                config = registry.get_default_config(self.name)
                overrides = {} if impl is None else {"impl": impl}
                env = registry.load(self.name, config_overrides=overrides)
                obs_size = env.observation_size
        except Exception as err:   # missing model files (the Menagerie download), a physics it cannot build
            raise EnvError(f"{PREFIX}{self.name} did not load: {type(err).__name__}: {one_line(err)}") from None
        obs_key = None
        if isinstance(obs_size, Mapping):
            if STATE_KEY not in obs_size or len(obs_size[STATE_KEY]) != 1:
                raise EnvError(f"{PREFIX}{self.name} observes {dict(obs_size)}; the actor needs a vector "
                               f"{STATE_KEY!r} entry")
            obs_key, obs_dim = STATE_KEY, int(obs_size[STATE_KEY][0])
        else:
            obs_dim = int(obs_size)
        limit = int(config.episode_length) if self.max_episode_steps is None else self.max_episode_steps
        act = int(env.action_size)
        object.__setattr__(self, "impl", str(env.mjx_model.impl.value))
        object.__setattr__(self, "max_episode_steps", limit)
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "obs_key", obs_key)
        object.__setattr__(self, "spec", EnvSpec(f"{PREFIX}{self.name}", obs_dim, act, (-1.0,) * act,
                                                 (1.0,) * act, limit))

    def observation(self, state: Any) -> jax.Array:
        """The actor's observation of Playground's State: the array, or the dict's ``state`` entry."""
        return state.obs if self.obs_key is None else state.obs[self.obs_key]

    def draw_resets(self, key: jax.Array, num: int, dtype: Any) -> jax.Array:
        import jax

        return jax.random.split(key, num)

    def reset_from(self, draws: jax.Array) -> tuple[PlaygroundState, jax.Array]:
        import jax.numpy as jnp

        with _quiet():
            state = self.env.reset(draws)
        # The observation comes in Playground's dtype (float32); the loop casts it to the run's.
        return PlaygroundState(state, jnp.zeros((), jnp.int32)), self.observation(state)

    def reset(self, key: jax.Array, dtype: Any) -> tuple[PlaygroundState, jax.Array]:
        env_state, obs = self.reset_from(key)
        return env_state, obs.astype(dtype)

    def step(self, env_state: PlaygroundState,
             action: jax.Array) -> tuple[PlaygroundState, jax.Array, jax.Array, jax.Array, jax.Array]:
        physics_dtype = self.observation(env_state.state).dtype
        with _quiet():
            state = self.env.step(env_state.state, action.astype(physics_dtype))
        t = env_state.t + 1
        terminated = state.done > 0.5
        truncated = t >= self.spec.max_episode_steps
        dtype = action.dtype
        return (PlaygroundState(state, t), self.observation(state).astype(dtype), state.reward.astype(dtype),
                terminated, truncated)
