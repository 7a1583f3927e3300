"""Moving a FastTD3 train state between JAX and torch_ref: exact both ways, and training continues alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_ref
from jax_td3 import convert
from jax_td3.config import make_config
from jax_td3.fasttd3.normalizer import COUNT_LIMIT, normalizer_update
from jax_td3.fasttd3.state import Batch
from jax_td3.fasttd3.update import init_train_state, update


def random_batch(rng, config):
    b = config.batch_size
    return Batch(rng.standard_normal((b, config.obs_dim)), rng.uniform(-1.5, 1.5, (b, config.act_dim)),
                 rng.standard_normal((b, config.obs_dim)), rng.standard_normal(b),
                 (rng.random(b) > 0.1).astype(np.float64), np.full(b, 0.99 ** 3))


def trained_state(config, updates=3, seed=0):
    rng = np.random.default_rng(seed)
    state = init_train_state(config, jax.random.PRNGKey(seed), jnp.float64)
    state = state._replace(obs_normalizer=normalizer_update(state.obs_normalizer,
                                                            rng.standard_normal((5, config.obs_dim)) * 3 + 1))
    step = jax.jit(update, static_argnums=0)
    for _ in range(updates):   # non-trivial AdamW moments and counters
        state, _ = step(config, state, random_batch(rng, config), rng.standard_normal((config.batch_size,
                                                                                       config.act_dim)))
    return state


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("updates", [0, 3])
def test_round_trip_is_exact_including_adamw_and_the_normaliser(layer_norm, updates, x64):
    config = make_config("fasttd3", obs_dim=4, act_dim=2, max_action=1.5, hidden=(8, 6, 5), critic_hidden=(7, 5),
                         num_atoms=11, batch_size=8, critic_layer_norm=layer_norm)
    state = trained_state(config, updates)
    agent = convert.make_fasttd3_agent(config, torch.float64)
    convert.fasttd3_to_torch(state, agent)
    assert agent.step == updates and int(agent.obs_normalizer.count) == 5
    back = convert.fasttd3_from_torch(agent, state)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
    for a, b in zip(leaves(state), leaves(back), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_a_pytorch_count_past_int32_saturates_on_the_way_to_jax():
    """torch_ref's count is int64; the JAX statistics keep int32 and stop at COUNT_LIMIT (the module
    ``fasttd3.normalizer``), so a larger count arrives saturated, mean and var exactly."""
    module = torch_ref.fasttd3.EmpiricalNormalization(3, dtype=torch.float64)
    module.update(torch.arange(12.0, dtype=torch.float64).reshape(4, 3))
    for count, held in ((COUNT_LIMIT, COUNT_LIMIT), (COUNT_LIMIT + 1, COUNT_LIMIT), (3_000_000_000, COUNT_LIMIT)):
        module.count.fill_(count)
        statistics = convert.normalizer_from_torch(module)
        assert statistics.count.dtype == np.int32 and int(statistics.count) == held
        np.testing.assert_array_equal(statistics.mean, module.mean[:].numpy())
        np.testing.assert_array_equal(statistics.var, module.var[:].numpy())


def test_training_continues_alike_after_moving_to_torch(x64):
    config = make_config("fasttd3", obs_dim=4, act_dim=2, hidden=(8, 6), critic_hidden=(7, 5), num_atoms=11,
                         batch_size=8, v_min=-5.0, v_max=5.0)
    state = trained_state(config, updates=3)
    agent = convert.make_fasttd3_agent(config, torch.float64)
    convert.fasttd3_to_torch(state, agent)
    rng = np.random.default_rng(7)
    step = jax.jit(update, static_argnums=0)
    for _ in range(4):   # both an actor update and a critic-only one
        batch, noise = random_batch(rng, config), rng.standard_normal((8, 2))
        state, metrics = step(config, state, batch, noise)
        info = agent.train(torch_ref.FastTD3Batch(*(torch.as_tensor(x) for x in batch)), torch.as_tensor(noise))
        assert abs(float(metrics["critic_loss"]) - float(info["critic_loss"])) < 1e-12
    for a, b in zip(leaves(state), leaves(convert.fasttd3_from_torch(agent, state)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
