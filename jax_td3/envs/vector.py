"""Gymnasium vector environments for the host loop's ``num_envs`` > 1 (``loops.vector``).

``make_vector_env`` builds ``SyncVectorEnv`` ("sync") or ``AsyncVectorEnv`` ("async", one spawned
subprocess per environment) with autoreset off, over sub-environments that can report and set their
RNG state in place (for an exact resume), also through an async env's ``call``:

- ``vec.call("jax_td3_rng_state")``: each sub-environment's ``np_random`` state (None if it has none);
- ``vec.call("jax_td3_set_rng_states", states)``: sub-environment i takes ``states[i]`` (None: unchanged).

Gymnasium is imported only when these are called, like ``envs.gymnasium``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, TypeAlias

if TYPE_CHECKING:  # imported for annotations only: Gymnasium is imported when these are called
    import gymnasium

    # What ``make_vector_env`` makes (both kinds have ``call`` and take a seed per environment), and from what.
    HostVectorEnv: TypeAlias = "gymnasium.vector.SyncVectorEnv | gymnasium.vector.AsyncVectorEnv"
    EnvFactory: TypeAlias = Callable[[], gymnasium.Env]


@functools.cache
def _sub_env_class() -> Callable[[gymnasium.Env, int], gymnasium.Wrapper]:
    import gymnasium

    class SubEnv(gymnasium.Wrapper):
        """A sub-environment that knows its index and reads and sets its RNG state in place. In place
        matters: PyBullet's robots hold a reference to their environment's generator, so replacing the
        generator (``set_attr("np_random", ...)``) would not reach them."""

        def __init__(self, env: gymnasium.Env, index: int) -> None:
            super().__init__(env)
            self.jax_td3_index = index

        def jax_td3_rng_state(self) -> dict[str, Any] | None:
            rng = getattr(self.env.unwrapped, "np_random", None)
            return rng.bit_generator.state if rng is not None else None

        def jax_td3_set_rng_states(self, states: list[dict[str, Any] | None]) -> None:
            state = states[self.jax_td3_index]
            if state is not None:
                self.env.unwrapped.np_random.bit_generator.state = state

    return SubEnv


def _make_sub_env(env_fn: Callable[[], gymnasium.Env], index: int) -> gymnasium.Wrapper:
    return _sub_env_class()(env_fn(), index)


def _make_async_sub_env(env_fn: Callable[[], gymnasium.Env], index: int) -> gymnasium.Wrapper:
    """``_make_sub_env`` in an async worker, which leaves Ctrl-C to the training process: the terminal sends
    SIGINT to the whole process group, and a worker killed by it would fail the step that the training
    process finishes before saving its checkpoint. (AsyncVectorEnv also calls the first factory in the
    training process, for the spaces; that one keeps its handler.)"""
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is not None and multiprocessing.current_process().name.startswith("Worker<"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _make_sub_env(env_fn, index)


def make_vector_env(env_fn: Callable[[], gymnasium.Env], num_envs: int,
                    mode: str = "sync") -> HostVectorEnv:
    """A Gymnasium vector env of ``num_envs`` environments made by ``env_fn`` (it must pickle for "async"),
    autoreset off (``AutoresetMode.DISABLED``: a step returns the real final observation of an episode
    that ends, and the caller resets the environments it chooses with ``reset(options={"reset_mask": ...})``)."""
    import gymnasium

    if mode not in ("sync", "async"):
        raise ValueError(f"vector mode must be sync or async, got {mode!r}")
    autoreset = gymnasium.vector.AutoresetMode.DISABLED
    if mode == "async":
        # Spawned, not forked: the training process runs JAX's (and PyTorch's) threads, which a fork does not copy.
        fns = [functools.partial(_make_async_sub_env, env_fn, i) for i in range(num_envs)]
        return gymnasium.vector.AsyncVectorEnv(fns, autoreset_mode=autoreset, context="spawn")
    fns = [functools.partial(_make_sub_env, env_fn, i) for i in range(num_envs)]
    return gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=autoreset)
