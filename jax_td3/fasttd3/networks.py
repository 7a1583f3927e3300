"""FastTD3's models (Flax linen): the deterministic actor and the twin C51 critics.

Layers are named ``l1``, ``l2`` ... as in ``jax_td3.networks`` (critic LayerNorms ``ln1`` ...), so a
converter maps them to PyTorch's one to one. The two critics are one ``DistributionalCritic`` whose
parameters carry a leading axis of size 2, run together with one ``vmap``. Both networks take
observations already normalised (``normalizer.normalize``); the update normalises them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_td3.config import FastTD3Config
from jax_td3.networks import Params, dense

NUM_CRITICS = 2
LAYER_NORM_EPS = 1e-5
"""PyTorch's nn.LayerNorm default."""


def bfloat16_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
    """A matrix product of bfloat16 copies of both operands, returned in the left operand's dtype."""
    del preferred_element_type
    return jax.lax.dot_general(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), dimension_numbers,
                               precision=precision, preferred_element_type=lhs.dtype)


def linear(features: int, fan_in: int, name: str, bfloat16_matmuls: bool) -> nn.Dense:
    """nn.Linear's layer (PyTorch init), its matrix product optionally in bfloat16."""
    return dense(features, fan_in, "torch", name, **bfloat16_option(bfloat16_matmuls))


def bfloat16_option(bfloat16_matmuls: bool) -> dict[str, Any]:
    """nn.Dense's options for products in bfloat16 (none for the parameters' dtype)."""
    return {"dot_general": bfloat16_dot_general} if bfloat16_matmuls else {}


def scaled_normal(std: ArrayLike) -> Callable[..., jax.Array]:
    """N(0, std^2) draws (FastTD3's init of the actor's output weights)."""
    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)
    return init


class Actor(nn.Module):
    """mu(s) = action_bias + action_scale * tanh(MLP(s)); the output layer starts near zero."""

    hidden: Sequence[int]
    act_dim: int
    action_scale: Sequence[float]
    action_bias: Sequence[float]
    init_scale: Any = 0.01        # a number or a traced scalar (a config leaf under vmap)
    bfloat16_matmuls: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for i, width in enumerate(self.hidden):
            x = nn.relu(linear(width, x.shape[-1], f"l{i + 1}", self.bfloat16_matmuls)(x))
        x = nn.Dense(self.act_dim, kernel_init=scaled_normal(self.init_scale), bias_init=nn.initializers.zeros,
                     name=f"l{len(self.hidden) + 1}", **bfloat16_option(self.bfloat16_matmuls))(x)
        scale = jnp.asarray(self.action_scale, x.dtype)
        bias = jnp.asarray(self.action_bias, x.dtype)
        return bias + scale * jnp.tanh(x)


class DistributionalCritic(nn.Module):
    """logits(s, a) over the atoms = MLP(concat[s, a]) -> (B, num_atoms); LayerNorm optional."""

    hidden: Sequence[int]
    num_atoms: int
    layer_norm: bool = False
    bfloat16_matmuls: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        for i, width in enumerate(self.hidden):
            x = linear(width, x.shape[-1], f"l{i + 1}", self.bfloat16_matmuls)(x)
            if self.layer_norm:
                x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name=f"ln{i + 1}")(x)
            x = nn.relu(x)
        return linear(self.num_atoms, x.shape[-1], f"l{len(self.hidden) + 1}", self.bfloat16_matmuls)(x)


def make_actor(config: FastTD3Config) -> Actor:
    return Actor(config.actor_hidden, config.act_dim, config.action_scale, config.action_bias,
                 config.init_scale, config.bfloat16_matmuls)


def make_critic(config: FastTD3Config) -> DistributionalCritic:
    """One critic; ``init_critic_params`` stacks two of them."""
    return DistributionalCritic(config.critic_hidden_sizes, config.num_atoms, config.critic_layer_norm,
                                config.bfloat16_matmuls)


def init_actor_params(config: FastTD3Config, key: jax.Array) -> Params:
    return make_actor(config).init(key, jnp.zeros((1, config.obs_dim), jnp.float32))


def init_critic_params(config: FastTD3Config, key: jax.Array) -> Params:
    """Parameters of two independent critics, stacked on a leading axis."""
    critic = make_critic(config)
    obs = jnp.zeros((1, config.obs_dim), jnp.float32)
    act = jnp.zeros((1, config.act_dim), jnp.float32)
    return jax.vmap(lambda k: critic.init(k, obs, act))(jax.random.split(key, NUM_CRITICS))


def actor_action(config: FastTD3Config, actor_params: Params, normalized_obs: ArrayLike) -> jax.Array:
    """mu(s) for observations already normalised: (B, act_dim)."""
    return cast(jax.Array, make_actor(config).apply(actor_params, normalized_obs))


def critic_logits(config: FastTD3Config, critic_params: Params, obs: ArrayLike, action: ArrayLike) -> jax.Array:
    """Both critics' logits at once, for normalised ``obs``: (2, B, num_atoms)."""
    critic = make_critic(config)
    return cast(jax.Array, jax.vmap(critic.apply, in_axes=(0, None, None))(critic_params, obs, action))


def support(config: FastTD3Config, dtype: Any = jnp.float32) -> jax.Array:
    """The atoms' values z = linspace(v_min, v_max, num_atoms)."""
    return jnp.linspace(config.v_min, config.v_max, config.num_atoms, dtype=dtype)
