"""What the models are: the deterministic actor and the critics (Flax linen).

Layer names follow Fujimoto's TD3.py (``l1``, ``l2`` ...) and the seed notebook
(``fc_s``, ``fc_a``, ``fc1``, ``fc2``) so that ``convert.py`` maps them to the
PyTorch reference one to one. A Flax kernel is (in, out); PyTorch's weight is (out, in).

The twin critic of TD3 is one ``Critic`` whose parameters carry a leading axis of
size ``num_critics``: ``critic_values`` runs all of them with one ``vmap``, i.e. one
batched matmul per layer instead of two.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jax_td3.config import TD3Config

Params = Any
"""A Flax parameter pytree, ``{"params": {layer: {"kernel": ..., "bias": ...}}}`` (critics: a leading axis)."""


def _torch_uniform(bound: float) -> Callable[..., jax.Array]:
    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        # (2u - 1) is exact for JAX's uniform u on [0, 1), so the one rounding left is the product: the same
        # bits everywhere. ``u * 2 bound - bound`` gives these bits where XLA fuses it into one multiply-add,
        # and rounds twice where it does not (no FMA on the processor, or LLVM optimisations off).
        unit = jax.random.uniform(key, shape, dtype)
        return (2 * unit - 1) * jnp.asarray(bound, dtype)
    return init


def dense(features: int, fan_in: int, init: str, name: str, **dense_options: Any) -> nn.Dense:
    """nn.Dense with PyTorch's nn.Linear init (U(+-1/sqrt(fan_in)) for weight and bias) or Flax's.

    ``dense_options`` go to nn.Dense as they are (FastTD3's bfloat16 products pass ``dot_general``).
    """
    if init == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        return nn.Dense(features, kernel_init=_torch_uniform(bound), bias_init=_torch_uniform(bound), name=name,
                        **dense_options)
    return nn.Dense(features, name=name, **dense_options)


class Actor(nn.Module):
    """mu(s) = scale * tanh(MLP(s)) + bias, mapping onto the action box."""

    hidden: Sequence[int]
    act_dim: int
    action_scale: Sequence[float]
    action_bias: Sequence[float]
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for i, width in enumerate(self.hidden):
            x = nn.relu(dense(width, x.shape[-1], self.init_scheme, f"l{i + 1}")(x))
        x = dense(self.act_dim, x.shape[-1], self.init_scheme, f"l{len(self.hidden) + 1}")(x)
        scale = jnp.asarray(self.action_scale, x.dtype)
        bias = jnp.asarray(self.action_bias, x.dtype)
        return scale * jnp.tanh(x) + bias


class Critic(nn.Module):
    """Q(s, a) = MLP(concat[s, a]) -> (B, 1), as in TD3 and OurDDPG."""

    hidden: Sequence[int]
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(dense(width, x.shape[-1], self.init_scheme, f"l{i + 1}")(x))
        return dense(1, x.shape[-1], self.init_scheme, f"l{len(self.hidden) + 1}")(x)


class DDPGCritic(nn.Module):
    """Lillicrap's critic: the action joins after the first layer."""

    hidden: Sequence[int]
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        h1, h2 = self.hidden
        x = nn.relu(dense(h1, obs.shape[-1], self.init_scheme, "l1")(obs))
        x = jnp.concatenate([x, action], axis=-1)
        x = nn.relu(dense(h2, x.shape[-1], self.init_scheme, "l2")(x))
        return dense(1, h2, self.init_scheme, "l3")(x)


class SeedCritic(nn.Module):
    """The seed notebook's critic: separate state and action branches, concatenated."""

    hidden: Sequence[int]  # (branch width, width after concatenation): (64, 32)
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        branch, width = self.hidden
        s = nn.relu(dense(branch, obs.shape[-1], self.init_scheme, "fc_s")(obs))
        a = nn.relu(dense(branch, action.shape[-1], self.init_scheme, "fc_a")(action))
        x = nn.relu(dense(width, 2 * branch, self.init_scheme, "fc1")(jnp.concatenate([s, a], axis=-1)))
        return dense(1, width, self.init_scheme, "fc2")(x)


CRITICS = {"mlp": Critic, "ddpg": DDPGCritic, "seed": SeedCritic}


def make_actor(config: TD3Config) -> Actor:
    return Actor(config.actor_hidden, config.act_dim, config.action_scale, config.action_bias, config.init)


def make_critic(config: TD3Config) -> nn.Module:
    """One Q network; ``init_critic_params`` stacks ``config.num_critics`` of them."""
    return CRITICS[config.critic_arch](config.critic_hidden_sizes, config.init)


def init_actor_params(config: TD3Config, key: jax.Array) -> Params:
    return make_actor(config).init(key, jnp.zeros((1, config.obs_dim), jnp.float32))


def init_critic_params(config: TD3Config, key: jax.Array) -> Params:
    """Parameters of ``num_critics`` independent Q networks, stacked on a leading axis."""
    critic = make_critic(config)
    obs = jnp.zeros((1, config.obs_dim), jnp.float32)
    act = jnp.zeros((1, config.act_dim), jnp.float32)
    keys = jax.random.split(key, config.num_critics)
    return jax.vmap(lambda k: critic.init(k, obs, act))(keys)


def actor_action(config: TD3Config, actor_params: Params, obs: ArrayLike) -> jax.Array:
    # apply's declared return also covers mutable collections, which are not asked for here
    return cast(jax.Array, make_actor(config).apply(actor_params, obs))


def actor_action_numpy(config: TD3Config, actor_params: Params, obs: np.ndarray) -> np.ndarray:
    """``actor_action`` computed by NumPy on host copies of the parameters (what the Gymnasium loop acts
    with: one environment step's forward costs microseconds here against a device round trip through
    ``jit``). The same layers as ``Actor``; the products round as NumPy's, not XLA's, so the two agree to
    float tolerance, not bit for bit (``tests/test_host_acting.py``)."""
    layers = actor_params["params"]
    x = obs
    for i in range(len(config.actor_hidden)):
        x = np.maximum(x @ layers[f"l{i + 1}"]["kernel"] + layers[f"l{i + 1}"]["bias"], 0)
    last = layers[f"l{len(config.actor_hidden) + 1}"]
    x = x @ last["kernel"] + last["bias"]
    scale, bias = np.asarray(config.action_scale, x.dtype), np.asarray(config.action_bias, x.dtype)
    return scale * np.tanh(x) + bias


def critic_values(config: TD3Config, critic_params: Params, obs: ArrayLike, action: ArrayLike) -> jax.Array:
    """All critics at once: (num_critics, B, 1)."""
    critic = make_critic(config)
    return cast(jax.Array, jax.vmap(critic.apply, in_axes=(0, None, None))(critic_params, obs, action))


def first_critic_value(config: TD3Config, critic_params: Params, obs: ArrayLike, action: ArrayLike) -> jax.Array:
    """Q1 alone, (B, 1): the critic the actor ascends."""
    q1_params = jax.tree_util.tree_map(lambda p: p[0], critic_params)
    return cast(jax.Array, make_critic(config).apply(q1_params, obs, action))
