"""SBX's TD3 (Stable-Baselines3 in JAX, PyPI ``sbx-rl``) as a parity adapter: SBX's own ``TD3.train`` and
its ``_train`` / ``update_critic`` / ``update_actor`` / ``soft_update`` on its own Flax networks and optax
Adam states, fed our batches and our target-policy noise.

``td3`` maps to SBX's ``TD3``, ``ourddpg`` to SBX's ``DDPG`` (its TD3 with ``policy_delay=1``, one critic
and the target noise clipped to 0, sbx/ddpg/ddpg.py:55-57, 70-71). Needs the ``thirdparty`` extra
(``sbx-rl``); written against sbx-rl 0.28.0 (jax 0.10.2, flax 0.12.8, optax 0.2.8). Paths below are in
``sbx/td3/td3.py`` unless named.

Seams (the only places where this adapter reaches into SBX's update; everything else is SBX's code):

- **batch**: ``model.replay_buffer.sample`` is replaced (on this model's buffer instance only) by a
  function returning SB3's ``ReplayBufferSamples`` built from our batch; SBX's ``train`` samples
  ``batch_size * gradient_steps`` rows (line 131; we run ``gradient_steps=1``) and converts them to
  NumPy itself (lines 136-158). ``dones = 1 - not_done``: SBX computes ``(1 - dones)`` (line 214),
  exact for ``not_done`` in {0, 1}. ``discounts`` (SBX's n-step field, lines 144-148) is ``gamma`` in
  the comparison's dtype; without it SBX fills a float32 ``gamma`` (line 145), the same numbers in a
  float32 comparison and a rounded discount in a float64 one.
- **target noise**: SBX draws ``jax.random.normal(noise_key, actions.shape) * target_policy_noise``
  inside the jitted ``update_critic`` (line 200). ``train`` calls ``self._train(...)`` (line 165), an
  attribute lookup: this model's instance gets a ``_train`` that runs SBX's own ``_train`` body
  (``TD3._train.__wrapped__``, the function under its ``jax.jit``, line 268-355) inside one
  ``jax.jit`` of ours that takes the noise as an argument. While that jit traces, the name ``jax`` in
  SBX's td3 module is a proxy that forwards everything except ``random.normal``, which must be called
  exactly once, on a PRNG key with the batch's action shape, and returns our standard normal (SBX
  then multiplies by ``target_policy_noise`` and clips, lines 200-202, as the reference does with
  ``policy_noise * action_scale`` on the box [-1, 1]). Anything else raises. The proxy is removed when
  the trace ends; the compiled function keeps the noise as an input. ``_train`` calls
  ``cls.update_critic`` / ``cls.update_actor`` / ``cls.soft_update`` (lines 313, 326, 331): we pass as
  ``cls`` a subclass whose three methods are SBX's own bodies (their ``__wrapped__``), not their
  ``jax.jit`` wrappers, because a nested jit would cache a trace holding our noise tracer (and would
  then serve it to any later SBX model in the process). Checked (``tests/test_sbx_parity.py``): fed
  the normal SBX draws from its key (the key chain reproduced), the adapter reproduces SBX's unpatched
  jitted ``train`` bit for bit, weights, targets, Adam moments, losses and key, td3 and ddpg. (With a
  noise scale other than 1, SBX's compiled ``normal(k) * 0.2`` can round one or two ulps away from a
  separately drawn normal times 0.2: XLA folds the scale into the sampler; that is not the seam.)
- **observation**: losses come from SBX's logger (``train/critic_loss``, ``train/actor_loss``,
  lines 179-180). Intermediate values (target action, target Q, current Q, gradients, actor Q) live
  inside SBX's ``fori_loop`` body and ``value_and_grad`` (lines 296-348, 216-221) and are not
  returned: they are not reported.

Semantics (differences from Fujimoto's TD3.py; each is a setting of ours, ``SBX_SETTINGS``, under
which ``JaxAdapter`` computes SBX's update; ``jax-td3 parity --their-settings`` applies them):

- critic loss: ``0.5 * ((target_q - current_q) ** 2).mean(axis=1).sum()`` (line 219), half the sum
  of the two MSEs (``critic_loss_scale=0.5``). ``critic_loss`` is reported as SBX's value, the loss it
  minimises. Under our default (1) SBX's critic gradients are half of ours, so ``critic_adam_m`` is
  half and ``critic_adam_v`` a quarter of ours on a fresh state, and the Adam step
  ``m / (sqrt(v) + eps)`` differs only through ``eps``.
- targets: ``soft_update`` runs on *every* update, right after the critic step and *before* the
  delayed actor step (line 326, outside the ``jax.lax.cond`` of line 328)
  (``target_update="every_update"``). Fujimoto updates both targets only on the delayed updates,
  after the actor step.
- actor loss: ``-min(Q1, Q2)(s, mu(s)).mean()`` over all critics (lines 249-251) (``actor_q="min"``);
  Fujimoto uses Q1.
- counter: the actor steps when ``(_n_updates + 1 + i) % policy_delay == 0`` (lines 170, 329) with
  ``i = 0``: the same schedule as ours; ``_n_updates`` is our ``step``.
- actions: SBX acts in [-1, 1] like SB3 (its target clip ``jnp.clip(..., -1, 1)``, line 202), so only
  the box [-1, 1] is accepted. One ``optimizer_kwargs`` for both optimizers (td3/policies.py:94-97,
  120-123): a critic weight decay is refused; the learning rates are separate (``learning_rate``
  for the actor, ``qf_learning_rate`` for the critic). No reward scale.
- precision: SBX builds float32 params (Flax's default ``param_dtype``) and runs in JAX's default
  32-bit mode. A float32 comparison does exactly that (x64 off around every SBX call, because with x64
  on, float32 params meet float64 Python literals and the branches of its ``lax.cond``, line 328,
  disagree in dtype). A float64 comparison holds SBX's parameters, targets and Adam moments as float64
  arrays (loaded through the neutral state; its own initialisation is re-loaded as float64) and runs
  SBX's update with x64 on, so its literals and carried losses are float64 too; nothing of SBX's is
  rounded to float32 (its discount comes through ``discounts``, above). SBX's code is unchanged: its
  Flax modules compute in the dtype of their parameters and inputs.
- Polyak: ``optax.incremental_update(new, old, tau)`` (line 262): ``new * tau + old * (1 - tau)``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from jax_td3.adapters import ADAPTER_SETTINGS
from jax_td3.adapters.base import NETWORKS, NeutralState, quantity_names, tensor_names
from jax_td3.config import TD3Config
from jax_td3.dtypes import dtype_named
from jax_td3.errors import ConfigError, ConversionError

SBX_VERSION = "0.28.0"


# The config settings under which our update is SBX's (its TD3 and DDPG): each one removes one of the
# semantic differences listed in the module docstring. ``jax-td3 parity --their-settings`` applies them.
SBX_SETTINGS = ADAPTER_SETTINGS["sbx"]


def _refuse(config: TD3Config) -> None:
    """Raise ConfigError for what SBX's TD3 cannot express."""
    if config.algo not in ("td3", "ourddpg"):
        raise ConfigError(f"`algo` {config.algo!r} is not supported by the SBX adapter (td3, ourddpg)")
    if config.algo == "ourddpg" and config.policy_freq != 1:
        raise ConfigError("`policy_freq` must be 1 for SBX's DDPG (it fixes policy_delay=1)")
    if config.critic_weight_decay != 0:
        raise ConfigError("`critic_weight_decay` must be 0 for SBX (its optimizer_kwargs apply to actor and critic)")
    if config.reward_scale != 1:
        raise ConfigError("`reward_scale` must be 1 for SBX (its TD3 has no reward scale)")
    if any(lo != -1.0 for lo in config.action_low) or any(hi != 1.0 for hi in config.action_high):
        raise ConfigError("`action_low`/`action_high` must be -1/1 for SBX (its actor and target clip work in "
                          "[-1, 1] units)")
    if config.critic_arch != "mlp":
        raise ConfigError("`algo` with an MLP critic (td3, ourddpg) is the only critic SBX's TD3/DDPG builds")


def _refuse_dtype(dtype: DTypeLike) -> None:
    if np.dtype(dtype).name not in ("float32", "float64"):
        raise ConfigError(f"`dtype` {np.dtype(dtype).name} is not supported by the SBX adapter (float32, float64)")


def _dummy_env(config: TD3Config) -> Any:
    from jax_td3.adapters.sb3 import dummy_env as sb3_env  # the same never-stepped Box env
    return sb3_env(config)


def make_model(config: TD3Config, dtype: DTypeLike = "float32") -> Any:
    """SBX's TD3 (td3) or DDPG (ourddpg) for ``config``, built as SBX builds it (float32 parameters; a
    float64 comparison loads float64 ones: see the module docstring). Call with JAX's 64-bit mode off."""
    from sbx import DDPG, TD3

    _refuse(config)
    _refuse_dtype(dtype)
    policy_kwargs = dict(net_arch=dict(pi=list(config.actor_hidden), qf=list(config.critic_hidden_sizes)),
                         optimizer_kwargs=dict(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps))
    common = {"learning_rate": config.actor_lr, "qf_learning_rate": config.critic_lr,
              "buffer_size": config.batch_size, "learning_starts": 0, "batch_size": config.batch_size,
              "tau": config.tau, "gamma": config.gamma, "policy_kwargs": policy_kwargs, "device": "cpu", "seed": 0}
    if config.algo == "ourddpg":
        # SBX's DDPG is its TD3 with policy_delay=1, one critic, target noise clipped to 0
        # (sbx/ddpg/ddpg.py:55-57, 70-71): the target action is actor_target(s') + (+-0), clipped to [-1, 1].
        model = DDPG("MlpPolicy", _dummy_env(config), **common)
    else:
        model = TD3("MlpPolicy", _dummy_env(config), policy_delay=config.policy_freq,
                    target_policy_noise=config.policy_noise, target_noise_clip=config.noise_clip, **common)
    from stable_baselines3.common.logger import Logger
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


# -- layout: neutral names <-> SBX's Flax trees --------------------------------------------
#
# actor: {"params": {"Dense_0": {"kernel" (in, out), "bias"}, ...}}: Dense_i is neutral l{i+1}, transposed.
# critic: {"params": {"VmapContinuousCritic_0": {"Dense_i": {"kernel" (2, in, out), "bias" (2, out)}}}}
# (nn.vmap over the critics, sbx/common/policies.py:191-205): slice c of Dense_i is neutral l{i+1+c*n}.
# Adam: optax.adam's state (ScaleByAdamState(count, mu, nu), EmptyState()); mu/nu shaped like params.

_CRITIC_SCOPE = "VmapContinuousCritic_0"
_FIELDS = {"actor": ("actor_state", "params"), "critic": ("qf_state", "params"),
           "actor_target": ("actor_state", "target_params"), "critic_target": ("qf_state", "target_params")}


def _dense_layers(tree: dict[str, Any]) -> list[str]:
    names = [k for k in tree if re.fullmatch(r"Dense_\d+", k)]
    if len(names) != len(tree):
        raise ConversionError(f"SBX tree has unexpected modules {sorted(set(tree) - set(names))}")
    return sorted(names, key=lambda k: int(k.split("_")[1]))


def _layout(network: str, tree: Any) -> list[tuple[str, tuple[str, str, int | None], bool]]:
    """``(neutral name, (path..., leaf, critic index or None), transpose)`` for a params-like tree."""
    out: list[tuple[str, tuple[str, str, int | None], bool]] = []
    if network == "actor":
        for i, layer in enumerate(_dense_layers(tree["params"]), start=1):
            out += [(f"l{i}.weight", (layer, "kernel", None), True), (f"l{i}.bias", (layer, "bias", None), False)]
        return out
    layers = _dense_layers(tree["params"][_CRITIC_SCOPE])
    n_critics = np.shape(tree["params"][_CRITIC_SCOPE][layers[0]]["bias"])[0]
    for c in range(n_critics):
        for i, layer in enumerate(layers, start=1):
            number = i + c * len(layers)
            out += [(f"l{number}.weight", (layer, "kernel", c), True), (f"l{number}.bias", (layer, "bias", c), False)]
    return out


def _leaves(network: str, tree: Any) -> dict[str, Any]:
    return tree["params"] if network == "actor" else tree["params"][_CRITIC_SCOPE]


def _tensors(network: str, tree: Any) -> dict[str, np.ndarray]:
    layers = _leaves(network, tree)
    out = {}
    for name, (layer, leaf, c), transpose in _layout(network, tree):
        x = np.asarray(layers[layer][leaf])
        x = x if c is None else x[c]
        out[name] = np.array(x.T if transpose else x)
    return out


def _fill(network: str, template: Any, fam: str, state: NeutralState) -> dict[str, Any]:
    """A tree shaped like ``template`` (same containers) holding ``state``'s ``fam`` entries."""
    import jax.numpy as jnp

    pairs = _layout(network, template)
    expected, have = {n for n, _, _ in pairs}, set(tensor_names(state, fam))
    if expected != have:
        raise ConversionError(f"{fam}: parameter names differ: missing in the state {sorted(expected - have)}, "
                              f"extra in the state {sorted(have - expected)}")
    layers = {layer: {leaf: np.array(v) for leaf, v in leaves.items()}
              for layer, leaves in _leaves(network, template).items()}
    for name, (layer, leaf, c), transpose in pairs:
        given = np.asarray(state[f"{fam}.{name}"])
        value = given.T if transpose else given
        shape = layers[layer][leaf].shape if c is None else layers[layer][leaf].shape[1:]
        if value.shape != shape:
            raise ConversionError(f"{fam}.{name}: shape {given.shape} does not match SBX {shape} (transposed)")
        if c is None:
            layers[layer][leaf] = value.copy()
        else:
            layers[layer][leaf] = layers[layer][leaf].astype(value.dtype)
            layers[layer][leaf][c] = value
    built = {layer: {leaf: jnp.asarray(v) for leaf, v in leaves.items()} for layer, leaves in layers.items()}
    return {"params": built} if network == "actor" else {"params": {_CRITIC_SCOPE: built}}


def _adam(train_state: Any) -> Any:
    import optax

    adam = train_state.opt_state[0]
    if not isinstance(adam, optax.ScaleByAdamState):
        raise ConversionError(f"SBX optimizer state starts with {type(adam).__name__}, not ScaleByAdamState")
    return adam


def model_state(model: Any) -> NeutralState:
    policy = model.policy
    out: NeutralState = {}
    for fam in NETWORKS:
        field, leaf = _FIELDS[fam]
        network = fam.replace("_target", "")
        out.update({f"{fam}.{n}": v for n, v in _tensors(network, getattr(getattr(policy, field), leaf)).items()})
    for network, field in (("actor", "actor_state"), ("critic", "qf_state")):
        adam = _adam(getattr(policy, field))
        out.update({f"{network}_adam_m.{n}": v for n, v in _tensors(network, adam.mu).items()})
        out.update({f"{network}_adam_v.{n}": v for n, v in _tensors(network, adam.nu).items()})
        out[f"{network}_adam_count"] = int(np.asarray(adam.count))
    out["step"] = int(model._n_updates)
    return out


def load_model(model: Any, state: NeutralState) -> None:
    import jax.numpy as jnp

    policy = model.policy
    for network, field in (("actor", "actor_state"), ("critic", "qf_state")):
        ts = getattr(policy, field)
        adam = _adam(ts)
        count = int(state[f"{network}_adam_count"])
        adam = adam._replace(count=jnp.asarray(count, adam.count.dtype),
                             mu=_fill(network, adam.mu, f"{network}_adam_m", state),
                             nu=_fill(network, adam.nu, f"{network}_adam_v", state))
        # flax's TrainState.step (not used by SBX's TD3 math) follows the Adam count.
        ts = ts.replace(params=_fill(network, ts.params, network, state),
                        target_params=_fill(network, ts.target_params, f"{network}_target", state),
                        opt_state=(adam, *ts.opt_state[1:]), step=jnp.asarray(count, jnp.asarray(ts.step).dtype))
        setattr(policy, field, ts)
    model._n_updates = int(state["step"])


# -- the noise seam ------------------------------------------------------------------------

_TRACE_LOCK = threading.Lock()


class _RandomProxy:
    """``jax.random`` for SBX's td3 module during our trace: ``normal`` returns the shared noise."""

    def __init__(self, random_module: Any, noise: Any, calls: list[int]) -> None:
        self._random, self._noise, self._calls = random_module, noise, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._random, name)

    def normal(self, key: Any, shape: Sequence[int] = (), dtype: Any = None) -> Any:
        import jax
        import jax.numpy as jnp

        is_key = jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
        if self._calls or not is_key or tuple(shape) != tuple(self._noise.shape):
            raise RuntimeError(f"SBX drew jax.random.normal(shape={tuple(shape)}) where the adapter expected exactly "
                               f"one target-noise draw of shape {tuple(self._noise.shape)}")
        self._calls.append(1)
        return self._noise if dtype is None else self._noise.astype(dtype)


class _JaxProxy:
    def __init__(self, jax_module: Any, random_proxy: _RandomProxy) -> None:
        self._jax, self.random = jax_module, random_proxy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jax, name)


@contextlib.contextmanager
def _noise_substituted(noise: Any) -> Iterator[None]:
    import jax
    import sbx.td3.td3 as td3_module

    calls: list[int] = []
    with _TRACE_LOCK:
        original = td3_module.jax
        td3_module.jax = _JaxProxy(jax, _RandomProxy(jax.random, noise, calls))
        try:
            yield
        finally:
            td3_module.jax = original
    if not calls:
        raise RuntimeError("SBX did not draw its target noise through jax.random.normal")


_FED_TRAIN: Callable[..., Any] | None = None


def _fed_train() -> Callable[..., Any]:
    """One jitted function: SBX's ``_train`` body with ``noise`` substituted for its target-noise draw."""
    global _FED_TRAIN
    if _FED_TRAIN is None:
        import jax
        from sbx.td3.td3 import TD3

        def raw(name: str) -> Any:
            attr = TD3.__dict__[name]
            return attr.__func__.__wrapped__   # staticmethod/classmethod -> jax.jit -> SBX's function

        class _SBXBodies(TD3):
            update_critic = staticmethod(raw("update_critic"))
            update_actor = staticmethod(raw("update_actor"))
            soft_update = staticmethod(raw("soft_update"))

        train_body = raw("_train")

        def fed(noise: Any, tau: float, gradient_steps: int, data: Any, policy_delay: int, policy_delay_offset: int,
                target_policy_noise: float, target_noise_clip: float, qf_state: Any, actor_state: Any,
                key: Any) -> Any:
            with _noise_substituted(noise):
                return train_body(_SBXBodies, tau, gradient_steps, data, policy_delay, policy_delay_offset,
                                  target_policy_noise, target_noise_clip, qf_state, actor_state, key)

        _FED_TRAIN = jax.jit(fed, static_argnames=("gradient_steps", "policy_delay", "policy_delay_offset"))
    return _FED_TRAIN


# -- the adapter -------------------------------------------------------------------------

def _x32() -> contextlib.AbstractContextManager[Any]:
    """SBX is written for JAX's default 32-bit mode: with x64 on (a float64 comparison earlier in the
    process, or the parity tests' conftest) and float32 parameters, its Python floats become float64 and
    its ``lax.cond`` branches disagree in dtype. Its model is built, and a float32 one stepped, with x64 off."""
    import jax

    return jax.enable_x64(False)


def _precision(dtype: DTypeLike) -> contextlib.AbstractContextManager[Any]:
    """JAX's 64-bit mode for stepping a model in ``dtype``: on for float64 (float64 parameters, and SBX's
    float literals and carried losses float64 with them), off for float32."""
    import jax

    return jax.enable_x64(np.dtype(dtype) == np.float64)


class SBXAdapter:
    """SBX's TD3 (and DDPG) behind the adapter interface of ``adapters.base`` (see the module docstring
    for the seams and the semantic differences)."""

    name = "sbx"
    config_settings = SBX_SETTINGS

    def __init__(self, config: TD3Config, dtype: DTypeLike = "float32") -> None:
        _refuse(config)
        _refuse_dtype(dtype)
        self.config = config
        self.dtype = dtype_named(dtype)
        with _x32():
            self.model = make_model(config, self.dtype)
        self._batch: tuple[np.ndarray, ...] | None = None
        self._noise: np.ndarray | None = None
        self.model.replay_buffer.sample = self._sample   # instance attributes: this model only
        self.model._train = self._train
        if self.dtype != np.float32:
            self.load(model_state(self.model))   # SBX's own initialisation, held in float64 from now on
        policy = self.model.policy
        self.quantities = quantity_names(
            [n for n, _, _ in _layout("actor", policy.actor_state.params)],
            [n for n, _, _ in _layout("critic", policy.qf_state.params)],
            families=("critic_loss", "critic_adam_m", "critic_adam_v", "critic", "actor_loss", "actor_adam_m",
                      "actor_adam_v", "actor", "critic_target", "actor_target"))

    def load(self, state: NeutralState) -> None:
        with _precision(self.dtype):
            load_model(self.model, {k: np.asarray(v, self.dtype) if isinstance(v, np.ndarray) else v
                                    for k, v in state.items()})

    def state(self) -> NeutralState:
        return model_state(self.model)

    def _sample(self, batch_size: int, env: Any = None) -> Any:
        import torch
        from stable_baselines3.common.type_aliases import ReplayBufferSamples

        if self._batch is None:
            raise RuntimeError("SBX sampled its replay buffer outside SBXAdapter.update")
        obs, action, next_obs, reward, not_done = self._batch
        self._batch = None   # exactly one sample per update
        if batch_size != obs.shape[0]:
            raise RuntimeError(f"SBX asked for a batch of {batch_size}, the update has {obs.shape[0]}")
        t = lambda x: torch.from_numpy(np.array(x, self.dtype))
        # ``discounts`` (SBX's n-step seam, td3.py:144-148): gamma in the comparison's dtype; SBX's own
        # fill is float32 gamma (line 145), the same values in a float32 comparison.
        return ReplayBufferSamples(observations=t(obs), actions=t(action), next_observations=t(next_obs),
                                   dones=t(1 - np.asarray(not_done)), rewards=t(reward),
                                   discounts=t(np.full((obs.shape[0], 1), self.config.gamma)))

    def _train(self, *args: Any) -> Any:
        import jax.numpy as jnp

        if self._noise is None:
            raise RuntimeError("SBX trained outside SBXAdapter.update")
        noise, self._noise = self._noise, None
        return _fed_train()(jnp.asarray(noise), *args)

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        model = self.model
        before = int(np.asarray(_adam(model.policy.actor_state).count))
        self._batch = tuple(np.asarray(x, self.dtype) for x in batch)
        self._noise = np.asarray(target_noise, self.dtype)
        model.logger.name_to_value.clear()
        try:
            with _precision(self.dtype):
                model.train(gradient_steps=1, batch_size=self.config.batch_size)
        finally:
            self._batch = self._noise = None
        logged = model.logger.name_to_value
        out = model_state(model)
        actor_updated = out["actor_adam_count"] != before
        # The loss SBX minimises: half the sum of the critics' MSE (td3.py:219); ours times critic_loss_scale.
        out["critic_loss"] = np.asarray(logged["train/critic_loss"], self.dtype)
        if actor_updated:
            out["actor_loss"] = np.asarray(logged["train/actor_loss"], self.dtype)
        out["actor_updated"] = actor_updated
        return out


__all__ = ["SBXAdapter", "SBX_VERSION", "load_model", "make_model", "model_state"]
