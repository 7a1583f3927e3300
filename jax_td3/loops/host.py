"""The host training loop over a Gymnasium environment, shared by both backends.

``Trainer`` owns the environments, the host replay buffer, every random number
(exploration noise, uniform warm-up actions, replay indices, target-policy noise)
and the counters; a backend (``jax_td3.backends``) only acts and updates. So the
same seed gives the same run with backend "jax" and "torch" (exactly so in float64).
``Trainer.step()`` advances one environment step and returns a ``StepRecord`` of
what happened, so two trainers can be run in lockstep and compared step by step.

What it computes (docs/algorithms.md has the whole story): the exploration rules of
``loops.exploration`` (uniform actions for the first ``random_steps`` steps, default
``learning_starts``; then the actor's action plus Gaussian or Ornstein-Uhlenbeck noise,
clipped to the box). ``not_done`` is 0 only on termination (a time-limit truncation
bootstraps and stores the real final observation) unless ``bootstrap_truncation`` is
off. Updates run once per step once the buffer holds more than ``learning_starts``
transitions (``update_schedule="step"``), or ``updates_per_episode`` times after each
episode (``"episode"``, the DDPG notebook's schedule; ``"steps"``: as many updates as the
episode had steps, the RL Baselines3 Zoo's PyBullet schedule). With ``time_feature`` both
environments append the fraction of the time limit left to their observations.
Evaluation runs the noiseless policy on separate environments, its episodes side by side with
one batched forward per step (``loops.evaluation``), from the start states that one environment
seeded with ``exploration.evaluation_seed(seed)`` would give episode after episode; every
evaluation replays the same start states, and the returns equal a sequential evaluation's.

Fast mode (``updates_per_call = K > 1``, JAX backend only): the trainer collects K
steps, copies them to a device replay buffer and runs K updates in one compiled
``replay.multi_update`` (with the episode schedule: the updates owed after an episode, in
calls of K; a remainder waits for the next episode). Its replay indices and target noise
come from a JAX key, so it is statistically, not bitwise, equal to the per-step path.
With ``overlap`` the trainer does not wait for a block: it dispatches the K updates (JAX
dispatch is asynchronous) and steps the environment for the next block while the device
runs them, acting with the actor from before the block in flight (one block stale: the
actions between boundaries b and b+1 use the parameters after block b-1). A block's
metrics are fetched at the next block boundary, so ``StepRecord.updates`` carries them
one block late. A device runs one program at a time, so the backend acts on another device
when there is one (``backends.jax_backend``); on a single CPU device acting still waits.
Evaluations and the end of the run wait for the updates in flight (``settle_updates``:
their metrics come with that step's record, and acting uses the current actor until the
next block is dispatched); ``state()``, checkpoints and the non-finite checks read the
current state. A checkpoint stores the held actor and the
metrics still in flight, so ``--resume`` stays exact.

The run around it (directory, logging, checkpoints, resume, signals) is
``jax_td3.run.training``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jax_td3.errors import ConfigError, NonFiniteError
from jax_td3.loops import exploration
from jax_td3.loops.evaluation import BatchedEvaluator, evaluate_policy  # noqa: F401  (evaluate_policy: re-export)
from jax_td3.settings import TrainSettings


@dataclasses.dataclass
class StepRecord:
    """What one environment step did (for progress display and lockstep comparisons)."""

    step: int                       # environment steps done, including this one
    obs: np.ndarray
    action: np.ndarray              # the action sent to the env (after noise and clipping), float64
    reward: float
    next_obs: np.ndarray            # the real next observation (the final one at an episode end)
    terminated: bool
    truncated: bool
    not_done: float                 # what was stored in the replay buffer
    random_action: bool
    updates: list[dict[str, float]] = dataclasses.field(default_factory=list)
    episode_return: float | None = None   # set when an episode ended at this step
    episode_length: int | None = None
    evaluation: dict | None = None        # set when an evaluation ran after this step


def first_nonfinite_leaf(tree) -> str | None:
    """Path of the first parameter array holding a NaN or infinity, or None if all are finite."""
    import jax

    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not np.all(np.isfinite(np.asarray(leaf))):
            return jax.tree_util.keystr(path)
    return None


def env_rng_state(env) -> dict | None:
    rng = getattr(env.unwrapped, "np_random", None)
    return rng.bit_generator.state if rng is not None else None


def make_noise(settings: TrainSettings, action_scale, act_dim: int):
    from jax_td3.noise import GaussianNoise, OrnsteinUhlenbeckNoise

    if settings.exploration == "ou":
        return OrnsteinUhlenbeckNoise(act_dim, theta=settings.ou_theta, sigma=settings.ou_sigma,
                                      mu=settings.ou_mu, dt=settings.ou_dt)
    return GaussianNoise(tuple(exploration.gaussian_std(settings.expl_noise, s) for s in action_scale))


class Trainer:
    """All state of one training run, advanced one environment step at a time by ``step()``."""

    def __init__(self, config, settings: TrainSettings, env=None, eval_env=None):
        from jax_td3.backends import make_backend
        from jax_td3.backends.jax_backend import compile_many_ahead, initial_state_and_key
        from jax_td3.buffer import ReplayBuffer
        from jax_td3.dtypes import float_dtype
        from jax_td3.envs import env_spec, make_env

        self.settings = settings.validate()
        self.config = config
        float_dtype(settings.dtype)  # float64: the caller has switched on JAX's x64 mode
        self.dtype = np.dtype(settings.dtype)
        compiling = None
        fused = settings.updates_per_call > 1 and settings.total_steps > settings.learning_starts
        if settings.backend == "jax" and fused:
            # The fused call's compilation needs only shapes: start it first, so that it overlaps building
            # the trainer (the initial state's own compilation included) and the warm-up steps.
            compiling = compile_many_ahead(config, self.dtype, settings.buffer_size, settings.updates_per_call)
        self.env = env if env is not None else make_env(settings.env, time_feature=settings.time_feature)
        if eval_env is not None:  # a caller's env instance: sequential (its episodes may depend on its history)
            self.evaluator, self.eval_env = None, eval_env
        else:
            self.evaluator = BatchedEvaluator(lambda: make_env(settings.env, time_feature=settings.time_feature))
            self.eval_env = self.evaluator.prepare(1)[0]
        self.spec = env_spec(self.env)
        if (config.obs_dim, config.act_dim) != (self.spec.obs_dim, self.spec.act_dim):
            raise ConfigError(f"config is for obs/act dims {config.obs_dim}/{config.act_dim}, {self.spec.env_id} "
                             f"has {self.spec.obs_dim}/{self.spec.act_dim}")
        if config.batch_size > settings.buffer_size:
            raise ConfigError(f"batch size {config.batch_size} is larger than the buffer size {settings.buffer_size}")
        self.low = np.asarray(self.spec.action_low, np.float64)
        self.high = np.asarray(self.spec.action_high, np.float64)
        self.env_action_dtype = self.env.action_space.dtype

        explore_seed, update_seed = np.random.SeedSequence(settings.seed).spawn(2)
        self.explore_rng = np.random.Generator(np.random.PCG64(explore_seed))
        self.update_rng = np.random.Generator(np.random.PCG64(update_seed))
        # One compiled program instead of dozens of eagerly compiled small ops.
        initial_state, self.fast_key = initial_state_and_key(config, settings.seed, self.dtype)
        self.backend = make_backend(settings.backend, config, initial_state, settings.dtype)
        if compiling is not None:
            self.backend.expect_compiled(compiling)
        self.buffer = ReplayBuffer(settings.buffer_size, self.spec.obs_dim, self.spec.act_dim, self.dtype)
        self.noise = make_noise(settings, self.spec.action_scale, self.spec.act_dim)
        self.noise_state = self.noise.init()

        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.episode_return = 0.0
        self.episode_length = 0
        self.pending_updates = 0      # fast mode: updates owed but not yet run
        self.device_synced = 0        # fast mode: env steps already copied to the device replay
        self.skipped_transitions = 0  # non-finite transitions dropped (skip_nonfinite)
        # overlap: fused blocks dispatched but not yet fetched, as (env step of dispatch, device metrics)
        self.inflight: list[tuple[int, dict]] = []
        self.episode_returns: list[float] = []
        self.last_evaluation: dict | None = None
        # An environment's internal state cannot be saved in general; a checkpoint instead keeps
        # how the current episode began (the env RNG just before its reset) and the actions sent
        # since, and ``restore`` replays them. Deterministic environments then resume exactly.
        self.env_rng_at_reset: dict | None = None   # None: the first, seeded reset
        self.episode_actions: list[np.ndarray] = []
        self.obs = self._reset_env(first=True)
        self.env.action_space.seed(settings.seed)

    @property
    def done(self) -> bool:
        return self.env_steps >= self.settings.total_steps

    # -- one environment step ------------------------------------------------------------
    def choose_action(self, obs) -> tuple[np.ndarray, bool]:
        """(action, was_random): uniform in the box during warm-up, else policy + noise, clipped."""
        if exploration.in_warmup(self.env_steps, self.settings.warmup_steps):
            uniform = self.explore_rng.random(self.low.shape)
            return exploration.warmup_action(uniform, self.low, self.high), True
        policy_action = self.backend.act(np.asarray(obs, self.dtype))
        noise, self.noise_state = self.noise.sample(self.noise_state, self.explore_rng)
        return exploration.explore_action(np.clip, policy_action, noise, self.low, self.high), False

    def _reset_env(self, first: bool = False) -> np.ndarray:
        if first:
            obs, _ = self.env.reset(seed=self.settings.seed)
        else:
            self.env_rng_at_reset = env_rng_state(self.env)
            obs, _ = self.env.reset()
        self.episode_actions = []
        self._check_finite("observation", obs, f"{self.settings.env}'s reset", skippable=False)
        return obs

    def _check_finite(self, what: str, value, where: str, skippable: bool = True) -> bool:
        """False if ``value`` has a NaN/inf and non-finite transitions are skipped; raises otherwise."""
        if np.all(np.isfinite(value)):
            return True
        if self.settings.skip_nonfinite and skippable:
            return False
        raise NonFiniteError(f"non-finite {what} ({np.asarray(value).ravel()[:4]}) from {where} at env step "
                             f"{self.env_steps}")

    def step(self) -> StepRecord:
        settings = self.settings
        obs = np.asarray(self.obs)
        action, was_random = self.choose_action(obs)
        env_action = action.astype(self.env_action_dtype)
        next_obs, reward, terminated, truncated, _ = self.env.step(env_action)
        self.episode_actions.append(env_action)
        terminated, truncated, reward = bool(terminated), bool(truncated), float(reward)
        self.env_steps += 1
        ends_bootstrap = terminated or (truncated and not settings.bootstrap_truncation)
        not_done = 0.0 if ends_bootstrap else 1.0
        where = f"{settings.env}'s step"
        obs_finite = self._check_finite("observation", next_obs, where)
        if obs_finite and self._check_finite("reward", reward, where):
            self.buffer.add(obs, action, next_obs, reward, not_done)
            self.episode_return += reward
        else:
            self.skipped_transitions += 1
        self.episode_length += 1
        record = StepRecord(self.env_steps, obs, action, reward, np.asarray(next_obs), terminated, truncated,
                            not_done, was_random)

        # A non-finite observation cannot be continued from: that episode ends here.
        episode_ended = terminated or truncated or not obs_finite
        if episode_ended:
            record.episode_return, record.episode_length = self.episode_return, self.episode_length
            self.episode_returns.append(self.episode_return)
            self.episodes += 1
            self.episode_return, self.episode_length = 0.0, 0
            self.obs = self._reset_env()
        else:
            self.obs = next_obs

        record.updates = self._train(record.episode_length if episode_ended else None)
        return self._finish_step(record, evaluating=self.env_steps % settings.eval_every == 0 or self.done)

    def _finish_step(self, record, evaluating: bool):
        """The end of a step: with an evaluation due, the updates in flight (overlap) first; then the
        non-finite check of the step's update metrics, then the evaluation."""
        if evaluating:
            record.updates += self.settle_updates()
        for metrics in record.updates:
            for name in ("critic_loss", "actor_loss"):
                if not math.isfinite(metrics[name]):
                    self._raise_nonfinite_update(name.replace("_", " "))
        if evaluating:
            record.evaluation = self.evaluate()
        return record

    def _raise_nonfinite_update(self, what: str):
        state = self.backend.state()
        bad = first_nonfinite_leaf(state)
        detail = f"; first non-finite parameter: {bad}" if bad else ""
        raise NonFiniteError(f"non-finite {what} in update {self.updates} (env step {self.env_steps}){detail}")

    def check_parameters(self) -> None:
        """Raise NonFiniteError if any parameter, target or optimizer moment holds a NaN or infinity."""
        bad = first_nonfinite_leaf(self.backend.state())
        if bad is not None:
            raise NonFiniteError(f"non-finite parameter {bad} after update {self.updates} "
                                 f"(env step {self.env_steps})")

    def _train(self, ended_episode_length: int | None) -> list[dict[str, float]]:
        """The updates owed after this step; ``ended_episode_length`` is set when an episode just ended."""
        settings = self.settings
        if len(self.buffer) <= settings.learning_starts:
            return []
        if settings.update_schedule == "step":
            owed = 1
        elif ended_episode_length is None:
            owed = 0
        elif settings.updates_per_episode == "steps":
            owed = ended_episode_length
        else:
            owed = settings.updates_per_episode
        return self._run_updates(owed)

    def _run_updates(self, owed: int) -> list[dict[str, float]]:
        """Run (or, fused, schedule) ``owed`` more updates; the metrics of the updates that ran."""
        settings = self.settings
        if settings.updates_per_call == 1:
            return [self._update_once() for _ in range(owed)]
        self.pending_updates += owed
        # Calls of exactly `updates_per_call` updates (one compiled program); a remainder waits for
        # the next call, and only the run's last call has another size.
        metrics = []
        while self.pending_updates >= settings.updates_per_call:
            metrics += self._update_fused(settings.updates_per_call)
        if self.done and self.pending_updates:
            metrics += self._update_fused(self.pending_updates)
        return metrics

    def _update_once(self) -> dict[str, float]:
        batch_size, act_dim = self.config.batch_size, self.spec.act_dim
        batch = self.buffer.gather(self.buffer.sample_indices(self.update_rng, batch_size))
        if self.config.target_policy_smoothing:
            target_noise = self.update_rng.standard_normal((batch_size, act_dim)).astype(self.dtype)
        else:
            target_noise = np.zeros((batch_size, act_dim), self.dtype)  # unused by the DDPG variants
        metrics = self.backend.update(batch, target_noise)
        self.updates += 1
        return metrics

    def _update_fused(self, num_updates: int) -> list[dict[str, float]]:
        from jax_td3.backends.jax_backend import split_key

        if not self.backend.has_replay:
            # First use, or after a restore: the host ring as it is (slots, position, size), so
            # sampled indices mean the same as in a run that was never interrupted.
            self.backend.load_replay(self.buffer.state_dict())
        elif self.env_steps > self.device_synced:
            fresh = min(self.env_steps - self.device_synced, self.buffer.capacity)
            self.backend.sync_replay(self.buffer.last(fresh))
        self.device_synced = self.env_steps
        self.fast_key, key = split_key(self.fast_key)
        self.updates += num_updates
        self.pending_updates -= num_updates
        if not self.settings.overlap:
            return self.backend.update_many(key, num_updates)
        # Overlap: act with the actor from before this step's first block while its updates run, and
        # return the metrics of the blocks dispatched at earlier steps (they have had a block's time).
        if not any(step == self.env_steps for step, _ in self.inflight):
            self.backend.hold_acting_params()
        dispatched = self.backend.dispatch_many(key, num_updates)
        earlier = [metrics for step, metrics in self.inflight if step < self.env_steps]
        self.inflight = [entry for entry in self.inflight if entry[0] == self.env_steps]
        self.inflight.append((self.env_steps, dispatched))
        return [m for metrics in earlier for m in self.backend.fetch_metrics(metrics)]

    def settle_updates(self) -> list[dict[str, float]]:
        """Overlap: wait for the updates in flight and return their metrics; acting uses the current actor
        until the next block is dispatched. Call it before reading the policy (an evaluation); a no-op
        without ``overlap``."""
        if not self.settings.overlap:
            return []
        earlier, self.inflight = self.inflight, []
        self.backend.release_acting_params()
        return [m for _, metrics in earlier for m in self.backend.fetch_metrics(metrics)]

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, episodes: int | None = None) -> dict:
        """Mean/std undiscounted return of the noiseless policy on the evaluation env."""
        episodes = episodes or self.settings.eval_episodes
        seed = exploration.evaluation_seed(self.settings.seed)
        if self.evaluator is not None:
            returns = self.evaluator.evaluate(self.backend.act_batch, episodes, seed, self.dtype)
        else:
            returns = evaluate_policy(None, self.eval_env, episodes, seed, self.dtype, act_batch=self.backend.act_batch)
        if not np.all(np.isfinite(returns)):
            raise NonFiniteError(f"non-finite evaluation return {returns} at env step {self.env_steps}")
        self.last_evaluation = {"step": self.env_steps, "eval_return_mean": float(np.mean(returns)),
                                "eval_return_std": float(np.std(returns)), "eval_returns": returns}
        return self.last_evaluation

    # -- checkpointing -------------------------------------------------------------------
    def snapshot(self, include_buffer: bool = False) -> dict:
        """Everything needed to continue this run, as numpy arrays and plain values."""
        from jax_td3.backends.base import pack_train_state

        return {
            **self._overlap_snapshot(),
            "train_state": pack_train_state(self.backend.state()),
            "counters": {"env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes,
                         "episode_return": self.episode_return, "episode_length": self.episode_length,
                         "pending_updates": self.pending_updates, "skipped_transitions": self.skipped_transitions},
            "rng": {"explore": self.explore_rng.bit_generator.state, "update": self.update_rng.bit_generator.state,
                    "fast_key": np.asarray(jax_key_data(self.fast_key)), "env_at_reset": self.env_rng_at_reset},
            "episode_actions": np.asarray(self.episode_actions, self.env_action_dtype).reshape(
                len(self.episode_actions), self.spec.act_dim),
            "noise_state": np.asarray(self.noise_state),
            "obs": np.asarray(self.obs),
            "episode_returns": list(self.episode_returns),
            "last_evaluation": self.last_evaluation,
            "buffer": self.buffer.state_dict() if include_buffer else None,
        }

    def _overlap_snapshot(self) -> dict:
        """With ``overlap``: the actor parameters acting uses next (None: the state's) and the metrics of the
        blocks still in flight, so that a resumed run acts and logs as the uninterrupted one; else nothing.
        (``restore`` reads them back.)"""
        import jax

        from jax_td3.backends.base import pack_train_state

        if not self.settings.overlap:
            return {}
        acting = self.backend.acting_params()
        return {"acting_params": None if acting is None else pack_train_state(acting),
                "inflight": [{"step": step, **{k: np.asarray(v) for k, v in jax.device_get(m).items()}}
                             for step, m in self.inflight]}

    def restore(self, snapshot: dict) -> None:
        """Load a ``snapshot()``: learner, counters, RNGs, noise, (if stored) the replay buffer, and
        the environment, rebuilt by replaying the current episode from its reset.

        Returns nothing; warns if the rebuilt observation differs from the saved one (an
        environment that is not deterministic given its RNG and actions).
        """
        import jax.numpy as jnp

        from jax_td3.backends.base import unpack_train_state

        self.backend.load_state(unpack_train_state(self.config, self.settings.dtype, snapshot["train_state"]))
        self.inflight = []
        if self.settings.overlap:
            if snapshot.get("acting_params") is not None:
                self.backend.hold_acting_params(self._unpack_actor(snapshot["acting_params"]))
            self.inflight = [(int(entry["step"]), {k: np.asarray(v) for k, v in entry.items() if k != "step"})
                             for entry in snapshot.get("inflight", [])]
        counters = snapshot["counters"]
        self.env_steps, self.updates, self.episodes = (int(counters[k]) for k in ("env_steps", "updates", "episodes"))
        self.episode_return = float(counters["episode_return"])
        self.episode_length = int(counters["episode_length"])
        self.pending_updates = int(counters["pending_updates"])
        self.skipped_transitions = int(counters.get("skipped_transitions", 0))
        self.explore_rng.bit_generator.state = snapshot["rng"]["explore"]
        self.update_rng.bit_generator.state = snapshot["rng"]["update"]
        self.fast_key = jnp.asarray(snapshot["rng"]["fast_key"], jnp.uint32)
        self.noise_state = np.asarray(snapshot["noise_state"], np.float64)
        self._rebuild_env(snapshot["rng"].get("env_at_reset"), snapshot.get("episode_actions"),
                          np.asarray(snapshot["obs"]))
        self.episode_returns = [float(r) for r in snapshot["episode_returns"]]
        self.last_evaluation = snapshot["last_evaluation"]
        if snapshot.get("buffer") is not None:
            self.buffer.load_state_dict(snapshot["buffer"])
        if hasattr(self.backend, "drop_replay"):
            self.backend.drop_replay()

    def _unpack_actor(self, arrays):
        from jax_td3.backends.base import train_state_template, unpack_tree

        return unpack_tree(train_state_template(self.config).actor_params, arrays, self.settings.dtype,
                           what="checkpoint acting parameters", hint="the actor")

    def _rebuild_env(self, rng_at_reset, actions, saved_obs) -> None:
        import warnings

        if actions is None:  # a checkpoint without the episode's actions: start a fresh episode
            warnings.warn("checkpoint does not record the current episode; the environment starts a new one",
                          stacklevel=3)
            self.episode_return, self.episode_length = 0.0, 0
            self.obs = self._reset_env()
            return
        obs, _ = self.env.reset(seed=self.settings.seed)
        if rng_at_reset is not None:
            self.env.unwrapped.np_random.bit_generator.state = rng_at_reset
            obs, _ = self.env.reset()
        self.env_rng_at_reset = rng_at_reset
        self.episode_actions = []
        for action in np.asarray(actions):
            obs, *_ = self.env.step(action)
            self.episode_actions.append(action)
        self.obs = self._replayed(np.asarray(obs), saved_obs)

    def _replayed(self, obs: np.ndarray, saved_obs) -> np.ndarray:
        """``obs``, the observation an environment replayed to; warns if it is not the saved one."""
        import warnings

        saved_obs = np.asarray(saved_obs)
        if obs.shape != saved_obs.shape or not np.array_equal(obs, saved_obs):
            difference = np.max(np.abs(obs - saved_obs)) if obs.shape == saved_obs.shape else "shape"
            warnings.warn(f"{self.settings.env} did not replay to the saved state (max difference {difference}); "
                          "continuing from the replayed state, so the resumed run is not bit-exact", stacklevel=4)
        return obs

    def close(self) -> None:
        self.env.close()
        self._close_evaluation()

    def _close_evaluation(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
        else:
            self.eval_env.close()


def jax_key_data(key):
    import jax

    return jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
