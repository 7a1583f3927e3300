"""The Gymnasium training loop, shared by both backends, and the ``jax-td3 train`` command.

``Trainer`` owns the environments, the host replay buffer, every random number
(exploration noise, uniform warm-up actions, replay indices, target-policy noise)
and the counters; a backend (``jax_td3.backends``) only acts and updates. So the
same seed gives the same run with ``--backend jax`` and ``--backend torch``
(exactly so in float64). ``Trainer.step()`` advances one environment step and
returns a ``StepRecord`` of what happened, so two trainers can be run in lockstep
and compared step by step.

Semantics follow REFERENCE.md: uniform random actions for the first
``random_steps`` steps (default: ``learning_starts``); then the actor's action plus
Gaussian N(0, expl_noise * action_scale) or Ornstein-Uhlenbeck noise, clipped to
the box. ``not_done`` is 0 only on termination (a time-limit truncation bootstraps
and stores the real final observation) unless ``bootstrap_truncation`` is off.
Updates run once per step once the buffer holds more than ``learning_starts``
transitions (``update_schedule="step"``), or ``updates_per_episode`` times after
each episode (``"episode"``, the DDPG notebook's schedule). Evaluation runs the
noiseless policy on a separate environment seeded with ``seed + 100``; every
evaluation replays the same start states.

Fast mode (``updates_per_call = K > 1``, JAX backend only): the trainer collects K
steps, copies them to a device replay buffer and runs K updates in one compiled
``replay.multi_update``. Its replay indices and target noise come from a JAX key,
so it is statistically, not bitwise, equal to the per-step path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jax_td3.cli import UsageError, nonnegative_int, positive_int

SCHEDULES = ("step", "episode")
EXPLORATIONS = ("gaussian", "ou")
DTYPES = ("float32", "float64")
EVAL_SEED_OFFSET = 100


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything about the loop that is not the algorithm's config (defaults: presets.DEFAULTS)."""

    env: str = "Pendulum-v1"
    total_steps: int = 15_000
    seed: int = 0
    backend: str = "jax"
    dtype: str = "float32"
    buffer_size: int = 1_000_000
    learning_starts: int = 1_000
    random_steps: int | None = None
    update_schedule: str = "step"
    updates_per_episode: int = 10
    exploration: str = "gaussian"
    expl_noise: float = 0.1
    ou_theta: float = 0.1
    ou_sigma: float = 0.1
    ou_mu: float = 0.0
    ou_dt: float = 0.01
    bootstrap_truncation: bool = True
    eval_every: int = 1_000
    eval_episodes: int = 10
    updates_per_call: int = 1
    skip_nonfinite: bool = False

    @property
    def warmup_steps(self) -> int:
        return self.learning_starts if self.random_steps is None else self.random_steps

    def validate(self) -> "TrainSettings":
        from jax_td3.backends import BACKENDS

        checks = [
            (self.backend in BACKENDS, f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}"),
            (self.dtype in DTYPES, f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}"),
            (self.update_schedule in SCHEDULES, f"update schedule must be one of {', '.join(SCHEDULES)}"),
            (self.exploration in EXPLORATIONS, f"exploration must be one of {', '.join(EXPLORATIONS)}"),
            (self.total_steps > 0, f"total steps must be positive, got {self.total_steps}"),
            (self.buffer_size > 0, f"buffer size must be positive, got {self.buffer_size}"),
            (self.learning_starts >= 0, "learning starts must be >= 0"),
            (self.warmup_steps >= 0, "random steps must be >= 0"),
            (self.eval_every > 0, f"eval every must be positive, got {self.eval_every}"),
            (self.eval_episodes > 0, f"eval episodes must be positive, got {self.eval_episodes}"),
            (self.updates_per_episode > 0, "updates per episode must be positive"),
            (self.expl_noise >= 0 and self.ou_sigma >= 0, "exploration noise scales must be >= 0"),
            (self.ou_theta >= 0 and self.ou_dt > 0, "ou theta must be >= 0 and ou dt > 0"),
            (self.updates_per_call >= 1, "updates per call must be >= 1"),
            (self.updates_per_call == 1 or self.backend == "jax",
             "--updates-per-call > 1 needs --backend jax (it runs jax_td3.replay.multi_update)"),
            (self.updates_per_call <= self.buffer_size, "--updates-per-call must not exceed --buffer-size"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return self


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


class NonFiniteError(RuntimeError):
    """A NaN or infinity appeared in an observation, reward, loss or parameter; the message says where."""

    last_good_checkpoint: str | None = None  # set by run_training: the newest checkpoint it kept


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
    return GaussianNoise(tuple(settings.expl_noise * s for s in action_scale))


def config_for_env(algo: str, spec, **overrides):
    """The algorithm's config sized for the environment ``spec`` (obs/act dims, action box)."""
    from jax_td3.config import make_config

    return make_config(algo, obs_dim=spec.obs_dim, act_dim=spec.act_dim, action_low=spec.action_low,
                       action_high=spec.action_high, **overrides)


class Trainer:
    """All state of one training run, advanced one environment step at a time by ``step()``."""

    def __init__(self, config, settings: TrainSettings, env=None, eval_env=None):
        import jax

        from jax_td3.backends import enable_dtype, make_backend
        from jax_td3.buffer import ReplayBuffer
        from jax_td3.envs import env_spec, make_env
        from jax_td3.update import init_train_state

        self.settings = settings.validate()
        self.config = config
        enable_dtype(settings.dtype)
        self.dtype = np.dtype(settings.dtype)
        self.env = env if env is not None else make_env(settings.env)
        self.eval_env = eval_env if eval_env is not None else make_env(settings.env)
        self.spec = env_spec(self.env)
        if (config.obs_dim, config.act_dim) != (self.spec.obs_dim, self.spec.act_dim):
            raise UsageError(f"config is for obs/act dims {config.obs_dim}/{config.act_dim}, {self.spec.env_id} "
                             f"has {self.spec.obs_dim}/{self.spec.act_dim}")
        if config.batch_size > settings.buffer_size:
            raise UsageError(f"batch size {config.batch_size} is larger than the buffer size {settings.buffer_size}")
        self.low = np.asarray(self.spec.action_low, np.float64)
        self.high = np.asarray(self.spec.action_high, np.float64)
        self.env_action_dtype = self.env.action_space.dtype

        explore_seed, update_seed = np.random.SeedSequence(settings.seed).spawn(2)
        self.explore_rng = np.random.Generator(np.random.PCG64(explore_seed))
        self.update_rng = np.random.Generator(np.random.PCG64(update_seed))
        init_key, self.fast_key = jax.random.split(jax.random.PRNGKey(settings.seed))

        # One compiled init instead of dozens of eagerly compiled small ops.
        initial_state = jax.jit(init_train_state, static_argnums=(0, 2))(config, init_key, self.dtype)
        self.backend = make_backend(settings.backend, config, initial_state, settings.dtype)
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
        if self.env_steps < self.settings.warmup_steps:
            return self.explore_rng.uniform(self.low, self.high), True
        policy_action = self.backend.act(np.asarray(obs, self.dtype))
        noise, self.noise_state = self.noise.sample(self.noise_state, self.explore_rng)
        return np.clip(policy_action + noise, self.low, self.high), False

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

        record.updates = self._train(episode_ended)
        for metrics in record.updates:
            for name in ("critic_loss", "actor_loss"):
                if not math.isfinite(metrics[name]):
                    self._raise_nonfinite_update(name.replace("_", " "))
        if self.env_steps % settings.eval_every == 0 or self.done:
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

    def _train(self, episode_ended: bool) -> list[dict[str, float]]:
        settings = self.settings
        if len(self.buffer) <= settings.learning_starts:
            return []
        if settings.update_schedule == "episode":
            owed = settings.updates_per_episode if episode_ended else 0
        else:
            owed = 1
        if settings.updates_per_call == 1:
            return [self._update_once() for _ in range(owed)]
        self.pending_updates += owed
        if self.pending_updates >= settings.updates_per_call or (self.done and self.pending_updates):
            return self._update_fused()
        return []

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

    def _update_fused(self) -> list[dict[str, float]]:
        import jax

        if not self.backend.has_replay:
            # First use, or after a restore: the host ring as it is (slots, position, size), so
            # sampled indices mean the same as in a run that was never interrupted.
            self.backend.load_replay(self.buffer.state_dict())
        elif self.env_steps > self.device_synced:
            fresh = min(self.env_steps - self.device_synced, self.buffer.capacity)
            self.backend.sync_replay(self.buffer.last(fresh))
        self.device_synced = self.env_steps
        self.fast_key, key = jax.random.split(self.fast_key)
        metrics = self.backend.update_many(key, self.pending_updates)
        self.updates += self.pending_updates
        self.pending_updates = 0
        return metrics

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, episodes: int | None = None) -> dict:
        """Mean/std undiscounted return of the noiseless policy on the evaluation env."""
        returns = evaluate_policy(self.backend.act, self.eval_env, episodes or self.settings.eval_episodes,
                                  self.settings.seed + EVAL_SEED_OFFSET, self.dtype)
        if not np.all(np.isfinite(returns)):
            raise NonFiniteError(f"non-finite evaluation return {returns} at env step {self.env_steps}")
        self.last_evaluation = {"step": self.env_steps, "eval_return_mean": float(np.mean(returns)),
                                "eval_return_std": float(np.std(returns)), "eval_returns": returns}
        return self.last_evaluation

    # -- checkpointing -------------------------------------------------------------------
    def snapshot(self, include_buffer: bool = False) -> dict:
        """Everything needed to continue this run, as numpy arrays and plain values."""
        from jax_td3.checkpoint import pack_train_state

        return {
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

    def restore(self, snapshot: dict) -> None:
        """Load a ``snapshot()``: learner, counters, RNGs, noise, (if stored) the replay buffer, and
        the environment, rebuilt by replaying the current episode from its reset.

        Returns nothing; warns if the rebuilt observation differs from the saved one (an
        environment that is not deterministic given its RNG and actions).
        """
        import jax.numpy as jnp

        from jax_td3.checkpoint import unpack_train_state

        self.backend.load_state(unpack_train_state(self.config, self.settings.dtype, snapshot["train_state"]))
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
        obs = np.asarray(obs)
        if obs.shape != saved_obs.shape or not np.array_equal(obs, saved_obs):
            warnings.warn(f"{self.settings.env} did not replay to the saved state (max difference "
                          f"{np.max(np.abs(obs - saved_obs)) if obs.shape == saved_obs.shape else 'shape'}); "
                          "continuing from the replayed state, so the resumed run is not bit-exact", stacklevel=3)
        self.obs = obs

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def jax_key_data(key):
    import jax

    return jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def evaluate_policy(act, env, episodes: int, seed: int, dtype=np.float32) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes of ``act`` (obs -> action); the first reset uses ``seed``."""
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        total, finished = 0.0, False
        while not finished:
            action = np.clip(act(np.asarray(obs, dtype)), low, high)
            obs, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
            total += float(reward)
            finished = terminated or truncated
        returns.append(total)
    return returns


# -- running a whole training job: outputs, checkpoints, progress, signals -------------------

CONFIG_FLAGS = ("hidden", "critic_hidden", "batch_size", "gamma", "tau", "actor_lr", "critic_lr", "policy_noise",
                "noise_clip", "policy_freq", "adam_b1", "adam_b2", "adam_eps", "critic_weight_decay",
                "reward_scale", "init")
EPISODES_FILE = "episodes.csv"


def _mean(values) -> float | None:
    return float(np.mean(values)) if values else None


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (then it saves and exits)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def checkpoint_contents(trainer: Trainer, include_buffer: bool, loop: dict | None = None) -> tuple[dict, dict]:
    """(contents, metadata) of a checkpoint of ``trainer``; ``loop`` is run_training's own state."""
    from jax_td3 import __version__

    contents = {
        "config": {"algo": trainer.config.algo, "fields": dataclasses.asdict(trainer.config)},
        "settings": dataclasses.asdict(trainer.settings),
        "trainer": trainer.snapshot(include_buffer),
        "loop": loop or {},
    }
    metadata = {"backend": trainer.settings.backend, "dtype": trainer.settings.dtype,
                "algo": trainer.config.algo, "env": trainer.settings.env, "env_steps": trainer.env_steps,
                "jax_td3_version": __version__, "has_buffer": include_buffer}
    return contents, metadata


def config_from_checkpoint(contents: dict):
    from jax_td3.config import make_config

    return make_config(contents["config"]["algo"], **contents["config"]["fields"])


def _truncate_csv(path: Path, last_step: int, step_column: str = "step") -> None:
    """Drop rows logged after ``last_step`` (written after the checkpoint a run resumes from)."""
    import csv

    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    column = rows[0].index(step_column)
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[column])) <= last_step]
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)


def _stop_on_nonfinite(logger, out_dir: Path, trainer: Trainer, err: NonFiniteError):
    """Record why the run stopped (summary.json) and re-raise; no checkpoint of the bad state is written."""
    from jax_td3.checkpoint import list_checkpoints

    kept = list_checkpoints(out_dir)
    err.last_good_checkpoint = str(kept[-1]) if kept else None
    logger.write_summary({"stopped": str(err), "env_steps": trainer.env_steps, "updates": trainer.updates,
                          "last_checkpoint": err.last_good_checkpoint, "interrupted": True})
    logger.close()
    raise err


def run_training(trainer: Trainer, out_dir: str | Path, run_config: dict | None = None, *,
                 checkpoint_every: int | None = None, keep_checkpoints: int = 3, save_buffer: bool = True,
                 progress: bool = True, resume_loop: dict | None = None) -> dict:
    """Train ``trainer`` to its total steps, writing every output into ``out_dir``; returns the summary.

    Writes config.json, metrics.csv (one row per evaluation, the first at step 0),
    episodes.csv (one row per training episode), TensorBoard events, checkpoints
    (at every ``checkpoint_every`` steps, default every evaluation, and at the end),
    summary.json and learning_curve.png. SIGINT/SIGTERM stop after the current step
    with a checkpoint; the summary then says ``interrupted``.

    ``resume_loop`` (the ``loop`` part of a checkpoint, with ``trainer`` restored from the
    same checkpoint) continues a run: rows logged after the checkpoint are dropped and
    the rest of the run appends to the same files.

    A NaN or infinity (observation, reward, loss or parameter) raises ``NonFiniteError``
    without writing a checkpoint of the bad state, so the newest checkpoint is the last
    good one (``settings.skip_nonfinite`` drops bad transitions instead).
    """
    from tqdm import tqdm

    from jax_td3.checkpoint import save_checkpoint
    from jax_td3.logger import RunLogger

    settings = trainer.settings
    out_dir = Path(out_dir)
    run_config = run_config or {"algo": trainer.config.algo, "config": dataclasses.asdict(trainer.config),
                                "settings": dataclasses.asdict(settings)}
    resuming = resume_loop is not None
    episodes_path = out_dir / EPISODES_FILE
    if resuming:
        _truncate_csv(out_dir / "metrics.csv", trainer.env_steps)
        _truncate_csv(episodes_path, trainer.env_steps)
    logger = RunLogger(out_dir, run_config, append=resuming)
    checkpoint_every = checkpoint_every or settings.eval_every
    start = time.perf_counter()
    start_steps = trainer.env_steps
    # Losses since the last evaluation (averaged into its metrics row); checkpointed with the run.
    critic_losses: list[float] = list((resume_loop or {}).get("critic_losses", []))
    actor_losses: list[float] = list((resume_loop or {}).get("actor_losses", []))
    last_checkpoint = None

    def save() -> Path:
        trainer.check_parameters()  # never write a checkpoint of a broken state
        loop = {"critic_losses": list(critic_losses), "actor_losses": list(actor_losses)}
        contents, metadata = checkpoint_contents(trainer, save_buffer, loop)
        return save_checkpoint(out_dir, trainer.env_steps, contents, metadata, keep=keep_checkpoints)

    def log_evaluation(evaluation: dict) -> None:
        elapsed = time.perf_counter() - start
        logger.log_eval({
            "step": trainer.env_steps, "wall_time": round(elapsed, 3),
            "eval_return_mean": evaluation["eval_return_mean"], "eval_return_std": evaluation["eval_return_std"],
            "critic_loss": _mean(critic_losses), "actor_loss": _mean(actor_losses),
            "updates": trainer.updates, "episodes": trainer.episodes,
            "train_episode_return": trainer.episode_returns[-1] if trainer.episode_returns else None,
            "steps_per_second": round((trainer.env_steps - start_steps) / elapsed, 2) if elapsed > 0 else None,
        })
        critic_losses.clear()
        actor_losses.clear()

    with open(episodes_path, "a" if resuming else "w") as episodes_file, _StopSignals() as stop, \
            tqdm(total=settings.total_steps, initial=trainer.env_steps, unit="step", dynamic_ncols=True,
                 disable=not progress, mininterval=0.5) as bar:
        if episodes_file.tell() == 0:  # a new run, or one killed before its first episode was written
            episodes_file.write("episode,step,return,length\n")
            episodes_file.flush()
        postfix = {}
        try:
            if trainer.env_steps == 0:
                log_evaluation(trainer.evaluate())
            while not trainer.done and stop.received is None:
                record = trainer.step()
                for m in record.updates:
                    critic_losses.append(m["critic_loss"])
                    if m["actor_updated"]:
                        actor_losses.append(m["actor_loss"])
                if record.episode_return is not None:
                    episodes_file.write(f"{trainer.episodes},{record.step},{record.episode_return!r},"
                                        f"{record.episode_length}\n")
                    episodes_file.flush()
                    postfix["train_return"] = f"{record.episode_return:.1f}"
                    logger.log_scalars(record.step, {"train/episode_return": record.episode_return})
                if record.evaluation is not None:
                    log_evaluation(record.evaluation)
                    postfix["eval_return"] = f"{record.evaluation['eval_return_mean']:.1f}"
                if record.step % checkpoint_every == 0 and not trainer.done:
                    last_checkpoint = save()
                bar.update(1)
                if postfix and (record.episode_return is not None or record.evaluation is not None):
                    bar.set_postfix(postfix, refresh=False)
            last_checkpoint = save()
        except NonFiniteError as err:
            _stop_on_nonfinite(logger, out_dir, trainer, err)

    wall = time.perf_counter() - start
    evaluation = trainer.last_evaluation or {}
    returns = trainer.episode_returns
    summary = {
        "final_eval_return": evaluation.get("eval_return_mean"),
        "final_eval_return_std": evaluation.get("eval_return_std"),
        "final_eval_step": evaluation.get("step"),
        "env_steps": trainer.env_steps,
        "updates": trainer.updates,
        "episodes": trainer.episodes,
        "wall_seconds": round(wall, 3),
        "steps_per_second": round((trainer.env_steps - start_steps) / wall, 2) if wall > 0 else None,
        "last_50_episode_mean_return": _mean(returns[-50:]),
        "algo": trainer.config.algo, "env": settings.env, "backend": settings.backend,
        "dtype": settings.dtype, "seed": settings.seed,
        "interrupted": stop.received is not None,
        "last_checkpoint": str(last_checkpoint),
        "skipped_transitions": trainer.skipped_transitions,
        "resumed_from_step": start_steps if resuming else None,
    }
    logger.finish(summary)
    summary["signal"] = stop.received
    return summary


# -- the `jax-td3 train` command ---------------------------------------------------------

def add_arguments(parser) -> None:
    from jax_td3.backends import BACKENDS
    from jax_td3.cli import int_list
    from jax_td3.config import ALGOS
    from jax_td3.presets import DEFAULTS, PRESETS

    d = DEFAULTS
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=tuple(PRESETS), default=None,
                     help="start from a named setup (seed-t3d, seed-ddpg, fujimoto); explicit flags override it")
    run.add_argument("--algo", choices=ALGOS, default=None, help=f"algorithm (default {d['algo']})")
    run.add_argument("--backend", choices=BACKENDS, default=None, help=f"learner framework (default {d['backend']})")
    run.add_argument("--env", default=None, help=f"Gymnasium or PyBullet env id with a Box action space "
                                                 f"(default {d['env']})")
    run.add_argument("--total-steps", type=positive_int, default=None,
                     help=f"environment steps to train for (default {d['total_steps']:,})")
    run.add_argument("--seed", type=nonnegative_int, default=None, help=f"seed of everything (default {d['seed']})")
    run.add_argument("--out", default=None, help="output directory (default runs/ENV-ALGO-BACKEND-seedS)")
    run.add_argument("--dtype", choices=DTYPES, default=None, help=f"float precision (default {d['dtype']})")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--compiled", action="store_true",
                     help="run the whole loop compiled on the device (JAX-native environments only)")
    run.add_argument("--num-seeds", type=positive_int, default=None,
                     help="with --compiled: train this many seeds at once (vmapped)")

    net = parser.add_argument_group("networks and updates (defaults: the algorithm's, see REFERENCE.md)")
    net.add_argument("--hidden", type=int_list, default=None, help="actor hidden sizes, e.g. 256,256")
    net.add_argument("--critic-hidden", type=int_list, default=None,
                     help="critic hidden sizes (default: same as --hidden; seed-ddpg: 64,32)")
    net.add_argument("--batch-size", type=positive_int, default=None, help="minibatch size")
    net.add_argument("--gamma", type=float, default=None, help="discount factor in [0, 1]")
    net.add_argument("--tau", type=float, default=None, help="Polyak rate of the target networks, in (0, 1]")
    net.add_argument("--actor-lr", type=float, default=None, help="actor Adam learning rate")
    net.add_argument("--critic-lr", type=float, default=None, help="critic Adam learning rate")
    net.add_argument("--policy-noise", type=float, default=None,
                     help="TD3 target-policy noise std, in units of the action scale")
    net.add_argument("--noise-clip", type=float, default=None,
                     help="TD3 target-policy noise clip, in units of the action scale")
    net.add_argument("--policy-freq", type=positive_int, default=None,
                     help="actor and target updates every this many critic updates")
    net.add_argument("--adam-b1", type=float, default=None, help="Adam beta1")
    net.add_argument("--adam-b2", type=float, default=None, help="Adam beta2")
    net.add_argument("--adam-eps", type=float, default=None, help="Adam epsilon")
    net.add_argument("--critic-weight-decay", type=float, default=None,
                     help="L2 weight decay of the critic (PyTorch Adam style)")
    net.add_argument("--reward-scale", type=float, default=None, help="rewards are multiplied by this in the target")
    net.add_argument("--init", choices=("torch", "flax"), default=None, help="parameter initialisation")

    loop = parser.add_argument_group("training loop")
    loop.add_argument("--buffer-size", type=positive_int, default=None,
                      help=f"replay capacity (default {d['buffer_size']:,})")
    loop.add_argument("--learning-starts", type=nonnegative_int, default=None,
                      help=f"updates start once the buffer holds more than this many transitions "
                           f"(default {d['learning_starts']:,})")
    loop.add_argument("--random-steps", type=nonnegative_int, default=None,
                      help="uniformly random actions for this many first steps (default: --learning-starts)")
    loop.add_argument("--update-schedule", choices=SCHEDULES, default=None,
                      help="'step': one update per env step; 'episode': --updates-per-episode after each "
                           "episode (the DDPG notebook's)")
    loop.add_argument("--updates-per-episode", type=positive_int, default=None,
                      help=f"updates after each episode with --update-schedule episode "
                           f"(default {d['updates_per_episode']})")
    loop.add_argument("--updates-per-call", type=positive_int, default=None,
                      help="JAX backend: collect K steps, then K updates in one compiled call (statistically, "
                           "not bitwise, equal to K=1; K <= 100 measured to learn like K=1 and to be as fast as "
                           "larger K: benchmarks/results/compiled.md)")
    loop.add_argument("--exploration", choices=EXPLORATIONS, default=None,
                      help="exploration noise (default: ou for seed-ddpg, gaussian otherwise)")
    loop.add_argument("--expl-noise", type=float, default=None,
                      help=f"Gaussian exploration std, in units of the action scale (default {d['expl_noise']})")
    loop.add_argument("--ou-theta", type=float, default=None, help=f"OU mean reversion (default {d['ou_theta']})")
    loop.add_argument("--ou-sigma", type=float, default=None,
                      help=f"OU volatility, in action units (default {d['ou_sigma']})")
    loop.add_argument("--ou-mu", type=float, default=None, help=f"OU mean (default {d['ou_mu']})")
    loop.add_argument("--ou-dt", type=float, default=None, help=f"OU time step (default {d['ou_dt']})")
    loop.add_argument("--no-bootstrap-truncation", dest="bootstrap_truncation", action="store_const", const=False,
                      default=None, help="treat a time-limit truncation as terminal (the DDPG notebook's bug; "
                                         "default: bootstrap through truncation)")
    loop.add_argument("--eval-every", type=positive_int, default=None,
                      help=f"evaluate every this many env steps (default {d['eval_every']:,})")
    loop.add_argument("--eval-episodes", type=positive_int, default=None,
                      help=f"episodes per evaluation (default {d['eval_episodes']})")

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument("--checkpoint-every", type=positive_int, default=None,
                      help="checkpoint every this many env steps (default: at every evaluation); always at the end")
    ckpt.add_argument("--keep-checkpoints", type=positive_int, default=None,
                      help=f"keep the newest this many checkpoints (default {d['keep_checkpoints']})")
    ckpt.add_argument("--save-buffer", action=argparse.BooleanOptionalAction, default=None,
                      help="include the replay buffer in checkpoints (default: yes; exact --resume needs it; "
                           "it can be large: capacity x transition size)")
    ckpt.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its newest complete checkpoint (settings come from the "
                           "run; --total-steps may extend it)")
    loop.add_argument("--skip-nonfinite", action="store_const", const=True, default=None,
                      help="drop transitions with a NaN/inf observation or reward (counted in summary.json) "
                           "instead of stopping; non-finite losses or parameters always stop the run")


def resolve_args(args) -> tuple[str, dict, TrainSettings, dict]:
    """(algo, config overrides, loop settings, output options) from parsed flags and the preset."""
    from jax_td3.presets import resolve

    merged = resolve({k: v for k, v in vars(args).items() if k != "preset"}, args.preset)
    if merged["exploration"] is None:
        merged["exploration"] = "ou" if merged["algo"] == "seed-ddpg" else "gaussian"
    settings = TrainSettings(**{f.name: merged[f.name] for f in dataclasses.fields(TrainSettings)})
    overrides = {k: merged.get(k) for k in CONFIG_FLAGS}
    outputs = {k: merged[k] for k in ("checkpoint_every", "keep_checkpoints", "save_buffer")}
    outputs["out"] = merged.get("out") or (
        f"runs/{settings.env}-{merged['algo']}-{settings.backend}-seed{settings.seed}")
    return merged["algo"], overrides, settings.validate(), outputs


RUN_MARKERS = ("config.json", "metrics.csv", "checkpoints")


def holds_run(out_dir: Path) -> bool:
    return any((out_dir / name).exists() for name in RUN_MARKERS)


def _explicit_keys(args) -> set[str]:
    """Settings and config fields the command line sets (explicit flags and the preset's values)."""
    from jax_td3.presets import PRESETS

    given = {k for k, v in vars(args).items() if v is not None}
    return given | set(PRESETS.get(args.preset, {}))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return a is not None and b is not None and list(a) == list(b)
    return a == b


def resume_from_checkpoint(args, out: Path):
    """(config, settings, contents) of the newest complete checkpoint in ``out``, checked against the flags."""
    from jax_td3.checkpoint import latest_valid_checkpoint

    checkpoint = latest_valid_checkpoint(out)  # warns about and skips truncated or corrupted ones
    if checkpoint is None:
        raise UsageError(f"--resume: no complete checkpoint in {out / 'checkpoints'}")
    contents = checkpoint.contents
    config = config_from_checkpoint(contents)
    saved = dict(contents["settings"])
    saved_config = dict(contents["config"]["fields"])
    algo, overrides, settings, outputs = resolve_args(args)
    wanted = {**dataclasses.asdict(settings), **overrides, "algo": algo}
    saved_config["algo"] = contents["config"]["algo"]
    for key in sorted(_explicit_keys(args) & set(wanted) - {"total_steps", "skip_nonfinite"}):
        if key in saved or key in saved_config:
            have = saved[key] if key in saved else saved_config[key]
            if not _same(have, wanted[key]):
                raise UsageError(f"--resume: the run in {out} has {key.replace('_', '-')}={have}, the command "
                                 f"line asks for {wanted[key]}; drop the flag or start a new run")
    if "total_steps" in _explicit_keys(args):
        if settings.total_steps < checkpoint.metadata["env_steps"]:
            raise UsageError(f"--resume: --total-steps {settings.total_steps:,} is below the "
                             f"{checkpoint.metadata['env_steps']:,} steps already done")
        saved["total_steps"] = settings.total_steps
    saved["skip_nonfinite"] = settings.skip_nonfinite if "skip_nonfinite" in _explicit_keys(args) \
        else saved.get("skip_nonfinite", False)
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    return config, TrainSettings(**{k: v for k, v in saved.items() if k in known}), checkpoint, outputs


def run(args) -> int:
    if args.compiled:
        if args.resume:
            raise UsageError("--resume is for the Gymnasium loop; a compiled run is one program and restarts")
        try:
            from jax_td3.compiled import train_compiled_from_args
        except ImportError as err:
            raise UsageError(f"--compiled is not available in this installation ({err})") from None
        return int(train_compiled_from_args(args) or 0)
    if args.num_seeds not in (None, 1):
        raise UsageError("--num-seeds > 1 needs --compiled (the Gymnasium loop trains one seed per run)")

    from jax_td3.envs import env_spec, make_env

    algo, overrides, settings, outputs = resolve_args(args)
    out = Path(outputs["out"])
    checkpoint = None
    if args.resume:
        config, settings, checkpoint, outputs = resume_from_checkpoint(args, out)
        done_steps = int(checkpoint.metadata["env_steps"])
        if done_steps >= settings.total_steps:
            print(f"{out} already finished: its checkpoint {checkpoint.path.name} is at step {done_steps:,} of "
                  f"{settings.total_steps:,}; nothing to do (pass a larger --total-steps to extend it)")
            return 0
        env = make_env(settings.env)
        run_config = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
        run_config = {**run_config, "algo": config.algo, "config": dataclasses.asdict(config),
                      "settings": dataclasses.asdict(settings)}
    else:
        if holds_run(out):
            raise UsageError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        env = make_env(settings.env)
        config = config_for_env(algo, env_spec(env), **overrides)
        run_config = {"algo": algo, "preset": args.preset, "config": dataclasses.asdict(config),
                      "settings": dataclasses.asdict(settings), **outputs}
    trainer = Trainer(config, settings, env=env)
    if checkpoint is not None:
        if checkpoint.contents["trainer"].get("buffer") is None:
            import warnings
            warnings.warn("the checkpoint has no replay buffer (--no-save-buffer); the resumed run starts from an "
                          "empty buffer and is not exact", stacklevel=1)
        trainer.restore(checkpoint.contents["trainer"])
        print(f"resuming {out} from {checkpoint.path.name} (step {trainer.env_steps:,} of {settings.total_steps:,})")
    try:
        summary = run_training(trainer, out, run_config, checkpoint_every=outputs["checkpoint_every"],
                               keep_checkpoints=outputs["keep_checkpoints"], save_buffer=outputs["save_buffer"],
                               progress=not args.no_progress,
                               resume_loop=checkpoint.contents.get("loop", {}) if checkpoint is not None else None)
    except NonFiniteError as err:
        kept = err.last_good_checkpoint or "none written yet"
        print(f"error: {err}; training stopped, last good checkpoint: {kept}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    if summary["interrupted"]:
        print(f"interrupted at step {summary['env_steps']:,}; checkpoint saved: {summary['last_checkpoint']}")
    final = summary["final_eval_return"]
    print(f"final eval return {final:.1f} after {summary['env_steps']:,} steps, {summary['updates']:,} updates, "
          f"{summary['wall_seconds']:.0f} s" if final is not None else "no evaluation ran")
    print(f"learning curve: {out / 'learning_curve.png'}")
    print(f"metrics:        {out / 'metrics.csv'}")
    print(f"summary:        {out / 'summary.json'}")
    print(f"checkpoint:     {summary['last_checkpoint']}")
    if summary["interrupted"]:
        return 128 + int(summary["signal"])
    return 0
