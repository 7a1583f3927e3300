"""Stable-Baselines3's TD3 (PyTorch) as a parity adapter: SB3's own ``TD3.train`` on its own networks
and optimizers, fed our batches and our target-policy noise.

``td3`` maps to SB3's ``TD3``, ``ourddpg`` to SB3's ``DDPG`` (its TD3 with ``policy_delay=1``, one
critic and the target noise clipped to 0). Needs the ``thirdparty`` extra (``stable-baselines3``); written
against SB3 2.9.2.

Seams (the only places where this adapter reaches into SB3's update; everything else is SB3's code):

- **batch**: ``model.replay_buffer.sample`` is replaced (on this model's buffer instance only) by a
  function returning SB3's ``ReplayBufferSamples`` built from our batch. SB3 stores ``dones`` where
  Fujimoto stores ``not_done``: we pass ``dones = 1 - not_done`` and SB3 computes
  ``(1 - dones)`` (td3/td3.py:184); with ``not_done`` in {0, 1} both are exact. ``discounts`` is
  ``None``, so SB3 uses ``self.gamma`` (td3/td3.py:173), as the reference does.
- **target noise**: SB3 draws ``replay_data.actions.clone().data.normal_(0, self.target_policy_noise)``
  (td3/td3.py:177). During ``train`` only, ``torch.Tensor.normal_`` is replaced by a function that
  accepts exactly one call, on a tensor of the batch's action shape with mean 0 and std
  ``target_policy_noise``, and fills it with ``our_standard_normal * std`` (what ``normal_``'s
  ``mean + std * z`` gives with mean 0). Any other call raises, so a changed SB3 that draws elsewhere
  is caught rather than silently fed. The previous ``normal_`` is restored afterwards.
  Like the ``F`` wrapper and the float64 ``preprocess_obs`` below, it replaces a process-wide name, so
  it is installed for one update and removed after it under ``SEAMS_LOCK``: adapters updating in two
  threads take turns instead of feeding each other's noise.
- **observation, not recomputation**: forward hooks on SB3's modules and step pre-hooks on its two
  Adam optimizers read what SB3 computes: the input of ``critic_target`` (the smoothed target
  action), the outputs of ``critic`` (current Q), the gradients just before each ``optimizer.step``,
  and Q1 of the actor step (``critic.qf0`` called after the critic step). ``target_q`` is the second
  argument of SB3's ``F.mse_loss`` calls (td3/td3.py:190), read through a wrapper on the ``F``
  name of SB3's td3 module during ``train``. Losses come from SB3's logger (``train/critic_loss``,
  ``train/actor_loss``, td3/td3.py:218-219): with one gradient step they are ``np.mean`` of one
  ``loss.item()``, i.e. the loss itself.
- **float64 observations** (``dtype="float64"`` only): SB3 casts every Box observation to float32
  before its networks: ``preprocess_obs`` returns ``obs.float()`` (common/preprocessing.py:120),
  called by name from ``BaseModel.extract_features`` (common/policies.py:130). For a float64
  comparison the model's policy is converted with ``.double()`` (the same ``Parameter`` objects, so
  its two Adams keep them; their moments are loaded as float64) and, during ``train`` only, the name
  ``preprocess_obs`` in ``stable_baselines3.common.policies`` is a function that accepts only a
  float64 tensor with this model's Box observation space (no image normalisation) and returns it
  unchanged: the Box branch of SB3's function with float64 where SB3 writes float32. It must be
  called exactly 3 times on a critic-only update (target actor, target critics, critics) and 5 on an
  actor update (plus the actor and ``q1_forward``); anything else raises. The previous function is
  restored afterwards.

Semantics (SB3 2.9.2, ``stable_baselines3/td3/td3.py``):

- counter: ``_n_updates += 1`` before the step (line 169) and the actor steps when
  ``_n_updates % policy_delay == 0`` (line 200). Ours: the actor steps on update ``step + 1`` when
  ``(step + 1) % policy_freq == 0``. So SB3's ``_n_updates`` is our ``step``.
- actions: SB3 policies act in [-1, 1] and the algorithm rescales to the env's box; the replay
  buffer, the critics and the target clamp (``.clamp(-1, 1)``, line 179) all work in [-1, 1] units,
  and ``target_policy_noise``/``target_noise_clip`` are in those units. Our batches hold actions in
  the env's box and our critics take them unscaled, so the two parameterisations coincide only for
  the box [-1, 1]; any other box is refused.
- one ``learning_rate`` for both optimizers (reset from the schedule at every ``train``, line 165),
  and one ``optimizer_kwargs`` (so a weight decay would hit the actor too): different actor and
  critic learning rates and a critic weight decay are refused; there is no reward scale.
- precision: SB3 is written for float32 (see the float64 seam above); everything else in its update
  follows the dtype of its parameters and of the batch (the noise is drawn into a clone of the
  batch's actions, the discount is a Python float).
- Fujimoto's update only: ``critic_loss_scale`` other than 1, ``target_update="every_update"`` and
  (td3) ``actor_q="min"`` are SBX's variants, which SB3 does not have; they are refused.
- Polyak: ``polyak_update`` (common/utils.py) does ``target.mul_(1 - tau); target.add_(param,
  alpha=tau)``; the reference does ``tau * param + (1 - tau) * target``: the same value, rounded in a
  different order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import DTypeLike

from jax_td3.adapters.base import NETWORKS, NeutralState, quantity_names
from jax_td3.adapters.torch_ref import load_modules, modules_state, torch_dtype
from jax_td3.config import TD3Config
from jax_td3.dtypes import dtype_named
from jax_td3.errors import ConfigError

SB3_VERSION = "2.9.2"
# Held while an update has its process-wide seams installed (Tensor.normal_, td3.F, preprocess_obs).
SEAMS_LOCK = threading.Lock()


def _refuse(config: TD3Config) -> None:
    """Raise ConfigError for what SB3's TD3 cannot express."""
    if config.algo not in ("td3", "ourddpg"):
        raise ConfigError(f"`algo` {config.algo!r} is not supported by the SB3 adapter (td3, ourddpg)")
    if config.algo == "ourddpg" and config.policy_freq != 1:
        raise ConfigError("`policy_freq` must be 1 for SB3's DDPG (it fixes policy_delay=1)")
    if config.actor_lr != config.critic_lr:
        raise ConfigError("`actor_lr` and `critic_lr` must be equal for SB3 (its TD3 takes one learning_rate)")
    if config.critic_weight_decay != 0:
        raise ConfigError("`critic_weight_decay` must be 0 for SB3 (its optimizer_kwargs apply to actor and critic)")
    if config.reward_scale != 1:
        raise ConfigError("`reward_scale` must be 1 for SB3 (its TD3 has no reward scale)")
    if any(lo != -1.0 for lo in config.action_low) or any(hi != 1.0 for hi in config.action_high):
        raise ConfigError("`action_low`/`action_high` must be -1/1 for SB3 (its critics and target clamp work in "
                          "[-1, 1] units)")
    if config.critic_loss_scale != 1:
        raise ConfigError("`critic_loss_scale` must be 1 for SB3 (its critic loss is the sum of the MSEs)")
    if config.target_update != "delayed":
        raise ConfigError("`target_update` must be delayed for SB3 (it moves the targets after the delayed actor "
                          "step)")
    if config.algo == "td3" and config.actor_q != "q1":
        raise ConfigError("`actor_q` must be q1 for SB3 (its actor ascends the first critic)")


def dummy_env(config: TD3Config) -> Any:
    import gymnasium as gym

    class _BoxEnv(gym.Env):
        """A never-stepped env that only carries the spaces SB3 builds its networks from."""

        def __init__(self) -> None:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (config.obs_dim,), np.float32)
            self.action_space = gym.spaces.Box(np.asarray(config.action_low, np.float32),
                                               np.asarray(config.action_high, np.float32), dtype=np.float32)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            super().reset(seed=seed)
            return np.zeros(config.obs_dim, np.float32), {}

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
            return np.zeros(config.obs_dim, np.float32), 0.0, False, False, {}

    return _BoxEnv()


def _refuse_dtype(dtype: DTypeLike) -> None:
    if np.dtype(dtype).name not in ("float32", "float64"):
        raise ConfigError(f"`dtype` {np.dtype(dtype).name} is not supported by the SB3 adapter (float32, float64)")


def make_model(config: TD3Config, dtype: DTypeLike = "float32") -> Any:
    """SB3's TD3 for ``config`` on CPU; float64 converts its policy with ``.double()`` (and needs the
    observation seam of ``SB3Adapter`` during ``train``: see the module docstring)."""
    from stable_baselines3 import DDPG, TD3

    _refuse(config)
    _refuse_dtype(dtype)
    policy_kwargs = dict(net_arch=dict(pi=list(config.actor_hidden), qf=list(config.critic_hidden_sizes)),
                         optimizer_kwargs=dict(betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps))
    common = dict(learning_rate=config.actor_lr, buffer_size=config.batch_size, learning_starts=0,
                  batch_size=config.batch_size, tau=config.tau, gamma=config.gamma, policy_kwargs=policy_kwargs,
                  device="cpu", seed=0)
    if config.algo == "ourddpg":
        # SB3's DDPG is its TD3 with policy_delay=1, one critic, and target noise clipped to 0
        # (ddpg/ddpg.py:107-115: policy_delay=1, target_noise_clip=0.0, target_policy_noise=0.1,
        # n_critics=1): the target action is
        # actor_target(s') + (+-0), clamped to [-1, 1] where tanh already is.
        model = DDPG("MlpPolicy", dummy_env(config), **common)
    else:
        model = TD3("MlpPolicy", dummy_env(config), policy_delay=config.policy_freq,
                    target_policy_noise=config.policy_noise, target_noise_clip=config.noise_clip, **common)
    if np.dtype(dtype).name == "float64":
        model.policy.double()   # in place: the optimizers keep the same Parameter objects
    from stable_baselines3.common.logger import Logger
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


# -- layout: neutral names <-> SB3 modules ------------------------------------------------

def _layer_map(model: Any, network: str) -> dict[str, torch.Tensor]:
    """Neutral tensor name -> SB3 parameter, for one of the four networks."""
    policy = model.policy
    out = {}
    if network in ("actor", "actor_target"):
        linears = [m for m in getattr(policy, network).mu if isinstance(m, torch.nn.Linear)]
    else:
        critic = getattr(policy, network)
        linears = [m for q in critic.q_networks for m in q if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(linears, start=1):
        out[f"l{i}.weight"], out[f"l{i}.bias"] = layer.weight, layer.bias
    return out


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().copy()


def _model_layout(model: Any) -> tuple[dict, dict]:
    params = {network: _layer_map(model, network) for network in NETWORKS}
    return params, {network: getattr(model.policy, network).optimizer for network in ("actor", "critic")}


def model_state(model: Any) -> NeutralState:
    """The neutral state of an SB3 TD3/DDPG model (copies); the update counter is its ``_n_updates``."""
    return modules_state(*_model_layout(model), model._n_updates, library="SB3")


def load_model(model: Any, state: NeutralState) -> None:
    load_modules(*_model_layout(model), state, library="SB3")
    model._n_updates = int(state["step"])


# -- the adapter -------------------------------------------------------------------------

class _MseSpy:
    """Stands in for ``torch.nn.functional`` in SB3's td3 module during ``train``: records the target
    of each ``mse_loss`` call and otherwise forwards to the real module."""

    def __init__(self, functional: Any, record: list) -> None:
        self._f, self._record = functional, record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def mse_loss(self, input: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._record.append(target.detach().clone())
        return self._f.mse_loss(input, target, *args, **kwargs)


class SB3Adapter:
    """Stable-Baselines3's TD3 behind the adapter interface of ``adapters.base`` (see the module
    docstring for the seams and the semantic differences)."""

    name = "sb3"

    def __init__(self, config: TD3Config, dtype: DTypeLike = "float32"):
        _refuse_dtype(dtype)
        self.config = config
        self.dtype = dtype_named(dtype)
        self.torch_dtype = torch_dtype(self.dtype)
        self.model = make_model(config, self.dtype)
        self._batch: tuple[torch.Tensor, ...] | None = None
        self.model.replay_buffer.sample = self._sample   # instance attribute: this buffer only
        self.quantities = quantity_names(list(_layer_map(self.model, "actor")), list(_layer_map(self.model, "critic")))

    def load(self, state: NeutralState) -> None:
        load_model(self.model, state)

    def state(self) -> NeutralState:
        return model_state(self.model)

    def _sample(self, batch_size: int, env: Any = None) -> Any:
        from stable_baselines3.common.type_aliases import ReplayBufferSamples

        if self._batch is None:
            raise RuntimeError("SB3 sampled its replay buffer outside SB3Adapter.update")
        obs, action, next_obs, reward, not_done = self._batch
        self._batch = None   # exactly one sample per update
        if batch_size != obs.shape[0]:
            raise RuntimeError(f"SB3 asked for a batch of {batch_size}, the update has {obs.shape[0]}")
        return ReplayBufferSamples(observations=obs, actions=action, next_observations=next_obs,
                                   dones=1 - not_done, rewards=reward)

    def _tensor(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(np.array(x), dtype=self.torch_dtype)

    @contextlib.contextmanager
    def _float64_observations(self, actor_update: bool) -> Iterator[None]:
        """During ``train``: SB3's ``preprocess_obs`` keeps float64 Box observations in float64 (see the
        module docstring); exactly the expected number of calls, else RuntimeError."""
        import stable_baselines3.common.policies as policies_module

        if self.dtype != np.float64:
            yield
            return
        from gymnasium import spaces

        original = policies_module.preprocess_obs
        space = self.model.observation_space
        calls: list[int] = []

        def preprocess_obs(obs: Any, observation_space: Any, normalize_images: bool = True) -> torch.Tensor:
            if (observation_space is not space or not isinstance(observation_space, spaces.Box)
                    or not isinstance(obs, torch.Tensor) or obs.dtype != torch.float64):
                raise RuntimeError("SB3 preprocessed an observation the float64 seam does not expect "
                                   f"({type(obs).__name__} {getattr(obs, 'dtype', '')}, {observation_space})")
            calls.append(1)
            return obs

        policies_module.preprocess_obs = preprocess_obs
        try:
            yield
        finally:
            policies_module.preprocess_obs = original
        expected = 5 if actor_update else 3
        if len(calls) != expected:
            raise RuntimeError(f"SB3 preprocessed observations {len(calls)} times in one update where the float64 "
                               f"seam expects {expected}")

    @contextlib.contextmanager
    def _shared_noise(self, noise: torch.Tensor) -> Iterator[list[int]]:
        original = torch.Tensor.normal_
        calls: list[int] = []
        std_expected = self.model.target_policy_noise

        def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
            if calls or tuple(tensor.shape) != tuple(noise.shape) or mean != 0 or std != std_expected:
                raise RuntimeError(f"SB3 drew normal_ (shape {tuple(tensor.shape)}, mean {mean}, std {std}) "
                                   "where the adapter expected exactly one target-noise draw")
            calls.append(1)
            with torch.no_grad():
                tensor.copy_(noise * std)
            return tensor

        torch.Tensor.normal_ = normal_  # type: ignore[method-assign, assignment]  # the seam, undone below
        try:
            yield calls
        finally:
            torch.Tensor.normal_ = original  # type: ignore[method-assign]  # the seam undone
        if not calls:
            raise RuntimeError("SB3 did not draw its target noise through Tensor.normal_")

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        import stable_baselines3.td3.td3 as td3_module

        model, policy = self.model, self.model.policy
        self._batch = tuple(self._tensor(x) for x in batch)
        noise = self._tensor(target_noise)
        seen: dict = {"critic_calls": 0}
        targets: list = []

        def on_target_critic(module: torch.nn.Module, args: tuple) -> None:
            seen["target_action"] = _numpy(args[1])

        def on_critic(module: torch.nn.Module, args: tuple, output: Any) -> None:
            seen["current_q"] = np.stack([_numpy(q) for q in output])

        def on_q1(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            if seen.get("critic_stepped"):          # the actor step's Q1(s, mu(s))
                seen["actor_q"] = _numpy(output)

        def grads(key: str, params: dict[str, torch.Tensor]) -> Callable[..., None]:
            def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
                # A step follows a backward pass: every parameter has its gradient.
                seen[key] = {name: _numpy(p.grad) for name, p in params.items()}  # type: ignore[arg-type]
                if key == "critic_grad":
                    seen["critic_stepped"] = True
            return hook

        handles = [policy.critic_target.register_forward_pre_hook(on_target_critic),
                   policy.critic.register_forward_hook(on_critic),
                   policy.critic.q_networks[0].register_forward_hook(on_q1),
                   policy.critic.optimizer.register_step_pre_hook(grads("critic_grad", _layer_map(model, "critic"))),
                   policy.actor.optimizer.register_step_pre_hook(grads("actor_grad", _layer_map(model, "actor")))]
        model.logger.name_to_value.clear()
        try:
            with SEAMS_LOCK:   # the seams replace process-wide functions for this one update
                original_f = td3_module.F
                td3_module.F = _MseSpy(original_f, targets)
                try:
                    actor_update = (model._n_updates + 1) % model.policy_delay == 0   # SB3's test, td3/td3.py:169,200
                    with self._shared_noise(noise), self._float64_observations(actor_update):
                        model.train(gradient_steps=1, batch_size=self.config.batch_size)
                finally:
                    td3_module.F = original_f
        finally:
            for h in handles:
                h.remove()
            self._batch = None

        logged = model.logger.name_to_value
        actor_updated = "train/actor_loss" in logged
        dtype = self.dtype
        out: dict[str, Any] = {"critic_loss": np.asarray(logged["train/critic_loss"], dtype=dtype)}
        for key in ("target_action", "current_q"):
            if key in seen:
                out[key] = seen[key]
        if targets:
            out["target_q"] = _numpy(targets[0])
        out.update({f"critic_grad.{n}": g for n, g in seen.get("critic_grad", {}).items()})
        if actor_updated:
            out["actor_loss"] = np.asarray(logged["train/actor_loss"], dtype=dtype)
            if "actor_q" in seen:
                out["actor_q"] = seen["actor_q"]
            out.update({f"actor_grad.{n}": g for n, g in seen.get("actor_grad", {}).items()})
        out.update(model_state(model))
        out["actor_updated"] = actor_updated
        return out


__all__ = ["SB3Adapter", "SB3_VERSION", "SEAMS_LOCK", "dummy_env", "load_model", "make_model", "model_state"]
