"""Moving a train state between JAX and PyTorch: exact, both ways, and training continues identically."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_ref
from jax_td3 import convert
from jax_td3.config import ALGOS, make_config
from jax_td3.update import Batch, init_train_state, update

# FastTD3 has its own update and train state (distributional critics, AdamW, a normaliser); its
# ``convert.fasttd3_to_torch``/``fasttd3_from_torch`` and its update are checked by their own tests.
TD3_FAMILY = [algo for algo in ALGOS if algo != "fasttd3"]


def config_for(algo):
    sizes = {} if algo == "seed-ddpg" else dict(hidden=(16, 12))
    return make_config(algo, obs_dim=4, act_dim=2, max_action=1.5, batch_size=8, **sizes)


def batches(config, n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        b = config.batch_size
        yield (rng.standard_normal((b, config.obs_dim)), rng.uniform(-1.5, 1.5, (b, config.act_dim)),
               rng.standard_normal((b, config.obs_dim)), rng.standard_normal((b, 1)),
               (rng.random((b, 1)) > 0.1).astype(np.float64)), rng.standard_normal((b, config.act_dim))


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("algo", TD3_FAMILY)
def test_round_trip_is_exact_including_adam(algo):
    config = config_for(algo)
    step = jax.jit(update, static_argnums=0)
    state = init_train_state(config, jax.random.PRNGKey(0), jnp.float64)
    for batch, noise in batches(config, 5):   # non-trivial Adam moments and counters
        state, _ = step(config, state, Batch(*batch), noise)
    agent = convert.make_torch_agent(config, dtype=torch.float64)
    convert.state_to_torch(config, state, agent)
    assert agent.step == 5
    back = convert.state_from_torch(config, agent, state)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
    assert leaves_equal(back, state)


@pytest.mark.parametrize("algo", ["td3", "ddpg"])
def test_training_continues_identically_after_moving(algo):
    """Train 7 updates in JAX, move to torch, continue 7 there; compare with 14 updates in JAX (and back)."""
    config = config_for(algo).replace(policy_freq=2)
    data = list(batches(config, 14, seed=1))
    step = jax.jit(update, static_argnums=0)
    state = init_train_state(config, jax.random.PRNGKey(1), jnp.float64)
    for batch, noise in data[:7]:
        state, _ = step(config, state, Batch(*batch), noise)
    agent = convert.make_torch_agent(config, dtype=torch.float64)
    convert.state_to_torch(config, state, agent)
    for batch, noise in data[7:]:
        state, _ = step(config, state, Batch(*batch), noise)
        agent.train(torch_ref.Batch(*map(torch.from_numpy, batch)), torch.from_numpy(noise))
    moved_back = convert.state_from_torch(config, agent, state)
    assert int(moved_back.step) == 14
    for a, b in zip(jax.tree_util.tree_leaves(moved_back), jax.tree_util.tree_leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_shape_mismatch_names_the_parameter():
    small, large = config_for("td3"), config_for("td3").replace(hidden=(16, 13))
    state = init_train_state(small, jax.random.PRNGKey(0))
    agent = convert.make_torch_agent(large)
    with pytest.raises(convert.ConversionError, match=r"actor\.l2\.weight.*\(12, 16\).*\(13, 16\)"):
        convert.state_to_torch(small, state, agent)


def test_missing_or_extra_torch_parameters_are_named():
    config = config_for("td3")
    state = init_train_state(config, jax.random.PRNGKey(0))
    agent = convert.make_torch_agent(config.replace(hidden=(16, 12, 8)))
    with pytest.raises(convert.ConversionError, match=r"extra in torch \['l4\.bias', 'l4\.weight'\]"):
        convert.state_to_torch(config, state, agent)
    with pytest.raises(convert.ConversionError, match="missing in torch"):
        convert.state_from_torch(config.replace(hidden=(16, 12, 8)), convert.make_torch_agent(config),
                                 init_train_state(config.replace(hidden=(16, 12, 8)), jax.random.PRNGKey(0)))


def test_twin_critic_layout_matches_fujimoto():
    """JAX critic slice 0 is torch l1..l3 (Q1), slice 1 is l4..l6 (Q2); kernels are transposed weights."""
    config = config_for("td3")
    state = init_train_state(config, jax.random.PRNGKey(3), jnp.float64)
    agent = convert.make_torch_agent(config, dtype=torch.float64)
    convert.state_to_torch(config, state, agent)
    kernel = np.asarray(state.critic_params["params"]["l1"]["kernel"])
    np.testing.assert_array_equal(agent.critic.l1.weight.detach().numpy(), kernel[0].T)
    np.testing.assert_array_equal(agent.critic.l4.weight.detach().numpy(), kernel[1].T)
    obs, act = torch.randn(5, 4, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    from jax_td3.networks import critic_values
    q_jax = np.asarray(critic_values(config, state.critic_params, obs.numpy(), act.numpy()))
    q1, q2 = agent.critic(obs, act)
    np.testing.assert_allclose(q_jax[0], q1.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(q_jax[1], q2.detach().numpy(), rtol=1e-13)


@pytest.mark.parametrize("init", ["torch", "flax"])
def test_initialisation_distributions(init):
    """The "torch" init draws U(+-1/sqrt(fan_in)) for weights and biases, like nn.Linear; "flax" zero biases."""
    config = make_config("td3", obs_dim=30, act_dim=2, hidden=(400, 300), init=init)
    params = init_train_state(config, jax.random.PRNGKey(0)).actor_params["params"]
    w, b = np.asarray(params["l2"]["kernel"]), np.asarray(params["l2"]["bias"])
    bound = 1 / np.sqrt(400)
    if init == "torch":
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
        assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound   # std of U(-a, a) is a / sqrt(3)
        assert np.abs(b).max() <= bound and b.std() > 0.4 * bound
    else:
        assert np.all(b == 0)
        assert abs(w.std() - np.sqrt(1 / 400)) < 0.05 * np.sqrt(1 / 400)   # lecun normal
