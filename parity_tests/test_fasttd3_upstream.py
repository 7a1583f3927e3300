"""Our JAX FastTD3 networks against FastTD3's own modules, holding the same weights (float64).

Runs where FastTD3's source is available (``jax_td3.adapters.fasttd3_upstream``: the ``fast_td3`` package
importable, or ``JAX_TD3_FASTTD3_SRC`` naming a clone); skipped with the reason otherwise.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax_td3.adapters import fasttd3_upstream
from jax_td3.adapters.fasttd3_jax import FastTD3JaxAdapter
from jax_td3.config import make_config
from jax_td3.fasttd3 import losses
from jax_td3.fasttd3.networks import actor_action, critic_logits
from jax_td3.parity.update_level import NStepDraws

if fasttd3_upstream.locate_source() is None:
    pytest.skip(f"FastTD3's source is not available (install its fast_td3 package or set "
                f"{fasttd3_upstream.SOURCE_VARIABLE} to a clone of github.com/younggyoseo/FastTD3)",
                allow_module_level=True)

# Sizes FastTD3's modules express: h, h/2, h/4 for both networks; its box [-1, 1].
CASES = {
    "default-support": dict(hidden=(16, 8, 4), critic_hidden=(24, 12, 6), num_atoms=101),
    "narrow-support": dict(hidden=(20, 10, 5), critic_hidden=(36, 18, 9), num_atoms=51, v_min=-10.0, v_max=10.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_projection_and_actions_match_fasttd3s_modules(case):
    config = make_config("fasttd3", obs_dim=5, act_dim=2, batch_size=16, n_step=3, **CASES[case])
    ours = FastTD3JaxAdapter(config, seed=4)
    draws = NStepDraws.make(config, seed=2)
    for _ in range(4):   # weights that have moved away from their initialisation; target != online
        ours.update(*draws.next(config.batch_size, config.act_dim))
    actor, critic, critic_target = fasttd3_upstream.upstream_networks(config, ours.state())
    state = ours.train_state
    (_, obs, action, next_obs, reward, bootstrap, discount), _ = draws.next(config.batch_size, config.act_dim)
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)

    with torch.no_grad():
        their_action = actor(t(obs)).numpy()
        their_logits = np.stack([q.numpy() for q in critic(t(obs), t(action))])
        their_projection = np.stack([p.numpy() for p in critic_target.projection(
            t(next_obs), t(action), t(reward), t(bootstrap), t(discount))])
    np.testing.assert_allclose(np.asarray(actor_action(config, state.actor_params, jnp.asarray(obs))),
                               their_action, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(critic_logits(config, state.critic_params, jnp.asarray(obs),
                                                        jnp.asarray(action))), their_logits, rtol=0, atol=1e-12)
    target = losses.target_distribution(config, state.critic_target_params, jnp.asarray(next_obs),
                                        jnp.asarray(action), reward, bootstrap, discount)
    np.testing.assert_allclose(np.asarray(target.projected), their_projection, rtol=0, atol=1e-12)
    # Their expected values, and hence the clipped double Q choice, agree too.
    np.testing.assert_array_equal(
        np.asarray(target.cdq_choice),
        (critic_target.get_value(torch.as_tensor(their_projection[0])) <
         critic_target.get_value(torch.as_tensor(their_projection[1]))).numpy())


def test_configs_they_cannot_express_are_refused_with_the_reason():
    from jax_td3.errors import ConfigError

    config = make_config("fasttd3", hidden=(16, 8, 4), critic_hidden=(24, 12, 5))
    assert "critic_hidden" in fasttd3_upstream.inexpressible(config)
    with pytest.raises(ConfigError, match="cannot express"):
        fasttd3_upstream.upstream_networks(config, {})
    assert "LayerNorm" in fasttd3_upstream.inexpressible(make_config("fasttd3", critic_layer_norm=True))
    assert "tanh" in fasttd3_upstream.inexpressible(make_config("fasttd3", max_action=2.0))
