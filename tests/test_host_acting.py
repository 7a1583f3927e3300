"""Acting on the host: ``networks.actor_action_numpy`` is the actor of ``networks.actor_action``, and the JAX
backend acts with a copy of the current (or held) parameters.

Float tolerances: the two compute the same layers and differ only in how their matrix products sum (NumPy's
BLAS against XLA's dot), so the difference is rounding of dot products of at most 400 terms, carried through
two hidden layers and tanh onto actions of magnitude 1-2. Measured: at most 1.6e-15 in float64 (7 ulps of
1) and 7.2e-7 in float32 (6 ulps). We allow 1e-14 and 4e-6 absolute: about 5x the measured worst case,
and far below any difference a wrong layer, bias or scale would make (order 1e-2 and up)."""

import jax
import numpy as np
import pytest

from jax_td3.backends.jax_backend import JaxBackend, initial_state_and_key
from jax_td3.config import TD3Config
from jax_td3.networks import actor_action, actor_action_numpy
from jax_td3.update import Batch


def config_for(hidden, obs_dim=17, act_dim=6):
    low = tuple(-1.0 - 0.5 * i for i in range(act_dim))     # asymmetric boxes: scale and bias both matter
    high = tuple(2.0 + 0.25 * i for i in range(act_dim))
    return TD3Config(obs_dim=obs_dim, act_dim=act_dim, action_low=low, action_high=high, hidden=hidden, batch_size=8)


@pytest.mark.parametrize("dtype,atol,rtol", [("float64", 1e-14, 0.0), ("float32", 4e-6, 0.0)])
@pytest.mark.parametrize("hidden", [(8, 8), (256, 256), (400, 300)])
def test_the_numpy_actor_is_the_flax_actor(dtype, atol, rtol, hidden):
    config = config_for(hidden)
    state, _ = initial_state_and_key(config, 3, np.dtype(dtype))
    params = jax.tree_util.tree_map(np.asarray, jax.device_get(state.actor_params))
    rng = np.random.default_rng(0)
    for rows in (1, 16, 33):
        obs = rng.normal(0.0, 3.0, (rows, config.obs_dim)).astype(dtype)
        host = actor_action_numpy(config, params, obs)
        device = np.asarray(actor_action(config, state.actor_params, obs))
        assert host.dtype == np.dtype(dtype) and host.shape == (rows, config.act_dim)
        np.testing.assert_allclose(host, device, rtol=rtol, atol=atol)
        low, high = np.asarray(config.action_low), np.asarray(config.action_high)
        assert np.all(host >= low - 1e-6) and np.all(host <= high + 1e-6)
        assert rows == 1 or np.ptp(host, axis=0).min() > 1e-3  # the actions depend on the observations


def test_the_backend_acts_with_the_current_or_the_held_actor(x64):
    config = config_for((16, 16), obs_dim=3, act_dim=1)
    state, _ = initial_state_and_key(config, 0, np.dtype("float64"))
    backend = JaxBackend(config, state, "float64")
    obs = np.array([0.3, -0.2, 0.9])
    rng = np.random.default_rng(1)

    def policy():
        params = backend.state().actor_params
        return actor_action_numpy(config, params, obs[None])[0]

    before = backend.act(obs)
    np.testing.assert_array_equal(before, policy())
    backend.hold_acting_params()
    for _ in range(4):  # two actor updates (policy_delay 2)
        batch = Batch(rng.normal(size=(8, 3)), rng.uniform(-1, 2, (8, 1)), rng.normal(size=(8, 3)),
                      rng.normal(size=(8, 1)), np.ones((8, 1)))
        backend.update(batch, rng.normal(size=(8, 1)))
    np.testing.assert_array_equal(backend.act(obs), before)   # held: the actor of before the updates
    backend.release_acting_params()
    after = backend.act(obs)
    assert not np.array_equal(after, before)                   # the current actor, copied after its updates
    np.testing.assert_array_equal(after, policy())
    np.testing.assert_array_equal(backend.act_batch(np.stack([obs, obs]))[1], policy())
