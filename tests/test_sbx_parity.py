"""SBX's TD3 (sbx-rl 0.28.0, its own jitted ``_train``) against our JAX update, update by update.

Measured (float32, hidden 8-8, batch 8, 20 updates, ``resync``): ``critic_loss`` (SBX's value doubled,
see below) is bit-identical. Everything else differs for reasons in SBX's code (sbx/td3/td3.py):

- critic Adam moments: SBX's loss is ``0.5 * ... .sum()`` (td3.py:219), so its critic gradients are
  half of ours: from zero moments, ``m`` is exactly half and ``v`` exactly a quarter of ours
  (pinned). The critic parameters then differ only through Adam's ``eps`` (~1e-4 abs here).
- targets: ``soft_update`` runs on every update, before the delayed actor step (td3.py:326), so
  targets move on the updates where Fujimoto's hold still (the engine's ``schedule`` check) and the
  actor target follows the pre-step actor (pinned on update 1).
- actor loss / actor moments: SBX's actor maximises ``min(Q1, Q2)`` (td3.py:249-251), ours Q1, so
  SBX's actor loss is never below ours on the same networks (pinned up to the critics' eps-sized
  difference).
Not reported (inside SBX's ``fori_loop``/``value_and_grad``): target action, target Q, current Q,
gradients, actor Q.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sbx", reason="sbx-rl not installed (extra `thirdparty`)")

from jax_td3.adapters.base import family  # noqa: E402
from jax_td3.adapters.jax import JaxAdapter  # noqa: E402
from jax_td3.adapters.sbx import SBXAdapter  # noqa: E402
from jax_td3.config import OurDDPGConfig, TD3Config  # noqa: E402
from jax_td3.errors import ConfigError  # noqa: E402
from jax_td3.parity import compare_adapters  # noqa: E402
from jax_td3.parity.update_level import SharedDraws  # noqa: E402

CONFIG = TD3Config(obs_dim=3, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0), hidden=(8, 8),
                   batch_size=8)
UPDATES = 20


def _first_update(config=CONFIG):
    jax_a, sbx_a = JaxAdapter(config, "float32"), SBXAdapter(config, "float32")
    state = jax_a.state()
    sbx_a.load(state)
    batch, noise = SharedDraws.make(config, seed=0).next(config.batch_size, config.act_dim)
    batch, noise = tuple(x.astype(np.float32) for x in batch), noise.astype(np.float32)
    return state, jax_a.update(batch, noise), sbx_a.update(batch, noise)


def test_neutral_state_round_trip_is_exact():
    state = JaxAdapter(CONFIG, "float32").state()
    sbx = SBXAdapter(CONFIG, "float32")
    sbx.load(state)
    back = sbx.state()
    assert set(back) == set(state)
    for key, value in state.items():
        assert np.array_equal(back[key], value), key
        assert np.asarray(back[key]).dtype == np.asarray(value).dtype, key


def test_sbx_against_jax_agrees_on_the_critic_loss_and_differs_where_explained():
    report = compare_adapters(JaxAdapter(CONFIG, "float32"), SBXAdapter(CONFIG, "float32"), CONFIG,
                              dtype="float32", updates=UPDATES, resync=True)
    assert report.quantities["critic_loss"].max_abs == 0, report.table()
    failed = {name for name, stats in report.quantities.items() if stats.first_violation is not None}
    explained = {"critic_adam_m", "critic_adam_v", "actor_loss", "actor_adam_m", "actor_adam_v", "schedule"}
    assert "schedule" in failed and {family(n) for n in failed} <= explained, report.table()
    assert not report.passed
    assert report.quantities["schedule"].max_abs > 0   # targets move on non-actor updates (td3.py:326)


def test_critic_gradient_is_half_ours_and_targets_move_every_update():
    state, ours, theirs = _first_update()
    assert not ours["actor_updated"] and not theirs["actor_updated"]   # update 1 of policy_freq 2
    for key in (k for k in ours if family(k) == "critic_adam_m"):
        assert np.all(state[key] == 0)
        assert np.array_equal(theirs[key], 0.5 * ours[key]), key          # td3.py:219's 0.5
    for key in (k for k in ours if family(k) == "critic_adam_v"):
        assert np.array_equal(theirs[key], 0.25 * ours[key]), key
    tau = np.float32(CONFIG.tau)
    for key in (k for k in ours if family(k) in ("critic_target", "actor_target")):
        assert np.array_equal(ours[key], state[key]), key                 # Fujimoto: held still
        new = theirs[key.replace("_target", "", 1)]
        expected = new * tau + state[key] * (np.float32(1) - tau)         # optax.incremental_update, td3.py:262
        if family(key) == "critic_target":   # the fresh actor target equals the actor: Polyak keeps it
            assert not np.array_equal(theirs[key], state[key]), key
        np.testing.assert_allclose(theirs[key], expected, rtol=2e-7, atol=1e-9, err_msg=key)
    # the actor did not step, so SBX's actor target followed the unchanged actor
    assert all(np.array_equal(theirs[k], state[k]) for k in theirs if family(k) == "actor")


def test_actor_loss_is_min_of_both_critics():
    jax_a, sbx_a = JaxAdapter(CONFIG, "float32"), SBXAdapter(CONFIG, "float32")
    draws = SharedDraws.make(CONFIG, seed=0)
    seen = 0
    for _ in range(2 * CONFIG.policy_freq):
        sbx_a.load(jax_a.state())
        batch, noise = draws.next(CONFIG.batch_size, CONFIG.act_dim)
        batch, noise = tuple(x.astype(np.float32) for x in batch), noise.astype(np.float32)
        ours, theirs = jax_a.update(batch, noise), sbx_a.update(batch, noise)
        assert ours["actor_updated"] == theirs["actor_updated"]
        if ours["actor_updated"]:
            seen += 1
            # -mean(min(Q1, Q2)) >= -mean(Q1); the critics differ by Adam's eps only (~1e-4)
            assert theirs["actor_loss"] >= ours["actor_loss"] - 1e-3
    assert seen == 2


@pytest.mark.parametrize("change, setting", [
    (dict(critic_weight_decay=1e-2), "critic_weight_decay"),
    (dict(reward_scale=0.5), "reward_scale"),
    (dict(action_low=(-2.0, -1.0), action_high=(2.0, 1.0)), "action_low"),
])
def test_refuses_what_sbx_cannot_express(change, setting):
    with pytest.raises(ConfigError, match=f"`{setting}"):
        SBXAdapter(CONFIG.replace(**change), "float32")


def test_refuses_float64_and_other_algorithms():
    with pytest.raises(ConfigError, match="`dtype`"):
        SBXAdapter(CONFIG, "float64")
    ourddpg = OurDDPGConfig(obs_dim=3, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0), batch_size=8)
    with pytest.raises(ConfigError, match="`algo`"):
        SBXAdapter(ourddpg, "float32")


def test_separate_learning_rates_map_to_qf_learning_rate():
    sbx = SBXAdapter(CONFIG.replace(actor_lr=1e-3), "float32")
    assert sbx.model.learning_rate == 1e-3 and sbx.model.qf_learning_rate == CONFIG.critic_lr
