"""JAX update vs the PyTorch reference: every quantity, update after update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jax_td3 import convert
from jax_td3.config import ALGOS, make_config
from jax_td3.parity import FLOAT64_TOLERANCE, default_tolerance, run_parity

# FastTD3 has its own update and train state (distributional critics, AdamW, a normaliser); its
# ``convert.fasttd3_to_torch``/``fasttd3_from_torch`` and its update are checked by their own tests.
TD3_FAMILY = [algo for algo in ALGOS if algo != "fasttd3"]


def expected_quantity_count(config) -> int:
    """Forward values, and per parameter tensor: grad, Adam m, Adam v, value, target value."""
    n_actor = 2 * (len(config.actor_hidden) + 1)
    layers = 4 if config.critic_arch == "seed" else len(config.critic_hidden_sizes) + 1
    n_critic = 2 * layers * config.num_critics
    forward = 4 + 2  # target_action, target_q, current_q, critic_loss, actor_q, actor_loss
    return forward + 5 * (n_actor + n_critic) + 1  # + schedule


def assert_passed(report, config):
    assert len(report.quantities) == expected_quantity_count(config)
    worst = max(report.quantities.items(), key=lambda kv: kv[1].max_rel / kv[1].tol if kv[1].tol else 0)
    assert report.passed, report.table()
    for name, stats in report.quantities.items():
        assert stats.max_rel <= stats.tol, (name, stats)
    return worst


def small_config(algo, **overrides):
    settings = dict(obs_dim=3, act_dim=1, max_action=2.0, batch_size=32)
    if algo != "seed-ddpg":
        settings["hidden"] = (64, 64)
    return make_config(algo, **{**settings, **overrides})


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("algo", TD3_FAMILY)
def test_thousand_updates_agree(algo, dtype):
    """1,000 consecutive updates. float64 runs free (no re-synchronisation), except DDPG: see below."""
    config = small_config(algo)
    resync = dtype == "float32" or algo == "ddpg"
    report = run_parity(config, dtype=dtype, updates=1000, seed=1, resync=resync)
    assert_passed(report, config)


def test_ddpg_free_running_drift_comes_from_its_weight_decay():
    """DDPG's L2 term makes float64 trajectories drift apart late in a free run; without it they don't.

    With L2 on the critic, the weights of dead ReLU units get a gradient of wd * p alone, and Adam's
    scale-free step m / sqrt(v) turns them into oscillations around zero whose course depends on the
    last bit: a 1-ulp difference in the order of the arithmetic (the frameworks order Adam's operations
    differently) grows about 1000x per 200 updates once such units exist (here after ~600 updates,
    reaching 1e-10 near update 870 and 2e-8 at 1000). Each single update still agrees to ~1e-15
    (``test_thousand_updates_agree[ddpg-float64]`` re-synchronises before every update).
    """
    free = run_parity(small_config("ddpg"), dtype="float64", updates=500, seed=1, resync=False)
    assert free.passed, free.table()
    no_l2 = small_config("ddpg", critic_weight_decay=0.0)
    free_no_l2 = run_parity(no_l2, dtype="float64", updates=1000, seed=1, resync=False)
    assert_passed(free_no_l2, no_l2)


@pytest.mark.parametrize("algo", ["td3", "ddpg"])
def test_default_network_sizes_agree(algo):
    """The algorithms' own default sizes (256-256 / 400-300), on fewer updates."""
    config = make_config(algo, obs_dim=17, act_dim=6, max_action=1.0)
    report = run_parity(config, dtype="float64", updates=30, seed=2)
    assert_passed(report, config)


@pytest.mark.parametrize("box", [dict(max_action=2.0), dict(action_low=(-1.0, 0.0), action_high=(3.0, 0.5))],
                         ids=["symmetric-2", "asymmetric"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_non_default_settings_agree(box, dtype):
    config = make_config("td3", obs_dim=5, act_dim=2, hidden=(64, 32), batch_size=7, gamma=0.95, tau=0.02,
                         policy_freq=3, policy_noise=0.3, noise_clip=0.4, **box)
    report = run_parity(config, dtype=dtype, updates=300, seed=3)
    assert_passed(report, config)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    algo=st.sampled_from(TD3_FAMILY),
    hidden=st.lists(st.integers(1, 24), min_size=1, max_size=3),
    batch_size=st.integers(1, 20),
    obs_dim=st.integers(1, 6),
    act_dim=st.integers(1, 3),
    gamma=st.floats(0.0, 1.0),
    tau=st.floats(1e-3, 1.0),
    policy_freq=st.integers(1, 4),
    low=st.floats(-3.0, 0.5),
    width=st.floats(0.1, 4.0),
    seed=st.integers(0, 2**16),
)
def test_random_configurations_agree(algo, hidden, batch_size, obs_dim, act_dim, gamma, tau, policy_freq, low,
                                     width, seed):
    if algo in ("ddpg", "seed-ddpg"):
        hidden = (hidden + [8, 8])[:2]   # these critics have exactly two layers
    config = make_config(algo, obs_dim=obs_dim, act_dim=act_dim, hidden=tuple(hidden), critic_hidden=tuple(hidden),
                         batch_size=batch_size, gamma=gamma, tau=tau, policy_freq=policy_freq,
                         action_low=(low,) * act_dim, action_high=(low + width,) * act_dim)
    report = run_parity(config, dtype="float64", updates=12, seed=seed)
    assert_passed(report, config)


def test_actor_and_targets_move_only_on_policy_freq_iterations():
    """Checked directly on the JAX side (the report's 'schedule' row checks both sides every update)."""
    config = small_config("td3", policy_freq=3, batch_size=8)
    from jax_td3.update import Batch, init_train_state, update

    state = init_train_state(config, jax.random.PRNGKey(0), jnp.float64)
    step = jax.jit(update, static_argnums=0)
    rng = np.random.default_rng(0)
    moved = []
    for it in range(1, 10):
        batch = Batch(rng.standard_normal((8, 3)), rng.uniform(-2, 2, (8, 1)), rng.standard_normal((8, 3)),
                      rng.standard_normal((8, 1)), np.ones((8, 1)))
        new_state, metrics = step(config, state, batch, rng.standard_normal((8, 1)))
        changed = lambda a, b: not all(np.array_equal(x, y) for x, y in
                                       zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
        moved.append((changed(state.actor_params, new_state.actor_params),
                      changed(state.actor_target_params, new_state.actor_target_params),
                      changed(state.critic_target_params, new_state.critic_target_params),
                      bool(metrics["actor_updated"])))
        assert changed(state.critic_params, new_state.critic_params)
        assert int(new_state.step) == it
        state = new_state
    assert moved == [(it % 3 == 0,) * 4 for it in range(1, 10)]


def test_float32_tolerance_classes():
    assert default_tolerance("float32", "target_q") < default_tolerance("float32", "critic_grad.l1.weight")
    assert default_tolerance("float64", "critic_grad.l1.weight") == FLOAT64_TOLERANCE


@pytest.mark.parametrize("plant, factor, quantity, update", [
    ("tau", 0.9, "critic_target.l1.weight", 2),     # targets first move on the first actor iteration
    ("noise_clip", 0.2, "target_action", 1),        # clip 0.1: most of the first batch's noise is clipped
    ("gamma", 0.9, "target_q", 1),
])
def test_a_planted_difference_is_found_where_it_is(plant, factor, quantity, update):
    config = small_config("td3", batch_size=16)
    agent = convert.make_torch_agent(config, dtype=__import__("torch").float64)
    setattr(agent, plant, getattr(agent, plant) * factor)
    report = run_parity(config, dtype="float64", updates=6, seed=0, agent=agent)
    assert not report.passed
    assert report.first_divergence.quantity == quantity
    assert report.first_divergence.update == update


def test_polyak_on_every_update_is_caught_at_the_first_non_actor_update():
    """A reference that moves its targets on every update instead of every policy_freq-th."""
    import torch

    from torch_ref.networks import soft_update

    config = small_config("td3", batch_size=16, policy_freq=2)
    agent = convert.make_torch_agent(config, dtype=torch.float64)
    original_train = agent.train

    def train_with_eager_polyak(batch, noise=None, record=False):
        info = original_train(batch, noise, record)
        if agent.step % agent.policy_freq != 0:
            soft_update(agent.critic, agent.critic_target, agent.tau)
            soft_update(agent.actor, agent.actor_target, agent.tau)
        return info

    agent.train = train_with_eager_polyak
    report = run_parity(config, dtype="float64", updates=4, seed=0, agent=agent)
    assert not report.passed
    assert (report.first_divergence.update, report.first_divergence.quantity) == (1, "critic_target.l1.weight")
    # The schedule row sees it too: the reference moved both targets on an update without an actor step.
    assert report.quantities["schedule"].first_violation == 1
    assert report.quantities["schedule"].max_abs == 2


def test_any_two_adapters_can_be_compared():
    """The engine only talks to adapters: JAX against JAX is exact, and a reference loaded from a
    state it did not make (after five JAX updates) continues it to float64 rounding."""
    from jax_td3.adapters.jax import JaxAdapter
    from jax_td3.adapters.torch_ref import TorchRefAdapter
    from jax_td3.parity import compare_adapters

    config = small_config("td3", batch_size=8, hidden=(16, 16))
    same = compare_adapters(JaxAdapter(config, seed=4), JaxAdapter(config, seed=5), config, updates=6)
    assert same.passed and same.backends == ("jax", "jax")
    assert all(s.max_abs == 0 for s in same.quantities.values()), same.table()

    jax_side = JaxAdapter(config, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = (rng.standard_normal((8, 3)), rng.uniform(-2, 2, (8, 1)), rng.standard_normal((8, 3)),
                 rng.standard_normal((8, 1)), np.ones((8, 1)))
        jax_side.update(batch, rng.standard_normal((8, 1)))
    assert jax_side.state()["step"] == 5 and jax_side.state()["critic_adam_count"] == 5
    report = compare_adapters(jax_side, TorchRefAdapter(config), config, updates=7)
    assert_passed(report, config)
    assert report.backends == ("jax", "torch_ref")


def test_neutral_state_round_trip_is_exact():
    """JAX layout -> neutral -> torch_ref -> neutral -> JAX layout gives back every bit."""
    from jax_td3.adapters.jax import JaxAdapter
    from jax_td3.adapters.torch_ref import TorchRefAdapter

    config = small_config("td3", batch_size=8, hidden=(16, 12))
    jax_side, reference = JaxAdapter(config, seed=2), TorchRefAdapter(config)
    state = jax_side.state()
    assert state["critic.l4.weight"].shape == (16, 4) and state["actor.l3.weight"].shape == (1, 12)
    reference.load(state)
    back = reference.state()
    assert back.keys() == state.keys()
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    jax_side.load(back)
    for name, value in jax_side.state().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
