"""The host training loop over N Gymnasium environments at once (``num_envs`` N, ``vector_mode``).

``VectorTrainer`` is ``Trainer`` (``loops.host``) with a Gymnasium vector environment in place of
the one environment: ``gymnasium.vector.SyncVectorEnv`` ("sync": the N environments stepped one
after another in this process) or ``AsyncVectorEnv`` ("async": one subprocess each, stepped in
parallel), over ``envs.make_env`` factories. Sub-environment i is seeded with ``seed + i``. The
learner, the replay buffer, every random number and the updates (``_update_once``, the fused
``_update_fused``) are ``Trainer``'s. A run uses it when ``num_envs`` > 1 or ``updates_per_step``
is not 1; ``num_envs`` 1 with one update per step stays the plain ``Trainer``.

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
- updates: with the "step" schedule ``updates_per_step`` U per vector step by the exact fraction rule
  of ``loops.schedule`` (the compiled loop's), from the first vector step after which the buffer
  holds more than ``learning_starts`` transitions; with the "episode" schedule, the updates owed after
  each episode that ended in this step (``updates_per_episode``, or its length). ``updates_per_call`` K
  > 1 runs them in fused calls of K, as ``Trainer`` does.

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

import numpy as np

from jax_td3.errors import ConfigError
from jax_td3.loops import exploration, schedule
from jax_td3.loops.host import StepRecord, Trainer
from jax_td3.settings import TrainSettings


@dataclasses.dataclass
class VectorStepRecord(StepRecord):
    """What one vector step did. ``obs``, ``action``, ``reward``, ``next_obs`` (the real final
    observation where an episode ended), ``terminated``, ``truncated``, ``not_done`` and
    ``random_action`` have a leading axis of N; ``episode_return``/``episode_length`` are those of
    the last episode that ended in the step (all of them are in ``ended_episodes``)."""

    transitions: int = 1
    ended_episodes: list[tuple[int, float, int]] = dataclasses.field(default_factory=list)
    """(environment index, return, length) of every episode that ended in this step, in index order."""


def make_vector_env(settings: TrainSettings, env_fn=None):
    """The vector env of ``settings.num_envs`` environments made by ``env_fn`` (default:
    ``envs.make_env(settings.env, time_feature=...)``) in ``settings.vector_mode`` (``envs.vector``)."""
    from jax_td3.envs import make_env
    from jax_td3.envs.vector import make_vector_env as make

    env_fn = env_fn or functools.partial(make_env, settings.env, time_feature=settings.time_feature)
    return make(env_fn, settings.num_envs, settings.vector_mode)


def _rows(mask: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``new``'s rows where ``mask`` is set, ``old``'s elsewhere."""
    return np.where(mask.reshape((-1,) + (1,) * (np.ndim(old) - 1)), new, old)


class VectorTrainer(Trainer):
    """``Trainer`` over ``settings.num_envs`` environments stepped together; ``step()`` is one vector step.

    ``eval_env`` is an evaluation environment to evaluate on sequentially (default: ``env_fn()`` if
    given, else the batched evaluation over environments of ``settings.env``); ``env_fn`` makes each training
    environment (default ``envs.make_env`` of ``settings.env``; it must pickle for ``vector_mode`` "async").
    """

    def __init__(self, config, settings: TrainSettings, eval_env=None, env_fn=None):
        from jax_td3.envs import make_env

        settings = settings.validate()
        if settings.update_schedule != "step" and settings.updates_per_step != 1:
            raise ConfigError("`updates_per_step` applies to `update_schedule` step; the episode schedule runs "
                              "`updates_per_episode` after each episode")
        self.num_envs = settings.num_envs
        self.update_fraction = schedule.update_fraction(settings.updates_per_step)
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
        n = self.num_envs
        self.noise_state = np.stack([np.asarray(self.noise.init(), np.float64)] * n)   # (N, 0) or (N, act_dim)
        self.episode_return = np.zeros(n)
        self.episode_length = np.zeros(n, np.int64)

    # -- environments --------------------------------------------------------------------
    def _reset_env(self, first: bool = False) -> np.ndarray:
        """The run's first reset: sub-environment i seeded with ``seed + i`` (Trainer.__init__ calls it)."""
        assert first, "a vector env resets its sub-environments with _reset_ended"
        obs, _ = self.vec.reset(seed=self.settings.seed)
        self.env_rng_at_reset = [None] * self.num_envs   # None: the first, seeded reset
        self.episode_actions = [[] for _ in range(self.num_envs)]
        self._check_finite("observation", obs, f"{self.settings.env}'s reset", skippable=False)
        return np.asarray(obs)

    def _reset_ended(self, ended: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """Reset the sub-environments in ``ended``, recording their RNG states first; the new observations."""
        states = self.vec.call("jax_td3_rng_state")
        for i in np.flatnonzero(ended):
            self.env_rng_at_reset[i] = states[i]
            self.episode_actions[i] = []
        reset_obs, _ = self.vec.reset(options={"reset_mask": np.asarray(ended, np.bool_)})
        reset_obs = np.asarray(reset_obs)
        self._check_finite("observation", reset_obs[ended], f"{self.settings.env}'s reset", skippable=False)
        return _rows(ended, reset_obs, next_obs)

    # -- one vector step -----------------------------------------------------------------
    def choose_actions(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions (N, act_dim), was_random (N,)): per environment, uniform in the box while its transition
        index is in the warm-up, else the policy's action (one batched forward) plus noise, clipped."""
        n = self.num_envs
        warm = np.array([exploration.in_warmup(self.env_steps + i, self.settings.warmup_steps) for i in range(n)])
        policy = None if warm.all() else self.backend.act_batch(np.asarray(obs, self.dtype))
        actions = np.empty((n, self.spec.act_dim))
        for i in range(n):
            if warm[i]:
                actions[i] = exploration.warmup_action(self.explore_rng.random(self.low.shape), self.low, self.high)
            else:
                noise, self.noise_state[i] = self.noise.sample(self.noise_state[i], self.explore_rng)
                actions[i] = exploration.explore_action(np.clip, policy[i], noise, self.low, self.high)
        return actions, warm

    def step(self) -> VectorStepRecord:
        settings, n = self.settings, self.num_envs
        obs = np.asarray(self.obs)
        actions, was_random = self.choose_actions(obs)
        env_actions = actions.astype(self.env_action_dtype)
        next_obs, rewards, terminated, truncated, _ = self.vec.step(env_actions)
        next_obs = np.asarray(next_obs)
        rewards = np.asarray(rewards, np.float64)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        for i in range(n):
            self.episode_actions[i].append(env_actions[i])
        self.env_steps += n
        ends_bootstrap = terminated | (truncated & (not settings.bootstrap_truncation))
        not_done = np.where(ends_bootstrap, 0.0, 1.0)
        ended = terminated | truncated
        where = f"{settings.env}'s step"
        for i in range(n):
            obs_finite = self._check_finite("observation", next_obs[i], where)
            if obs_finite and self._check_finite("reward", rewards[i], where):
                self.buffer.add(obs[i], actions[i], next_obs[i], float(rewards[i]), not_done[i])
                self.episode_return[i] += float(rewards[i])
            else:
                self.skipped_transitions += 1
            self.episode_length[i] += 1
            ended[i] |= not obs_finite   # a non-finite observation cannot be continued from
        record = VectorStepRecord(self.env_steps, obs, actions, rewards, next_obs, terminated, truncated,
                                  not_done, was_random, transitions=n)

        for i in np.flatnonzero(ended):
            episode = (int(i), float(self.episode_return[i]), int(self.episode_length[i]))
            record.ended_episodes.append(episode)
            record.episode_return, record.episode_length = episode[1], episode[2]
            self.episode_returns.append(episode[1])
            self.episodes += 1
            self.episode_return[i], self.episode_length[i] = 0.0, 0
        self.obs = self._reset_ended(ended, next_obs) if ended.any() else next_obs

        record.updates = self._train_vector([length for _, _, length in record.ended_episodes])
        every = settings.eval_every
        return self._finish_step(record, evaluating=self.env_steps // every > (self.env_steps - n) // every
                                 or self.done)

    def _train_vector(self, ended_lengths: list[int]) -> list[dict[str, float]]:
        """The updates owed after this vector step (``ended_lengths``: the episodes that ended in it)."""
        settings, n = self.settings, self.num_envs
        if settings.update_schedule == "step":
            # Learning step number k of this vector step; k = 0 is the first after which the buffer
            # holds more than learning_starts transitions (the compiled loop's first_learning_step).
            k = self.env_steps // n - 1 - settings.learning_starts // n
            owed = schedule.updates_at(k, *self.update_fraction) if k >= 0 else 0
        elif len(self.buffer) <= settings.learning_starts:
            return []
        elif settings.updates_per_episode == "steps":
            owed = sum(ended_lengths)
        else:
            owed = settings.updates_per_episode * len(ended_lengths)
        return self._run_updates(owed)

    # -- checkpointing -------------------------------------------------------------------
    def snapshot(self, include_buffer: bool = False) -> dict:
        """``Trainer.snapshot`` with per-environment episode state: returns, lengths, RNG states at the
        reset, actions since, observations and noise states, each a list or array over the N environments."""
        from jax_td3.backends.base import pack_train_state
        from jax_td3.loops.host import jax_key_data

        act_dim = self.spec.act_dim
        return {
            "train_state": pack_train_state(self.backend.state()),
            "counters": {"env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes,
                         "episode_return": [float(x) for x in self.episode_return],
                         "episode_length": [int(x) for x in self.episode_length],
                         "pending_updates": self.pending_updates, "skipped_transitions": self.skipped_transitions},
            "rng": {"explore": self.explore_rng.bit_generator.state, "update": self.update_rng.bit_generator.state,
                    "fast_key": np.asarray(jax_key_data(self.fast_key)), "env_at_reset": list(self.env_rng_at_reset)},
            "episode_actions": [np.asarray(actions, self.env_action_dtype).reshape(len(actions), act_dim)
                                for actions in self.episode_actions],
            "noise_state": np.asarray(self.noise_state),
            "obs": np.asarray(self.obs),
            "episode_returns": list(self.episode_returns),
            "last_evaluation": self.last_evaluation,
            "buffer": self.buffer.state_dict() if include_buffer else None,
            "vector": {"num_envs": self.num_envs, "vector_mode": self.settings.vector_mode},
            **self._overlap_snapshot(),
        }

    def restore(self, snapshot: dict) -> None:
        """Load a ``snapshot()`` of a run with the same ``num_envs``; the sub-environments are rebuilt by
        replaying their current episodes (warning if one does not replay to its saved observation)."""
        saved_envs = (snapshot.get("vector") or {}).get("num_envs", 1)
        if saved_envs != self.num_envs:
            raise ConfigError(f"the checkpoint is of a run with num_envs {saved_envs}, not {self.num_envs}")
        counters = snapshot["counters"]
        # Trainer.restore reads scalar episode counters; the per-environment ones are set after it.
        super().restore({**snapshot, "counters": {**counters, "episode_return": 0.0, "episode_length": 0}})
        if snapshot.get("episode_actions") is not None:
            self.episode_return = np.asarray(counters["episode_return"], np.float64).copy()
            self.episode_length = np.asarray(counters["episode_length"], np.int64).copy()
        self.noise_state = np.asarray(snapshot["noise_state"], np.float64).reshape(self.num_envs, -1).copy()

    def _rebuild_env(self, rng_at_reset, actions, saved_obs) -> None:
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
            self.episode_return, self.episode_length = np.zeros(n), np.zeros(n, np.int64)
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
                obs = _rows(mask, np.asarray(reset_obs), obs)
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
