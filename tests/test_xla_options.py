"""The XLA options our jitted functions are compiled with: when they apply, and that they change nothing numerically."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_td3 import xla_options
from jax_td3.config import make_config
from jax_td3.replay import Batch, multi_update, replay_add, replay_init
from jax_td3.update import init_train_state


@pytest.fixture
def fresh_options(monkeypatch):
    """The test's environment; compiler_options() reads it on every call (no cache to clear)."""
    monkeypatch.delenv("JAX_TD3_XLA_DEFAULTS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    yield monkeypatch


def test_on_cpu_ynnpack_fusions_are_switched_off(fresh_options):
    assert jax.default_backend() == "cpu"
    assert xla_options.compiler_options() == {"xla_cpu_experimental_ynn_fusion_type": ""}
    # The caller's own options are kept and win.
    merged = xla_options.with_defaults({"xla_backend_optimization_level": 0})
    assert merged == {"xla_cpu_experimental_ynn_fusion_type": "", "xla_backend_optimization_level": 0}


@pytest.mark.parametrize("variable, value", [("JAX_TD3_XLA_DEFAULTS", "1"),
                                             ("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")])
def test_opt_out_and_the_users_own_flags_leave_xla_defaults(fresh_options, variable, value):
    fresh_options.setenv(variable, value)
    assert xla_options.compiler_options() is None
    assert xla_options.with_defaults(None) is None
    assert xla_options.with_defaults({"xla_backend_optimization_level": 0}) == {"xla_backend_optimization_level": 0}


def test_the_options_change_speed_not_results(fresh_options):
    """Twenty fused TD3 updates (float32, 64-64) with and without the options: XLA's own dots and
    YNNPACK's sum in different orders, so exact equality is not expected; both must agree to float32
    rounding amplified over 20 Adam steps. Measured: parameters move by more than 1e-3 and the two
    builds differ by at most 4.8e-7 (a few ulp); the bound is 10x that."""
    config = make_config("td3", obs_dim=3, act_dim=1, max_action=2.0, hidden=(64, 64), batch_size=32)
    state = init_train_state(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    n = 500
    replay = replay_add(replay_init(n, 3, 1), Batch(
        rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        rng.normal(size=(n, 3)).astype(np.float32), -rng.uniform(0, 16, (n, 1)).astype(np.float32),
        np.ones((n, 1), np.float32)))
    run = lambda s, r, k: multi_update(config, s, r, k, 20)[0]
    results = []
    for options in (None, xla_options.compiler_options()):
        compiled = jax.jit(run).lower(state, replay, jax.random.key(1)).compile(options)
        results.append(compiled(state, replay, jax.random.key(1)))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree_util.tree_leaves(results[1].actor_params), jax.tree_util.tree_leaves(state.actor_params)))
    assert moved > 1e-3
    for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=5e-6)
