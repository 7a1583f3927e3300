"""The host training loop over N Gymnasium environments at once (``num_envs`` N, ``vector_mode``).

``VectorTrainer`` is ``Trainer`` (``loops.host``) with a Gymnasium vector environment in place of
the one environment: ``gymnasium.vector.SyncVectorEnv`` ("sync": the N environments stepped one
after another in this process) or ``AsyncVectorEnv`` ("async": one subprocess each, stepped in
parallel), over ``envs.make_env`` factories. Sub-environment i is seeded with ``seed + i``. The loop
itself (``step``, the schedule of ``loops.schedule``, the updates, ``snapshot``/``restore``) is
``Trainer``'s, written once for N environments; this class supplies only the environment side (stepping,
resetting and replaying the vector env) and shows per-environment values as arrays over the N. A run
uses it when ``num_envs`` > 1 or ``updates_per_step`` is not 1; ``num_envs`` 1 with one update per step
stays the plain ``Trainer``.

A *vector step* (``step()``):

- acts for all N environments with one batched forward (``backend.act_batch``). Transition
  ``env_steps + i`` is environment i's; it is a warm-up one (uniform in the box) while that index is
  below ``random_steps``, as in the compiled loop. The random draws come from the trainer's
  ``explore_rng`` environment by environment (a uniform action, or a noise sample), so with N = 1
  the draws are ``Trainer``'s. Ornstein-Uhlenbeck noise keeps one state per environment (N, act_dim);
  like the one-environment loop it is not reset at an episode's end.
- writes the N transitions to the replay in environment order. The vector env runs with autoreset
  off (``AutoresetMode.DISABLED``): ``step`` returns the real final observation of an episode that
  ended, which is what a truncated (bootstrapped) transition stores, and the trainer then resets just
  those environments (``reset_mask``), after recording each one's RNG state (what an exact resume
  needs; Gymnasium's same-step autoreset would reset inside ``step``, before that state can be read).
  ``not_done`` is 0 on termination, and on truncation when ``bootstrap_truncation`` is off.
- counts ``env_steps`` over all N: ``total_steps`` (the run stops at the first vector step reaching
  it), ``eval_every`` (an evaluation when a multiple is reached or passed), ``learning_starts`` and
  ``random_steps`` are in transitions.
- updates (``loops.schedule``): with the "step" schedule ``updates_per_step`` U per vector step by the
  exact fraction rule (the compiled loop's), from the first vector step after which more than
  ``learning_starts`` transitions were taken; with the "episode" schedule, the updates owed after each
  episode that ended in this step (``updates_per_episode``, or its length). ``updates_per_call`` K > 1
  runs them in fused calls of K, as ``Trainer`` does.

Checkpoints (``snapshot``/``restore``) keep, for each sub-environment, its RNG state before the
reset that began its current episode and the actions sent since. ``restore`` rebuilds all N by
replaying them in lockstep through the vector env's own interface (seeded reset, per-environment
RNG states, masked resets, steps), so sync and async resume alike, and exactly for environments
that are deterministic given their RNG and actions (warning otherwise, as ``Trainer`` does).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_td3.loops.host import StepRecord, Trainer
from jax_td3.settings import TrainSettings

if TYPE_CHECKING:  # for annotations only: Gymnasium is imported when the environments are made
    from jax_td3.config import TD3Config
    from jax_td3.envs import HostEnv
    from jax_td3.envs.vector import EnvFactory, HostVectorEnv


@dataclasses.dataclass
class VectorStepRecord(StepRecord):
    """What one vector step did. ``obs``, ``action``, ``reward``, ``next_obs`` (the real final
    observation where an episode ended), ``terminated``, ``truncated``, ``not_done`` and
    ``random_action`` have a leading axis of N; ``episode_return``/``episode_length`` are those of
    the last episode that ended in the step (all of them are in ``ended_episodes``)."""

    transitions: int = 1


def make_vector_env(settings: TrainSettings, env_fn: EnvFactory | None = None) -> HostVectorEnv:
    """The vector env of ``settings.num_envs`` environments made by ``env_fn`` (default:
    ``envs.make_env(settings.env, time_feature=...)``) in ``settings.vector_mode`` (``envs.vector``)."""
    from jax_td3.envs import make_env
    from jax_td3.envs.vector import make_vector_env as make

    env_fn = env_fn or functools.partial(make_env, settings.env, time_feature=settings.time_feature)
    return make(env_fn, settings.num_envs, settings.vector_mode)


def _masked_rows(mask: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``new``'s rows where ``mask`` is set, ``old``'s elsewhere."""
    return np.where(mask.reshape((-1,) + (1,) * (np.ndim(old) - 1)), new, old)


class VectorTrainer(Trainer):
    """``Trainer`` over ``settings.num_envs`` environments stepped together; ``step()`` is one vector step.

    ``eval_env`` is an evaluation environment to evaluate on sequentially (default: ``env_fn()`` if
    given, else the batched evaluation over environments of ``settings.env``); ``env_fn`` makes each training
    environment (default ``envs.make_env`` of ``settings.env``; it must pickle for ``vector_mode`` "async").
    """

    def __init__(self, config: TD3Config, settings: TrainSettings, eval_env: HostEnv | None = None,
                 env_fn: EnvFactory | None = None):
        from jax_td3.envs import make_env

        settings = settings.validate()
        self.num_envs = settings.num_envs
        self.vec = make_vector_env(settings, env_fn)
        # Trainer reads the spaces from its ``env``: one more instance, closed right after; the training
        # env is ``vec``. Without an ``eval_env`` the evaluation runs batched (``loops.evaluation``).
        probe = env_fn() if env_fn is not None else make_env(settings.env, time_feature=settings.time_feature)
        if eval_env is None and env_fn is not None:  # a custom environment: evaluate on one more of it
            eval_env = env_fn()
        try:
            super().__init__(config, settings, env=probe, eval_env=eval_env)
        except BaseException:
            self.vec.close()
            raise
        finally:
            probe.close()
        self.env = self.vec

    # -- the environment side ----------------------------------------------------------------
    def _per_env(self, values: Any) -> Any:
        """Per-environment values as they are: one per environment."""
        return values

    def _rows(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def _reset_env(self, first: bool = False) -> np.ndarray:
        """The run's first reset: sub-environment i seeded with ``seed + i`` (Trainer.__init__ calls it)."""
        assert first, "a vector env resets its sub-environments with _reset_ended"
        obs, _ = self.vec.reset(seed=self.settings.seed)
        self.env_rng_at_reset = [None] * self.num_envs   # None: the first, seeded reset
        self.episode_actions = [[] for _ in range(self.num_envs)]
        self._check_finite("observation", obs, f"{self.settings.env}'s reset", skippable=False)
        return np.asarray(obs)

    def _step_envs(self, env_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        next_obs, rewards, terminated, truncated, _ = self.vec.step(env_actions)
        return (np.asarray(next_obs), np.asarray(rewards, np.float64), np.asarray(terminated, bool),
                np.asarray(truncated, bool))

    def _record(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, not_done: np.ndarray,
                was_random: np.ndarray) -> VectorStepRecord:
        # StepRecord's one-environment fields hold arrays over the N environments here.
        return VectorStepRecord(self.env_steps, obs, actions, rewards, next_obs, terminated, truncated,  # type: ignore[arg-type]
                                not_done, was_random, transitions=self.num_envs)  # type: ignore[arg-type]

    def _reset_ended(self, ended: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """Reset the sub-environments in ``ended``, recording their RNG states first; the new observations."""
        states = self.vec.call("jax_td3_rng_state")
        for i in np.flatnonzero(ended):
            self.env_rng_at_reset[i] = states[i]
            self.episode_actions[i] = []
        reset_obs, _ = self.vec.reset(options={"reset_mask": np.asarray(ended, np.bool_)})
        reset_obs = np.asarray(reset_obs)
        self._check_finite("observation", reset_obs[ended], f"{self.settings.env}'s reset", skippable=False)
        return _masked_rows(ended, reset_obs, next_obs)

    # -- checkpointing -------------------------------------------------------------------
    def snapshot(self, include_buffer: bool = False) -> dict:
        """``Trainer.snapshot``, its per-environment values lists or arrays over the N environments, and
        the vector env's size and mode."""
        return {**super().snapshot(include_buffer),
                "vector": {"num_envs": self.num_envs, "vector_mode": self.settings.vector_mode}}

    def _rebuild_env(self, rng_at_reset: Any, actions: Any, saved_obs: np.ndarray) -> None:
        """Replay every sub-environment's current episode, all in lockstep through the vector env.

        The episodes are aligned at their ends: with L the longest, environment i (whose episode has
        ``len_i`` actions) begins it at replay step ``L - len_i``, by a reset with its recorded RNG state
        (an environment still in its first episode began with the seeded reset, at step 0). Before its
        start an environment steps with the middle of the action box; what that does is undone by the reset.
        """
        n = self.num_envs
        if actions is None:  # a checkpoint without the episodes' actions: start new ones
            warnings.warn("checkpoint does not record the current episodes; the environments start new ones",
                          stacklevel=3)
            self.episode_return, self.episode_length = 0.0, 0
            self.obs = self._reset_env(first=True)
            return
        act_dim = self.spec.act_dim
        actions = [np.asarray(a, self.env_action_dtype).reshape(-1, act_dim) for a in actions]
        rng_at_reset = list(rng_at_reset)
        lengths = np.array([len(a) for a in actions])
        longest = int(lengths.max())
        starts = longest - lengths
        idle = ((self.low + self.high) / 2).astype(self.env_action_dtype)
        seed = self.settings.seed
        obs = np.asarray(self.vec.reset(seed=seed)[0])   # environment i seeded with seed + i, as at the start
        ended = np.zeros(n, bool)
        for k in range(longest + 1):
            begins = starts == k
            recorded = np.array([state is not None for state in rng_at_reset])
            with_rng = begins & recorded
            reseed = begins & ~recorded & (k > 0)   # cannot happen for a checkpoint of this trainer
            mask = with_rng | reseed | ended
            if mask.any():
                if with_rng.any():
                    self.vec.call("jax_td3_set_rng_states", [s if b else None for s, b in zip(rng_at_reset, with_rng)])
                seeds = [seed + i if reseed[i] else None for i in range(n)]
                reset_obs, _ = self.vec.reset(seed=seeds, options={"reset_mask": mask})
                obs = _masked_rows(mask, np.asarray(reset_obs), obs)
            if k == longest:
                break
            step_actions = np.stack([actions[i][k - starts[i]] if k >= starts[i] else idle for i in range(n)])
            obs, _, terminated, truncated, _ = self.vec.step(step_actions)
            obs = np.asarray(obs)
            ended = (np.asarray(terminated) | np.asarray(truncated)) & (k + 1 < longest)
        self.env_rng_at_reset = rng_at_reset
        self.episode_actions = [list(a) for a in actions]
        self.obs = self._replayed(obs, saved_obs)

    def close(self) -> None:
        self.vec.close()
        self._close_evaluation()
