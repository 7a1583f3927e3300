"""The training loop's settings: everything about a run that is not the algorithm's config.

``TrainSettings`` is what the host (Gymnasium) loop runs with, and what a checkpoint
stores; ``OutputSettings`` is how a run writes its outputs. Their field defaults are the one
place loop defaults are stated: ``presets.DEFAULTS`` is derived from them, and the compiled
loop's settings are derived from a ``TrainSettings`` (``loops.compiled.compiled_settings``).
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Any

from jax_td3.dtypes import DTYPES
from jax_td3.errors import ConfigError

SCHEDULES = ("step", "episode")
EXPLORATIONS = ("gaussian", "ou")
BACKENDS = ("jax", "torch")
VECTOR_MODES = ("sync", "async")
REPLAY_LAYOUTS = ("flat", "per_env")
# Seeds must be 0 <= seed < SEED_LIMIT: jax.random.PRNGKey/key take uint32-range seeds, NumPy's
# SeedSequence any int >= 0, and the compiled loop holds seeds as int32 and adds offsets to them
# (agent i of a multi-seed run gets seed + i; evaluation environments seed + EVAL_SEED_OFFSET = 100),
# so the limit leaves 1000 of headroom below 2**31. Larger seeds raised OverflowError deep inside.
SEED_LIMIT = 2 ** 31 - 1000


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Settings of one training run. The defaults suit a short TD3 run on Pendulum-v1 (the quick-start
    job); presets set larger tasks up."""

    env: str = "Pendulum-v1"
    """Gymnasium or PyBullet id with a Box action space."""
    total_steps: int = 15_000
    """Environment steps to train for."""
    seed: int = 0
    """Seed of everything: weights, environments, exploration, replay sampling, target noise."""
    backend: str = "jax"
    """The learner's framework: "jax" (the jitted update) or "torch" (the PyTorch reference)."""
    dtype: str = "float32"
    buffer_size: int = 1_000_000
    """Replay capacity in transitions over all ``num_envs`` environments. The compiled loop's per-environment
    replay (``replay_layout``) keeps one ring of ``buffer_size // num_envs`` one-step transitions per environment
    (FastTD3's own buffer size counts per environment: ours is that times ``num_envs``)."""
    learning_starts: int = 1_000
    """Updates start once the buffer holds more than this many transitions."""
    random_steps: int | None = None
    """Uniformly random actions for this many first steps; None: ``learning_starts``."""
    update_schedule: str = "step"
    """"step": one update per environment step; "episode": ``updates_per_episode`` after each episode."""
    updates_per_episode: int | str = 10
    """Updates after each episode with the "episode" schedule: a number, or "steps" for as many as the
    episode had steps."""
    exploration: str = "gaussian"
    """"gaussian" or "ou" (Ornstein-Uhlenbeck); ``presets.resolve`` picks "ou" for seed-ddpg."""
    expl_noise: float = 0.1
    """Std of Gaussian exploration noise, in units of the action scale."""
    ou_theta: float = 0.1
    ou_sigma: float = 0.1
    ou_mu: float = 0.0
    ou_dt: float = 0.01
    bootstrap_truncation: bool = True
    """A time-limit truncation bootstraps (not_done = 1); False treats it as terminal."""
    time_feature: bool = False
    """Append the fraction of the time limit left to each observation (``envs.gymnasium.with_time_feature``)."""
    eval_every: int = 1_000
    eval_episodes: int = 10
    updates_per_call: int = 1
    """JAX backend: collect this many steps, then run as many updates in one compiled call."""
    overlap: bool = False
    """With ``updates_per_call`` > 1: step the environments while the device runs the last block's updates,
    acting with the actor from before that block (one block stale); its metrics arrive one block later."""
    skip_nonfinite: bool = False
    """Drop transitions with a NaN/inf observation or reward instead of stopping the run."""
    num_envs: int = 1
    """Environments stepped together; each vector step writes this many transitions. ``total_steps``,
    ``eval_every``, ``learning_starts``, ``random_steps`` and ``checkpoint_every`` count transitions over all
    of them. Gymnasium loop: a Gymnasium vector environment (``vector_mode``, ``loops.vector``); compiled
    loop: vmapped environments per agent."""
    updates_per_step: float = 1.0
    """Updates per vector step with the "step" schedule; fractional values are spread evenly by an exact
    fraction rule (``loops.schedule``), e.g. 2 with ``num_envs`` 2 is one update per transition."""
    vector_mode: str = "sync"
    """Gymnasium loop with ``num_envs`` > 1: "sync" steps the environments one after another in this
    process, "async" each in its own subprocess (in parallel)."""
    replay_layout: str | None = None
    """Compiled loop: "flat" (one ring of transitions over all environments, what TD3 keeps by default) or
    "per_env" (one ring of ``buffer_size // num_envs`` one-step transitions per environment, n-step returns
    assembled when a batch is sampled: what fasttd3 keeps, and what the TD3 family needs for ``n_step`` > 1).
    None: the algorithm's own (per_env for fasttd3 or ``n_step`` > 1, else flat)."""
    chunk_steps: int | None = None
    """Compiled loop: env steps per compiled call (a checkpoint and stop point); None: ``eval_every``."""
    brax_backend: str = "spring"
    """Brax's physics backend for ``brax:NAME`` environments."""
    playground_impl: str = "auto"
    """MuJoCo Playground's physics for ``playground:NAME`` environments: "jax" (MJX), "warp" (MuJoCo Warp,
    NVIDIA GPUs) or "auto" ("jax" when JAX sees no NVIDIA GPU, else the task's default)."""

    @property
    def warmup_steps(self) -> int:
        return self.learning_starts if self.random_steps is None else self.random_steps

    def replace(self, **changes: Any) -> "TrainSettings":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrainSettings":
        """Raise ConfigError naming the first setting that is out of range or conflicts with another."""
        for name in ("expl_noise", "ou_theta", "ou_sigma", "ou_mu", "ou_dt"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"`{name}` must be a finite number, got {getattr(self, name)}")
        checks = [
            (self.backend in BACKENDS, f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}"),
            (self.dtype in DTYPES, f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}"),
            (self.update_schedule in SCHEDULES, f"update schedule must be one of {', '.join(SCHEDULES)}"),
            (self.exploration in EXPLORATIONS, f"exploration must be one of {', '.join(EXPLORATIONS)}"),
            (self.total_steps > 0, f"total steps must be positive, got {self.total_steps}"),
            (0 <= self.seed < SEED_LIMIT, f"`seed` must be in [0, 2**31 - 1000), got {self.seed}"),
            (self.buffer_size > 0, f"buffer size must be positive, got {self.buffer_size}"),
            (self.learning_starts >= 0, "learning starts must be >= 0"),
            (self.warmup_steps >= 0, "random steps must be >= 0"),
            (self.eval_every > 0, f"eval every must be positive, got {self.eval_every}"),
            (self.eval_episodes > 0, f"eval episodes must be positive, got {self.eval_episodes}"),
            (self.updates_per_episode == "steps" or (isinstance(self.updates_per_episode, int)
                                                     and self.updates_per_episode > 0),
             f"`updates_per_episode` must be a positive number or 'steps', got {self.updates_per_episode!r}"),
            (self.expl_noise >= 0 and self.ou_sigma >= 0, "exploration noise scales must be >= 0"),
            (self.ou_theta >= 0 and self.ou_dt > 0, "ou theta must be >= 0 and ou dt > 0"),
            (self.updates_per_call >= 1, "updates per call must be >= 1"),
            (self.updates_per_call == 1 or self.backend == "jax",
             "`updates_per_call` > 1 needs `backend` jax (it runs jax_td3.replay.multi_update)"),
            (not self.overlap or (self.backend == "jax" and self.updates_per_call > 1),
             "`overlap` needs `backend` jax and `updates_per_call` > 1 (it overlaps acting with a fused block)"),
            (self.updates_per_call <= self.buffer_size, "`updates_per_call` must not exceed `buffer_size`"),
            (isinstance(self.num_envs, int) and self.num_envs >= 1, f"`num_envs` must be >= 1, got {self.num_envs}"),
            (math.isfinite(self.updates_per_step) and self.updates_per_step > 0,
             f"`updates_per_step` must be a positive number, got {self.updates_per_step}"),
            (self.chunk_steps is None or self.chunk_steps >= 1, f"`chunk_steps` must be >= 1, got {self.chunk_steps}"),
            (self.replay_layout in (None, *REPLAY_LAYOUTS),
             f"`replay_layout` must be one of {', '.join(REPLAY_LAYOUTS)}, got {self.replay_layout!r}"),
            (self.vector_mode in VECTOR_MODES,
             f"`vector_mode` must be one of {', '.join(VECTOR_MODES)}, got {self.vector_mode!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        update_fraction(self.updates_per_step)  # a ratio of small whole numbers (ConfigError otherwise)
        return self


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    """How a run writes its outputs (not part of what it computes)."""

    checkpoint_every: int | None = None
    """Checkpoint every this many steps; None: at every evaluation."""
    keep_checkpoints: int = 3
    save_buffer: bool = True
    """Checkpoints hold the replay buffer (exact resume needs it)."""


def update_fraction(updates_per_step: object) -> tuple[int, int]:
    """``updates_per_step`` as an exact fraction (p, q) with q <= 1000; ConfigError if it is none
    (the schedule's rule, ``loops.schedule``, runs on it)."""
    u = updates_per_step
    if not (isinstance(u, (int, float)) and math.isfinite(u) and u > 0):
        raise ConfigError(f"`updates_per_step` must be a positive number, got {u}")
    fraction = fractions.Fraction(u).limit_denominator(1000)
    if abs(float(fraction) - u) > 1e-9 * u or fraction.numerator * fraction.denominator >= 2 ** 30:
        raise ConfigError(f"`updates_per_step` {u} must be a ratio of small whole numbers (such as 0.25, "
                          f"1.5 or 2)")
    return fraction.numerator, fraction.denominator


def settings_from_values(values: dict) -> TrainSettings:
    """TrainSettings from a dict that may hold other keys (a merged preset, a checkpoint's settings)."""
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in values.items() if k in known})
