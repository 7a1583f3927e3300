"""Algorithm configurations: one frozen dataclass per algorithm.

A config is a JAX pytree. Fields that fix the *shape* of the computation (sizes,
the action box, `policy_freq`) are static metadata; plain numbers (gamma, tau,
learning rates, noise scales) are leaves, so a config can be closed over as a
compile-time constant (``jax.jit(update, static_argnums=0)``) or passed through
``jax.vmap`` to sweep hyperparameters.

Class-level traits (``algo``, ``num_critics``, ``critic_arch`` ...) say what
distinguishes the four algorithms; the update in ``update.py`` reads them and is
otherwise shared. What each algorithm computes, and why these defaults, is in
docs/algorithms.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Protocol, TypeVar

import jax

from jax_td3.errors import ConfigError

TARGET_UPDATES = ("delayed", "every_update")
ACTOR_QS = ("q1", "min")
ConfigT = TypeVar("ConfigT", bound="TD3Config")


class EnvShape(Protocol):
    """What ``config_for_env`` reads of an environment's spec (``envs.base.EnvSpec`` has it)."""

    @property
    def obs_dim(self) -> int: ...
    @property
    def act_dim(self) -> int: ...
    @property
    def action_low(self) -> tuple[float, ...]: ...
    @property
    def action_high(self) -> tuple[float, ...]: ...


def static(default: Any, **kwargs: Any) -> Any:
    return dataclasses.field(default=default, metadata=dict(static=True), **kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TD3Config:
    """TD3 (Fujimoto et al. 2018). Every field has the reference default."""

    algo: ClassVar[str] = "td3"
    num_critics: ClassVar[int] = 2          # twin critics, min over them in the target
    target_policy_smoothing: ClassVar[bool] = True
    critic_arch: ClassVar[str] = "mlp"      # Linear(obs+act) - ... - Linear(1)
    critic_loss: ClassVar[str] = "mse"

    obs_dim: int = static(3)
    act_dim: int = static(1)
    action_low: tuple[float, ...] = static((-1.0,))
    action_high: tuple[float, ...] = static((1.0,))
    hidden: tuple[int, ...] = static((256, 256))
    """Actor hidden sizes."""
    critic_hidden: tuple[int, ...] | None = static(None)
    """Critic hidden sizes; None means the same as ``hidden``."""
    policy_freq: int = static(2)
    """Actor and target updates happen on every ``policy_freq``-th update (counter starts at 1)."""
    batch_size: int = static(256)
    init: str = static("torch")
    """Parameter init: "torch" (nn.Linear's U(+-1/sqrt(fan_in))) or "flax" (lecun normal, zero bias)."""

    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    """Std of target-policy noise, in units of the action scale (half the box width)."""
    noise_clip: float = 0.5
    """Clip of target-policy noise, in units of the action scale."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    critic_weight_decay: float = 0.0
    """L2 added to the critic gradient before Adam's moments (PyTorch Adam ``weight_decay``)."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before the target (seed-ddpg divides by 100)."""
    critic_loss_scale: float = 1.0
    """The critic loss (the sum over critics of each one's mean loss) is multiplied by this before
    the gradient. 1 is Fujimoto's; SBX's TD3 minimises half of it (0.5). With Adam it changes the
    step only through ``adam_eps`` (docs/algorithms.md)."""
    target_update: str = static("delayed")
    """When Polyak moves the target networks: "delayed" (Fujimoto's: on the actor's updates only, after
    the actor step) or "every_update" (SBX's: on every update, right after the critic step and before
    the delayed actor step, so the actor target follows the actor as it was before that update)."""
    actor_q: str = static("q1")
    """What the actor ascends: "q1" (Fujimoto's: the first critic) or "min" (SBX's: the minimum over the
    critics). With one critic the two are the same."""
    n_step: int = static(1)
    """Steps summed into each transition's return (FastTD3's num_steps); the replay computes them. The TD3
    family runs more than 1 in the compiled loop only, from its per-environment replay (docs/compiled.md)."""
    std_min: float | None = None
    """Lowest per-environment exploration noise std (units of the action scale). None (the TD3 family's
    default): one std for all environments, the loop's ``expl_noise``. Given with ``std_max`` (compiled loop
    only for the TD3 family), each environment explores with its own std, uniform in [std_min, std_max) and
    redrawn when its episode ends."""
    std_max: float | None = None
    """Highest per-environment exploration noise std (units of the action scale); see ``std_min``."""
    obs_normalization: bool = static(False)
    """Normalise the networks' observations with running statistics (FastTD3's ``EmpiricalNormalization``,
    ``fasttd3.normalizer``). The TD3 family (default off) runs it in the compiled loop only, which keeps the
    statistics beside the train state (``loops.compiled.AgentState.obs_normalizer``): its update is unchanged."""

    # -- derived -----------------------------------------------------------------------
    @property
    def actor_hidden(self) -> tuple[int, ...]:
        return self.hidden

    @property
    def critic_hidden_sizes(self) -> tuple[int, ...]:
        return self.hidden if self.critic_hidden is None else self.critic_hidden

    @property
    def action_scale(self) -> tuple[float, ...]:
        return tuple((high - low) / 2.0 for low, high in zip(self.action_low, self.action_high))

    @property
    def action_bias(self) -> tuple[float, ...]:
        return tuple((high + low) / 2.0 for low, high in zip(self.action_low, self.action_high))

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TD3Config":
        """Raise ConfigError with a one-line reason if any value is out of range."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{field.name} must be a finite number, got {value}")
        if self.obs_dim <= 0 or self.act_dim <= 0:
            raise ConfigError(f"obs_dim and act_dim must be positive, got {self.obs_dim}, {self.act_dim}")
        if len(self.action_low) != self.act_dim or len(self.action_high) != self.act_dim:
            raise ConfigError(
                f"action box has {len(self.action_low)}/{len(self.action_high)} bounds for act_dim {self.act_dim}")
        for lo, hi in zip(self.action_low, self.action_high):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"action box bounds must be finite with low < high, got [{lo}, {hi}]")
        for name, sizes in (("hidden", self.hidden), ("critic_hidden", self.critic_hidden_sizes)):
            if not sizes or any((not isinstance(h, int)) or h <= 0 for h in sizes):
                raise ConfigError(f"{name} must be positive integers, got {sizes}")
        if self.critic_arch in ("ddpg", "seed") and len(self.critic_hidden_sizes) != 2:
            raise ConfigError(f"{self.algo} critic needs exactly two hidden sizes, got {self.critic_hidden_sizes}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {self.tau}")
        if self.policy_freq < 1:
            raise ConfigError(f"policy_freq must be >= 1, got {self.policy_freq}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ConfigError("policy_noise and noise_clip must be >= 0")
        for name in ("actor_lr", "critic_lr", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("adam_b1", "adam_b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.critic_weight_decay < 0:
            raise ConfigError(f"critic_weight_decay must be >= 0, got {self.critic_weight_decay}")
        if self.init not in ("torch", "flax"):
            raise ConfigError(f"init must be 'torch' or 'flax', got {self.init!r}")
        if not self.critic_loss_scale > 0:
            raise ConfigError(f"critic_loss_scale must be > 0, got {self.critic_loss_scale}")
        if self.target_update not in TARGET_UPDATES:
            raise ConfigError(f"target_update must be one of {', '.join(TARGET_UPDATES)}, got {self.target_update!r}")
        if self.actor_q not in ACTOR_QS:
            raise ConfigError(f"actor_q must be one of {', '.join(ACTOR_QS)}, got {self.actor_q!r}")
        if self.n_step < 1:
            raise ConfigError(f"n_step must be >= 1, got {self.n_step}")
        if (self.std_min is None) != (self.std_max is None):
            raise ConfigError("std_min and std_max go together (per-environment exploration scales)")
        if self.std_min is not None and self.std_max is not None and not 0 <= self.std_min <= self.std_max:
            raise ConfigError(f"need 0 <= std_min <= std_max, got {self.std_min}, {self.std_max}")
        return self

    @property
    def explore_scales(self) -> bool:
        """Whether each environment explores with its own std (``std_min``, ``std_max``) instead of the loop's
        ``expl_noise``."""
        return self.std_min is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OurDDPGConfig(TD3Config):
    """Fujimoto's re-tuned DDPG: TD3's networks and rates, one critic, no target noise, no delay."""

    algo: ClassVar[str] = "ourddpg"
    num_critics: ClassVar[int] = 1
    target_policy_smoothing: ClassVar[bool] = False

    policy_freq: int = static(1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDPGConfig(TD3Config):
    """DDPG with Lillicrap et al.'s settings: action enters the critic's second layer, critic L2 1e-2."""

    algo: ClassVar[str] = "ddpg"
    num_critics: ClassVar[int] = 1
    target_policy_smoothing: ClassVar[bool] = False
    critic_arch: ClassVar[str] = "ddpg"

    hidden: tuple[int, ...] = static((400, 300))
    policy_freq: int = static(1)
    batch_size: int = static(64)
    tau: float = 0.001
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    critic_weight_decay: float = 1e-2


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedDDPGConfig(TD3Config):
    """The DDPG of the seed notebook (Pendulum): branch critic, Huber loss, rewards / 100."""

    algo: ClassVar[str] = "seed-ddpg"
    num_critics: ClassVar[int] = 1
    target_policy_smoothing: ClassVar[bool] = False
    critic_arch: ClassVar[str] = "seed"
    critic_loss: ClassVar[str] = "huber"

    action_low: tuple[float, ...] = static((-2.0,))
    action_high: tuple[float, ...] = static((2.0,))
    hidden: tuple[int, ...] = static((128, 64))
    critic_hidden: tuple[int, ...] | None = static((64, 32))
    """(branch width for state and action, width after concatenation)."""
    policy_freq: int = static(1)
    batch_size: int = static(32)
    actor_lr: float = 5e-4
    critic_lr: float = 1e-3
    adam_b2: float = 0.99
    reward_scale: float = 0.01


FASTTD3_SOURCE = ("FastTD3 (Seo et al. 2025), github.com/younggyoseo/FastTD3 at commit "
                  "229ed59bbf43ea2f7a2d5d90d1076314839944d7: fast_td3/hyperparams.py, BaseArgs")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FastTD3Config(TD3Config):
    """FastTD3 (Seo et al. 2025): TD3 with twin C51 distributional critics, n-step returns,
    observation normalisation, AdamW and per-environment exploration scales.

    Defaults are FastTD3's ``BaseArgs`` in ``fast_td3/hyperparams.py`` (repository
    younggyoseo/FastTD3, commit 229ed59bbf43ea2f7a2d5d90d1076314839944d7); the MuJoCo Playground
    overrides (``MuJoCoPlaygroundArgs``: support +-10, gamma 0.97) are a preset, not defaults.
    Inherited TD3 fields keep their meaning (``hidden`` is the actor's sizes, ``policy_freq`` is
    FastTD3's ``policy_frequency``, ``policy_noise``/``noise_clip`` are in units of the action scale,
    which is FastTD3's absolute scale on its [-1, 1] boxes); ``init``, ``critic_weight_decay``,
    ``target_update`` and ``actor_q`` do not apply and must keep their defaults. What the update
    computes is in docs/algorithms.md.
    """

    algo: ClassVar[str] = "fasttd3"
    num_critics: ClassVar[int] = 2
    target_policy_smoothing: ClassVar[bool] = True
    critic_arch: ClassVar[str] = "distributional"
    critic_loss: ClassVar[str] = "cross_entropy"

    hidden: tuple[int, ...] = static((512, 256, 128))
    """Actor hidden sizes (FastTD3: actor_hidden_dim 512, then //2 and //4)."""
    critic_hidden: tuple[int, ...] | None = static((1024, 512, 256))
    """Critic hidden sizes (FastTD3: critic_hidden_dim 1024, then //2 and //4)."""
    batch_size: int = static(32768)
    tau: float = 0.1
    policy_noise: float = 0.001
    num_atoms: int = static(101)
    """Atoms of each critic's categorical distribution over the support linspace(v_min, v_max, num_atoms)."""
    v_min: float = -250.0
    """Lowest value of the critics' support."""
    v_max: float = 250.0
    """Highest value of the critics' support."""
    use_cdq: bool = static(True)
    """Clipped double Q: both critics learn the projected target of the target critic whose expected
    value is lower (per sample), and the actor ascends the minimum of the two expected values. Off:
    each critic learns its own target's projection and the actor ascends their mean."""
    # n_step: TD3Config's (FastTD3's num_steps). FastTD3's ``disable_bootstrap`` is the loop's
    # ``bootstrap_truncation=False``, one setting for all algorithms.
    init_scale: float = 0.01
    """Std of the normal draw of the actor's output layer weights (its bias starts at zero)."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay, for both networks."""
    actor_lr_end: float | None = None
    """Actor learning rate at the end of the cosine schedule; None: constant (FastTD3's default)."""
    critic_lr_end: float | None = None
    """Critic learning rate at the end of the cosine schedule; None: constant."""
    lr_schedule_updates: int = static(0)
    """Updates over which the cosine schedule runs (the loop sets it from the run's length); 0: none."""
    max_grad_norm: float = 0.0
    """Clip each network's gradient to this global norm before AdamW; 0 (the default): no clipping."""
    obs_normalization: bool = static(True)
    """Normalise actor and critic inputs with running statistics held in the train state."""
    critic_layer_norm: bool = static(False)
    """LayerNorm after each critic hidden layer, before its ReLU (FastTD3 suggests trying it on DM Control)."""
    bfloat16_matmuls: bool = static(False)
    """Compute the networks' matrix products in bfloat16 (parameters and losses stay in the state's dtype)."""
    std_min: float = 0.001
    """Lowest per-environment exploration noise std (units of the action scale)."""
    std_max: float = 0.4
    """Highest per-environment exploration noise std (units of the action scale)."""

    def validate(self) -> "FastTD3Config":
        super().validate()
        defaults = TD3Config()
        for name, why in (("init", "its networks use PyTorch's initialisation"),
                          ("critic_weight_decay", "AdamW's weight_decay decays both networks"),
                          ("target_update", "its critic target moves on every update and it has no actor target"),
                          ("actor_q", "use_cdq chooses what the actor ascends")):
            if getattr(self, name) != getattr(defaults, name):
                raise ConfigError(f"fasttd3 does not use {name} ({why})")
        if self.num_atoms < 2:
            raise ConfigError(f"num_atoms must be >= 2, got {self.num_atoms}")
        if not self.v_min < self.v_max:
            raise ConfigError(f"v_min must be < v_max, got {self.v_min} >= {self.v_max}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.init_scale < 0:
            raise ConfigError("weight_decay, max_grad_norm and init_scale must be >= 0")
        if self.std_min is None:
            raise ConfigError("fasttd3 explores with per-environment scales: std_min and std_max must be numbers")
        for name in ("actor_lr_end", "critic_lr_end"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.lr_schedule_updates < 0:
            raise ConfigError(f"lr_schedule_updates must be >= 0, got {self.lr_schedule_updates}")
        return self


CONFIGS: dict[str, type[TD3Config]] = {
    c.algo: c for c in (TD3Config, OurDDPGConfig, DDPGConfig, SeedDDPGConfig, FastTD3Config)
}
ALGOS = tuple(CONFIGS)

for _cls in CONFIGS.values():
    jax.tree_util.register_dataclass(_cls)


def make_config(algo: str, **overrides: Any) -> TD3Config:
    """The config of ``algo`` with its defaults, then ``overrides`` (None values are ignored).

    ``max_action`` is accepted as a shorthand for the symmetric box [-max_action, max_action].
    """
    if algo not in CONFIGS:
        raise ConfigError(f"unknown algo {algo!r}; choose from {', '.join(ALGOS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cls = CONFIGS[algo]
    act_dim = overrides.get("act_dim", cls().act_dim)
    max_action = overrides.pop("max_action", None)
    if max_action is not None:
        overrides["action_low"] = (-float(max_action),) * act_dim
        overrides["action_high"] = (float(max_action),) * act_dim
    else:
        default = cls()
        for key in ("action_low", "action_high"):
            if key not in overrides and len(getattr(default, key)) != act_dim:
                # A default box of the wrong length is broadcast from its first entry.
                overrides[key] = (getattr(default, key)[0],) * act_dim
    for key in ("action_low", "action_high", "hidden", "critic_hidden"):
        if key in overrides and overrides[key] is not None:
            overrides[key] = tuple(overrides[key])
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        owners = sorted({other for other, c in CONFIGS.items() if unknown & {f.name for f in dataclasses.fields(c)}})
        elsewhere = f" ({', '.join(owners)} only)" if owners else ""
        names = ", ".join(f"`{name}`" for name in sorted(unknown))
        raise ConfigError(f"{algo} has no setting {names}{elsewhere}")
    return cls(**overrides).validate()


def config_for_env(algo: str, spec: EnvShape, **overrides: Any) -> TD3Config:
    """The config of ``algo`` sized for an environment's ``EnvSpec`` (dimensions and action box)."""
    return make_config(algo, obs_dim=spec.obs_dim, act_dim=spec.act_dim, action_low=spec.action_low,
                       action_high=spec.action_high, **overrides)
