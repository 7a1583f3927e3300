"""The host training loop over a Gymnasium environment, shared by both backends.

``Trainer`` owns the environments, the host replay buffer, every random number
(exploration noise, uniform warm-up actions, replay indices, target-policy noise)
and the counters; a backend (``jax_td3.backends``) only acts and updates. So the
same seed gives the same run with backend "jax" and "torch" (exactly so in float64).
``Trainer.step()`` advances one environment step and returns a ``StepRecord`` of
what happened, so two trainers can be run in lockstep and compared step by step. The loop is
written once for N environments stepped together; ``Trainer`` is its one-environment case, and
``loops.vector.VectorTrainer`` the same loop over a Gymnasium vector environment.

What it computes (docs/algorithms.md has the whole story): the exploration rules of
``loops.exploration`` (uniform actions for the first ``random_steps`` steps, default
``learning_starts``; then the actor's action plus Gaussian or Ornstein-Uhlenbeck noise,
clipped to the box). ``not_done`` is 0 only on termination (a time-limit truncation
bootstraps and stores the real final observation) unless ``bootstrap_truncation`` is
off. Updates (``loops.schedule``, every loop's rules) run once per step once more than
``learning_starts`` environment steps were taken (``update_schedule="step"``; steps whose transition
was dropped by ``skip_nonfinite`` count, so without dropped transitions this is the buffer holding
more than ``learning_starts``), or ``updates_per_episode`` times after each
episode (``"episode"``, the DDPG notebook's schedule; ``"steps"``: as many updates as the
episode had steps, the RL Baselines3 Zoo's PyBullet schedule). With ``time_feature`` both
environments append the fraction of the time limit left to their observations.
Evaluation runs the noiseless policy on separate environments, its episodes side by side with
one batched forward per step (``loops.evaluation``), from the start states that one environment
seeded with ``exploration.evaluation_seed(seed)`` would give episode after episode; every
evaluation replays the same start states, and the returns equal a sequential evaluation's.

FastTD3 (``--algo fasttd3``) runs in the same loop with three differences: before acting, every
environment's current observation goes to ``backend.observe`` (its observation normaliser, which acting,
evaluation and the update read); the replay is ``fasttd3.replay.NStepReplayBuffer`` (n-step returns
over each environment's episode, ``bootstrap_truncation`` as its bootstrap rule); and the exploration noise
is N(0, 1) x the environment's own scale x the action scale, the scales uniform in [``std_min``,
``std_max``) and redrawn for an environment whose episode ended (``fasttd3.replay.redraw_ended``; the state
kept in ``noise_state``). ``fasttd3_run_config`` sets its cosine learning rate's length to the run's updates
and refuses what it cannot run yet (fused updates).

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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, cast

import numpy as np

from jax_td3.backends.base import FusedBackend, require_fused
from jax_td3.errors import ConfigError, NonFiniteError
from jax_td3.loops import exploration, schedule
from jax_td3.loops.evaluation import BatchedEvaluator, evaluate_policy  # noqa: F401  (evaluate_policy: re-export)
from jax_td3.settings import TrainSettings

if TYPE_CHECKING:  # for annotations only
    import jax

    from jax_td3.config import TD3Config
    from jax_td3.envs import HostEnv
    from jax_td3.noise import GaussianNoise, OrnsteinUhlenbeckNoise


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
    ended_episodes: list[tuple[int, float, int]] = dataclasses.field(default_factory=list)
    """(environment index, return, length) of every episode that ended in the step, in index order."""


def first_nonfinite_leaf(tree: Any) -> str | None:
    """Path of the first parameter array holding a NaN or infinity, or None if all are finite."""
    import jax

    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not np.all(np.isfinite(np.asarray(leaf))):
            return jax.tree_util.keystr(path)
    return None


def env_rng_state(env: Any) -> dict | None:
    rng = getattr(env.unwrapped, "np_random", None)
    return rng.bit_generator.state if rng is not None else None


def make_noise(settings: TrainSettings, action_scale: Iterable[float],
               act_dim: int) -> GaussianNoise | OrnsteinUhlenbeckNoise:
    from jax_td3.noise import GaussianNoise, OrnsteinUhlenbeckNoise

    if settings.exploration == "ou":
        return OrnsteinUhlenbeckNoise(act_dim, theta=settings.ou_theta, sigma=settings.ou_sigma,
                                      mu=settings.ou_mu, dt=settings.ou_dt)
    return GaussianNoise(tuple(exploration.gaussian_std(settings.expl_noise, s) for s in action_scale))


def refuse_compiled_only(config: TD3Config, settings: TrainSettings) -> None:
    """ConfigError for what only the compiled loop runs: a ``replay_layout``, and for the TD3 family n-step
    returns, per-environment exploration scales and the observation normaliser (``loops.compiled``; fasttd3
    runs all three here)."""
    if settings.replay_layout is not None:
        raise ConfigError(f"`replay_layout` {settings.replay_layout} is the compiled loop's (`compiled`)")
    if config.algo == "fasttd3":
        return
    if config.n_step > 1:
        raise ConfigError(f"{config.algo} runs `n_step` > 1 in the compiled loop only (`compiled`)")
    if config.explore_scales:
        raise ConfigError(f"{config.algo} runs per-environment exploration scales (`std_min`, `std_max`) in the "
                          f"compiled loop only (`compiled`)")
    if config.obs_normalization:
        raise ConfigError(f"{config.algo} runs `obs_normalization` in the compiled loop only (`compiled`)")


def fasttd3_run_config(config: TD3Config, settings: TrainSettings, num_envs: int) -> TD3Config:
    """A FastTD3 config as the host loop runs it: what it cannot run yet refused in one line, and with a
    cosine learning rate (``actor_lr_end`` or ``critic_lr_end`` given) and no ``lr_schedule_updates``, the
    schedule's length set to the run's updates (``schedule.total_updates``)."""
    if settings.updates_per_call > 1:
        raise ConfigError("fasttd3 does not run `updates_per_call` > 1 yet (fused updates on a device replay are "
                          "TD3's); use 1")
    if settings.exploration != "gaussian":
        raise ConfigError(f"fasttd3 explores with per-environment noise scales (`std_min`, `std_max`), not "
                          f"`exploration` {settings.exploration}")
    n_step = getattr(config, "n_step")
    if settings.learning_starts < (n_step - 1) * num_envs:
        raise ConfigError(f"fasttd3 with `n_step` {n_step} needs `learning_starts` >= {(n_step - 1) * num_envs} "
                          f"((n_step - 1) x num_envs), so that the replay holds a finished transition when updates "
                          f"start")
    lr_ends = (getattr(config, "actor_lr_end"), getattr(config, "critic_lr_end"))
    if lr_ends == (None, None) or getattr(config, "lr_schedule_updates"):
        return config
    total = schedule.total_updates(settings, num_envs)
    if total is None:
        raise ConfigError("a cosine learning rate (`actor_lr_end`, `critic_lr_end`) with `update_schedule` episode "
                          "needs `lr_schedule_updates` (the episode schedule's updates are not known ahead)")
    return config.replace(lr_schedule_updates=max(total, 1))


class Trainer:
    """All state of one training run, advanced one environment step at a time by ``step()``.

    The loop itself, for any number N of environments stepped together: ``step()`` (acting, storing,
    episode ends, the updates owed by ``loops.schedule``, the evaluation due), ``snapshot()`` and
    ``restore()`` are written once here. ``Trainer`` is its one-environment case (N = 1 over one
    Gymnasium environment); ``loops.vector.VectorTrainer`` replaces only the environment side (the
    ``_step_envs``, ``_reset_ended``, ``_reset_env``, ``_rebuild_env`` hooks and the ``_per_env``/``_rows``
    views that give one environment's values as they are, not as rows of N)."""

    num_envs = 1

    def __init__(self, config: TD3Config, settings: TrainSettings, env: Any = None, eval_env: HostEnv | None = None):
        from jax_td3.backends import compile_many_ahead, initial_state_and_key, make_backend
        from jax_td3.buffer import ReplayBuffer
        from jax_td3.dtypes import float_dtype
        from jax_td3.envs import env_spec, make_env

        self.settings = settings.validate()
        refuse_compiled_only(config, settings)
        self.fasttd3 = config.algo == "fasttd3"
        if self.fasttd3:
            config = fasttd3_run_config(config, settings, self.num_envs)
        self.config = config
        if settings.update_schedule != "step" and settings.updates_per_step != 1:
            raise ConfigError("`updates_per_step` applies to `update_schedule` step; the episode schedule runs "
                              "`updates_per_episode` after each episode")
        self.update_fraction = schedule.update_fraction(settings.updates_per_step)
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
        for option in ("updates_per_call", "overlap"):
            if getattr(settings, option) not in (1, False):  # fused updates on a device replay
                require_fused(self.backend, option)
        if compiling is not None:
            self._fused.expect_compiled(compiling)
        n = self.num_envs
        self.buffer: Any
        if self.fasttd3:
            from jax_td3.fasttd3.replay import NStepReplayBuffer, draw_exploration_scales
            from jax_td3.noise import ScaledGaussianNoise

            self.buffer = NStepReplayBuffer(settings.buffer_size, self.spec.obs_dim, self.spec.act_dim, n,
                                            config.n_step, config.gamma,  # type: ignore[attr-defined]
                                            disable_bootstrap=not settings.bootstrap_truncation, dtype=self.dtype)
            self.noise: Any = ScaledGaussianNoise(tuple(self.spec.action_scale))
            # Each environment's exploration std (units of the action scale), redrawn when its episode ends.
            self.noise_state = draw_exploration_scales(self.explore_rng, n, *self.exploration_std_range)[:, None]
        else:
            self.buffer = ReplayBuffer(settings.buffer_size, self.spec.obs_dim, self.spec.act_dim, self.dtype)
            self.noise = make_noise(settings, self.spec.action_scale, self.spec.act_dim)
            self.noise_state = np.stack([np.asarray(self.noise.init(), np.float64)] * n)  # (N, 0) or (N, act_dim)

        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.running_return = np.zeros(n)              # each environment's current episode so far
        self.running_length = np.zeros(n, np.int64)
        self.pending_updates = 0      # fast mode: updates owed but not yet run
        self.device_synced = 0        # fast mode: env steps already copied to the device replay
        self.skipped_transitions = 0  # non-finite transitions dropped (skip_nonfinite)
        # overlap: fused blocks dispatched but not yet fetched, as (env step of dispatch, device metrics)
        self.inflight: list[tuple[int, dict]] = []
        self.episode_returns: list[float] = []
        self.last_evaluation: dict | None = None
        # An environment's internal state cannot be saved in general; a checkpoint instead keeps, for each
        # environment, how its current episode began (its RNG just before the reset) and the actions sent
        # since, and ``restore`` replays them. Deterministic environments then resume exactly.
        self.env_rng_at_reset: list[dict | None] = [None] * n   # None: the first, seeded reset
        self.episode_actions: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.obs = self._reset_env(first=True)
        self.env.action_space.seed(settings.seed)

    @property
    def exploration_std_range(self) -> tuple[float, float]:
        """fasttd3: (std_min, std_max) of the per-environment exploration scales."""
        low, high = self.config.std_min, self.config.std_max
        assert low is not None and high is not None   # FastTD3Config's are numbers
        return low, high

    @property
    def _fused(self) -> FusedBackend:
        """The backend as a ``FusedBackend``: only ``updates_per_call`` > 1 and ``overlap`` use the fused calls,
        and ``__init__`` made sure (``require_fused``) that the backend has them when either is set."""
        return cast(FusedBackend, self.backend)

    @property
    def done(self) -> bool:
        return self.env_steps >= self.settings.total_steps

    @property
    def episode_return(self) -> Any:
        """The current episode's return so far (``VectorTrainer``: an array over the environments)."""
        return self._per_env(self.running_return)

    @episode_return.setter
    def episode_return(self, value: Any) -> None:
        self.running_return[:] = value

    @property
    def episode_length(self) -> Any:
        """The current episode's steps so far (``VectorTrainer``: an array over the environments)."""
        return self._per_env(self.running_length)

    @episode_length.setter
    def episode_length(self, value: Any) -> None:
        self.running_length[:] = value

    # -- the environment side: one environment (VectorTrainer: a vector env) ----------------
    def _per_env(self, values: Any) -> Any:
        """A per-environment sequence of N values as the run shows and stores it: the one value here."""
        return values[0]

    def _rows(self, value: Any) -> np.ndarray:
        """``_per_env``'s inverse for arrays: the value of each environment as rows (N, ...)."""
        return np.asarray(value)[None]

    def start_new_episode(self) -> None:
        """Leave the current episode and start a new one from a reset; the reset is recorded, so a
        checkpoint of this trainer replays it."""
        self.episode_return, self.episode_length = 0.0, 0
        self.obs = self._reset_env()

    def _reset_env(self, first: bool = False) -> np.ndarray:
        if first:
            obs, _ = self.env.reset(seed=self.settings.seed)
        else:
            self.env_rng_at_reset[0] = env_rng_state(self.env)
            obs, _ = self.env.reset()
        self.episode_actions[0] = []
        self._check_finite("observation", obs, f"{self.settings.env}'s reset", skippable=False)
        return obs

    def _step_envs(self, env_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step each environment with its row of ``env_actions``: (next_obs, rewards, terminated, truncated),
        each with a leading axis of N (next_obs: the real final observation where an episode ended)."""
        next_obs, reward, terminated, truncated, _ = self.env.step(env_actions[0])
        return self._rows(next_obs), np.array([reward], np.float64), np.array([terminated], bool), \
            np.array([truncated], bool)

    def _reset_ended(self, ended: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """Reset the environments in ``ended`` (recording their RNG states first); the rows to go on from."""
        return self._rows(self._reset_env()) if ended[0] else next_obs

    def _record(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray, not_done: np.ndarray,
                was_random: np.ndarray) -> StepRecord:
        return StepRecord(self.env_steps, obs[0], actions[0], float(rewards[0]), next_obs[0], bool(terminated[0]),
                          bool(truncated[0]), float(not_done[0]), bool(was_random[0]))

    def _check_finite(self, what: str, value: Any, where: str, skippable: bool = True) -> bool:
        """False if ``value`` has a NaN/inf and non-finite transitions are skipped; raises otherwise."""
        if np.all(np.isfinite(value)):
            return True
        if self.settings.skip_nonfinite and skippable:
            return False
        raise NonFiniteError(f"non-finite {what} ({np.asarray(value).ravel()[:4]}) from {where} at env step "
                             f"{self.env_steps}")

    # -- one (vector) step -----------------------------------------------------------------
    def choose_actions(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions (N, act_dim), was_random (N,)) for observations (N, obs_dim): per environment, uniform in
        the box while its transition index is in the warm-up, else the policy's action (``backend.act``, for
        several environments one batched forward, ``act_batch``) plus noise, clipped. The random draws come
        from ``explore_rng`` environment by environment."""
        n = self.num_envs
        warm = np.array([exploration.in_warmup(self.env_steps + i, self.settings.warmup_steps) for i in range(n)])
        policy = None
        if not warm.all():
            obs = np.asarray(obs, self.dtype)
            policy = self.backend.act(obs[0])[None] if n == 1 else self.backend.act_batch(obs)
        actions = np.empty((n, self.spec.act_dim))
        for i in range(n):
            if warm[i]:
                actions[i] = exploration.warmup_action(self.explore_rng.random(self.low.shape), self.low, self.high)
            else:
                assert policy is not None  # computed above: not every environment is in the warm-up
                noise, self.noise_state[i] = self.noise.sample(self.noise_state[i], self.explore_rng)
                actions[i] = exploration.explore_action(np.clip, policy[i], noise, self.low, self.high)
        return actions, warm

    def step(self) -> StepRecord:
        """One step of every environment: act, store the transitions, end and reset the episodes that ended,
        run the updates owed and, when due, the evaluation."""
        settings, n = self.settings, self.num_envs
        obs = self._rows(self.obs)
        self.backend.observe(obs)   # fasttd3's normaliser sees every current observation before acting
        actions, was_random = self.choose_actions(obs)
        env_actions = actions.astype(self.env_action_dtype)
        next_obs, rewards, terminated, truncated = self._step_envs(env_actions)
        for i in range(n):
            self.episode_actions[i].append(env_actions[i])
        steps_before, self.env_steps = self.env_steps, self.env_steps + n
        ends_bootstrap = terminated | (truncated & (not settings.bootstrap_truncation))
        not_done = np.where(ends_bootstrap, 0.0, 1.0)
        ended = terminated | truncated
        where = f"{settings.env}'s step"
        kept = np.ones(n, bool)
        for i in range(n):
            obs_finite = self._check_finite("observation", next_obs[i], where)
            if obs_finite and self._check_finite("reward", rewards[i], where):
                if not self.fasttd3:
                    self.buffer.add(obs[i], actions[i], next_obs[i], float(rewards[i]), not_done[i])
                self.running_return[i] += float(rewards[i])
            else:
                self.skipped_transitions += 1
                kept[i] = False
            self.running_length[i] += 1
            ended[i] |= not obs_finite   # a non-finite observation cannot be continued from
        if self.fasttd3:   # all environments' step at once: the n-step windows (and their ends) are per environment
            self.buffer.add(obs, actions, rewards, next_obs, terminated, truncated, valid=kept)
        record = self._record(obs, actions, rewards, next_obs, terminated, truncated, not_done, was_random)

        ended_lengths = []
        for i in np.flatnonzero(ended).tolist():
            episode_return, length = float(self.running_return[i]), int(self.running_length[i])
            record.ended_episodes.append((int(i), episode_return, length))
            record.episode_return, record.episode_length = episode_return, length
            ended_lengths.append(length)
            self.episode_returns.append(episode_return)
            self.episodes += 1
            self.running_return[i], self.running_length[i] = 0.0, 0
        self.obs = self._per_env(self._reset_ended(ended, next_obs) if ended.any() else next_obs)
        if self.fasttd3:   # once every vector step (the generator advances alike whatever ended)
            from jax_td3.fasttd3.replay import redraw_ended

            self.noise_state = redraw_ended(self.noise_state[:, 0], ended, self.explore_rng,
                                            *self.exploration_std_range)[:, None]

        vector_step = steps_before // n
        record.updates = self._run_updates(schedule.owed_updates(settings, n, vector_step, ended_lengths,
                                                                 self.update_fraction))
        return self._finish_step(record, evaluating=schedule.evaluation_due(
            steps_before, self.env_steps, settings.eval_every, settings.total_steps))

    def _finish_step(self, record: StepRecord, evaluating: bool) -> StepRecord:
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

    def _raise_nonfinite_update(self, what: str) -> NoReturn:
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
        from jax_td3.backends import split_key

        if not self._fused.has_replay:
            # First use, or after a restore: the host ring as it is (slots, position, size), so
            # sampled indices mean the same as in a run that was never interrupted.
            self._fused.load_replay(self.buffer.state_dict())
        elif self.env_steps > self.device_synced:
            fresh = min(self.env_steps - self.device_synced, self.buffer.capacity)
            self._fused.sync_replay(self.buffer.last(fresh))
        self.device_synced = self.env_steps
        self.fast_key, key = split_key(self.fast_key)
        self.updates += num_updates
        self.pending_updates -= num_updates
        if not self.settings.overlap:
            return self._fused.update_many(key, num_updates)
        # Overlap: act with the actor from before this step's first block while its updates run, and
        # return the metrics of the blocks dispatched at earlier steps (they have had a block's time).
        if not any(step == self.env_steps for step, _ in self.inflight):
            self._fused.hold_acting_params()
        dispatched = self._fused.dispatch_many(key, num_updates)
        earlier = [metrics for step, metrics in self.inflight if step < self.env_steps]
        self.inflight = [entry for entry in self.inflight if entry[0] == self.env_steps]
        self.inflight.append((self.env_steps, dispatched))
        return [m for metrics in earlier for m in self._fused.fetch_metrics(metrics)]

    def settle_updates(self) -> list[dict[str, float]]:
        """Overlap: wait for the updates in flight and return their metrics; acting uses the current actor
        until the next block is dispatched. Call it before reading the policy (an evaluation); a no-op
        without ``overlap``."""
        if not self.settings.overlap:
            return []
        earlier, self.inflight = self.inflight, []
        self._fused.release_acting_params()
        return [m for _, metrics in earlier for m in self._fused.fetch_metrics(metrics)]

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
        """Everything needed to continue this run, as numpy arrays and plain values. Per-environment
        values (episode counters, RNG states at the reset, actions since, noise states, observations)
        as ``_per_env`` shows them: one environment's as they are, N environments' as lists or arrays."""
        from jax_td3.backends.base import pack_train_state

        act_dim = self.spec.act_dim
        return {
            **self._overlap_snapshot(),
            "train_state": pack_train_state(self.backend.state()),
            "counters": {"env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes,
                         "episode_return": self._per_env([float(x) for x in self.running_return]),
                         "episode_length": self._per_env([int(x) for x in self.running_length]),
                         "pending_updates": self.pending_updates, "skipped_transitions": self.skipped_transitions},
            "rng": {"explore": self.explore_rng.bit_generator.state, "update": self.update_rng.bit_generator.state,
                    "fast_key": np.asarray(jax_key_data(self.fast_key)),
                    "env_at_reset": self._per_env(list(self.env_rng_at_reset))},
            "episode_actions": self._per_env([np.asarray(actions, self.env_action_dtype).reshape(len(actions), act_dim)
                                              for actions in self.episode_actions]),
            "noise_state": np.asarray(self._per_env(self.noise_state)),
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
        acting = self._fused.acting_params()
        return {"acting_params": None if acting is None else pack_train_state(acting),
                "inflight": [{"step": step, **{k: np.asarray(v) for k, v in jax.device_get(m).items()}}
                             for step, m in self.inflight]}

    def restore(self, snapshot: dict) -> None:
        """Load a ``snapshot()`` of a run with as many environments: learner, counters, RNGs, noise, (if
        stored) the replay buffer, and the environments, rebuilt by replaying their current episodes from
        their resets.

        Returns nothing; warns if a rebuilt observation differs from the saved one (an
        environment that is not deterministic given its RNG and actions).
        """
        import jax.numpy as jnp

        from jax_td3.backends.base import unpack_train_state

        n = self.num_envs
        saved_envs = (snapshot.get("vector") or {}).get("num_envs", 1)
        if saved_envs != n:
            raise ConfigError(f"the checkpoint is of a run with num_envs {saved_envs}, not {n}")
        self.backend.load_state(unpack_train_state(self.config, self.settings.dtype, snapshot["train_state"]))
        self.inflight = []
        if self.settings.overlap:
            if snapshot.get("acting_params") is not None:
                self._fused.hold_acting_params(self._unpack_actor(snapshot["acting_params"]))
            self.inflight = [(int(entry["step"]), {k: np.asarray(v) for k, v in entry.items() if k != "step"})
                             for entry in snapshot.get("inflight", [])]
        counters = snapshot["counters"]
        self.env_steps, self.updates, self.episodes = (int(counters[k]) for k in ("env_steps", "updates", "episodes"))
        self.pending_updates = int(counters["pending_updates"])
        self.skipped_transitions = int(counters.get("skipped_transitions", 0))
        self.explore_rng.bit_generator.state = snapshot["rng"]["explore"]
        self.update_rng.bit_generator.state = snapshot["rng"]["update"]
        self.fast_key = jnp.asarray(snapshot["rng"]["fast_key"], jnp.uint32)
        self.noise_state = np.asarray(snapshot["noise_state"], np.float64).reshape(n, -1).copy()
        actions = snapshot.get("episode_actions")
        # Without the episodes' actions the environments start new episodes (``_rebuild_env`` zeroes these).
        self.running_return = np.asarray(counters["episode_return"], np.float64).reshape(n).copy()
        self.running_length = np.asarray(counters["episode_length"], np.int64).reshape(n).copy()
        self._rebuild_env(snapshot["rng"].get("env_at_reset"), actions, np.asarray(snapshot["obs"]))
        self.episode_returns = [float(r) for r in snapshot["episode_returns"]]
        self.last_evaluation = snapshot["last_evaluation"]
        if snapshot.get("buffer") is not None:
            self.buffer.load_state_dict(snapshot["buffer"])
        if isinstance(self.backend, FusedBackend):
            self.backend.drop_replay()  # rebuilt from the host buffer at the next fused call

    def _unpack_actor(self, arrays: dict[str, Any] | Iterable[Any]) -> Any:
        from jax_td3.backends.base import train_state_template, unpack_tree

        return unpack_tree(train_state_template(self.config).actor_params, arrays, self.settings.dtype,
                           what="checkpoint acting parameters", hint="the actor")

    def _rebuild_env(self, rng_at_reset: Any, actions: Any, saved_obs: np.ndarray) -> None:
        """Replay the current episode: a reset from the saved RNG state (the seeded one for the run's first
        episode), then the saved actions. ``rng_at_reset``, ``actions``: as ``snapshot`` stores them."""
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
        self.env_rng_at_reset = [rng_at_reset]
        self.episode_actions = [[]]
        for action in np.asarray(actions):
            obs, *_ = self.env.step(action)
            self.episode_actions[0].append(action)
        self.obs = self._replayed(np.asarray(obs), saved_obs)

    def _replayed(self, obs: np.ndarray, saved_obs: Any) -> np.ndarray:
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


def jax_key_data(key: jax.Array) -> jax.Array:
    import jax

    return jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
