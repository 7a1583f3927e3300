"""SBX's TD3 and DDPG (sbx-rl 0.28.0, their own ``train`` / ``_train``) against our JAX update, update by update.

SBX's update differs from Fujimoto's in three ways (sbx/td3/td3.py), each a setting of ours
(``SBX_SETTINGS``): the critic loss is half the sum of the MSEs (line 219: ``critic_loss_scale=0.5``),
``soft_update`` runs on every update after the critic step and before the delayed actor step (line
326: ``target_update="every_update"``), and the actor ascends ``min(Q1, Q2)`` (lines 249-251:
``actor_q="min"``). With the three set, SBX and our update agree to float64 rounding (SBX's
parameters held in float64, JAX's x64 on) and to float32 rounding in float32. With any one of them
at Fujimoto's value, the comparison fails at the first update where that difference acts, on the
quantity it acts on. Not reported by SBX (inside its ``fori_loop``/``value_and_grad``): target
action, target Q, current Q, gradients, actor Q.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sbx", reason="sbx-rl not installed (extra `thirdparty`)")

import jax  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.type_aliases import ReplayBufferSamples  # noqa: E402

from jax_td3.adapters import adapter_settings  # noqa: E402
from jax_td3.adapters.base import family  # noqa: E402
from jax_td3.adapters.jax import JaxAdapter  # noqa: E402
from jax_td3.adapters.sbx import SBX_SETTINGS, SBXAdapter, _x32, load_model, make_model, model_state  # noqa: E402
from jax_td3.config import DDPGConfig, OurDDPGConfig, TD3Config  # noqa: E402
from jax_td3.errors import ConfigError  # noqa: E402
from jax_td3.parity import compare_adapters  # noqa: E402
from jax_td3.parity.update_level import SharedDraws  # noqa: E402

# The float64 comparisons need JAX's x64 mode, which the library leaves to its caller (SBX's own model is
# built and its float32 steps run with x64 off by the adapter, whatever the caller's setting).
pytestmark = pytest.mark.usefixtures("x64")

BOX = dict(obs_dim=3, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0), hidden=(8, 8), batch_size=8)
CONFIG = TD3Config(**BOX)                                  # Fujimoto's settings
SBX_CONFIG = CONFIG.replace(**SBX_SETTINGS)                # SBX's TD3
OURDDPG = OurDDPGConfig(**BOX).replace(**SBX_SETTINGS)     # SBX's DDPG: its TD3, one critic, no delay or noise
UPDATES = 20
# float64: both sides are JAX on the same inputs; measured max_rel 4e-16 over 200 updates (16-16, batch 16).
FLOAT64_TIGHT = 1e-12


def _draws(config, dtype, seed=0):
    draws = SharedDraws.make(config, seed)
    while True:
        batch, noise = draws.next(config.batch_size, config.act_dim)
        yield tuple(x.astype(dtype) for x in batch), noise.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_neutral_state_round_trip_is_exact(dtype):
    state = JaxAdapter(CONFIG, dtype).state()
    sbx = SBXAdapter(CONFIG, dtype)
    sbx.load(state)
    back = sbx.state()
    assert set(back) == set(state)
    for key, value in state.items():
        assert np.array_equal(back[key], value), key
        assert np.asarray(back[key]).dtype == np.asarray(value).dtype, key


def test_the_settings_the_cli_applies_are_the_adapters():
    assert adapter_settings("sbx") == SBX_SETTINGS == SBXAdapter.config_settings
    assert SBX_CONFIG.critic_loss_scale == 0.5 and SBX_CONFIG.target_update == "every_update"
    assert SBX_CONFIG.actor_q == "min"


@pytest.mark.parametrize("config", [SBX_CONFIG, OURDDPG], ids=["td3", "ourddpg"])
def test_with_sbx_settings_sbx_is_our_update_to_float64_rounding(config):
    """SBX's own update on float64 parameters, free-running (no re-synchronisation) for 100 updates."""
    report = compare_adapters(JaxAdapter(config, "float64"), SBXAdapter(config, "float64"), config,
                              dtype="float64", updates=100, tol=FLOAT64_TIGHT)
    assert report.passed, report.table()
    assert report.quantities["schedule"].max_abs == 0
    assert max(s.max_rel for s in report.quantities.values()) < 1e-14, report.table()


def test_sbx_first_keeps_its_own_initialisation_in_float64():
    """SBX's initial state (float32 numbers from its Flax init) is held in float64 from the start, so the
    comparison with SBX as the first backend is as tight."""
    report = compare_adapters(SBXAdapter(SBX_CONFIG, "float64"), JaxAdapter(SBX_CONFIG, "float64"), SBX_CONFIG,
                              dtype="float64", updates=10, tol=FLOAT64_TIGHT)
    assert report.passed, report.table()


def test_with_sbx_settings_float32_agrees_to_rounding():
    """float32, re-synchronised each update. Both sides are XLA programs on the same inputs; they differ
    only in the order of a few reductions (SBX: ``mean(axis=1).sum()``, ours: ``mean(axis=(1, 2))`` then
    ``sum``), i.e. rounding of the gradients (measured max_rel 7e-8 at 16-16/batch 16). The bound
    1e-5 is the engine's forward tolerance, far below the 0.5 or 0.25 factors of a real difference."""
    report = compare_adapters(JaxAdapter(SBX_CONFIG, "float32"), SBXAdapter(SBX_CONFIG, "float32"), SBX_CONFIG,
                              dtype="float32", updates=UPDATES, resync=True)
    assert report.passed, report.table()
    assert max(s.max_rel for s in report.quantities.values()) < 1e-5, report.table()


@pytest.mark.parametrize("setting, update, quantity", [
    ("critic_loss_scale", 1, "critic_loss"),            # td3.py:219, SBX's loss is half ours
    ("target_update", 1, "critic_target.l1.weight"),    # td3.py:326, SBX's targets move on update 1
    ("actor_q", 2, "actor_loss"),                       # td3.py:249-251, first actor update
])
def test_each_difference_is_found_where_it_acts(setting, update, quantity):
    """One of SBX's settings back at Fujimoto's value: float64 finds it at its update and quantity.
    (``actor_q`` acts only where Q2 < Q1 on some sample of the batch: with initial weights from seed 1
    that is so on the first actor update; from seed 0, Q1 is the smaller on all 8 samples until update 4.)"""
    config = SBX_CONFIG.replace(**{setting: getattr(CONFIG, setting)})
    report = compare_adapters(JaxAdapter(config, "float64", seed=1), SBXAdapter(config, "float64"), config,
                              dtype="float64", updates=4, tol=FLOAT64_TIGHT)
    first = report.first_divergence
    assert first is not None and (first.update, first.quantity) == (update, quantity), report.table()
    assert first.max_rel > 1e4 * FLOAT64_TIGHT   # far above rounding (the targets move by tau * step: ~1e-6)


def test_with_fujimoto_settings_the_critic_loss_is_half_ours_and_targets_move_every_update():
    """Our defaults on the first update (critic only, policy_freq 2): SBX's loss and critic gradients are
    exactly half of ours, so from zero moments its Adam ``m`` is half and ``v`` a quarter of ours; its
    targets moved (Polyak towards the stepped critic and the unchanged actor), ours held still."""
    jax_a, sbx_a = JaxAdapter(CONFIG, "float64"), SBXAdapter(CONFIG, "float64")
    state = jax_a.state()
    sbx_a.load(state)
    batch, noise = next(_draws(CONFIG, np.float64))
    ours, theirs = jax_a.update(batch, noise), sbx_a.update(batch, noise)
    assert not ours["actor_updated"] and not theirs["actor_updated"]
    np.testing.assert_allclose(theirs["critic_loss"], 0.5 * ours["critic_loss"], rtol=1e-15)
    for key in (k for k in ours if family(k) == "critic_adam_m"):
        assert np.all(state[key] == 0)
        np.testing.assert_allclose(theirs[key], 0.5 * ours[key], rtol=1e-12, atol=1e-300, err_msg=key)
    for key in (k for k in ours if family(k) == "critic_adam_v"):
        np.testing.assert_allclose(theirs[key], 0.25 * ours[key], rtol=1e-12, atol=1e-300, err_msg=key)
    tau = CONFIG.tau
    for key in (k for k in ours if family(k) in ("critic_target", "actor_target")):
        assert np.array_equal(ours[key], state[key]), key                 # Fujimoto: held still
        new = theirs[key.replace("_target", "", 1)]
        np.testing.assert_allclose(theirs[key], new * tau + state[key] * (1 - tau), rtol=1e-15, atol=1e-300,
                                   err_msg=key)                           # optax.incremental_update, td3.py:262
    assert any(not np.array_equal(theirs[k], state[k]) for k in theirs if family(k) == "critic_target")


def test_with_fujimoto_settings_the_comparison_fails_at_update_1_on_the_critic_loss():
    report = compare_adapters(JaxAdapter(CONFIG, "float32"), SBXAdapter(CONFIG, "float32"), CONFIG,
                              dtype="float32", updates=4, resync=True)
    first = report.first_divergence
    assert first is not None and (first.update, first.quantity) == (1, "critic_loss"), report.table()
    assert report.quantities["critic_loss"].max_rel == pytest.approx(0.5, rel=1e-6)
    assert report.quantities["schedule"].first_violation == 1   # targets moved on a critic-only update


# -- the noise seam, against SBX's unpatched update ------------------------------------------------

def _unpatched_noise(key, config, it):
    """The standard normal SBX's update ``it`` draws from ``key``, and the key it leaves: SBX splits
    ``key, noise_key, _, _ = split(key, 4)`` in update_critic (td3.py:197), draws
    ``normal(noise_key, actions.shape)`` (line 200), and splits ``key, _ = split(key, 2)`` in
    update_actor (line 238) on actor updates."""
    key, noise_key, _, _ = jax.random.split(key, 4)
    noise = np.asarray(jax.random.normal(noise_key, (config.batch_size, config.act_dim)))
    if it % config.policy_freq == 0:
        key, _ = jax.random.split(key, 2)
    return noise, key


@pytest.mark.parametrize("config", [SBX_CONFIG.replace(policy_noise=1.0), OURDDPG], ids=["td3", "ourddpg"])
def test_the_noise_seam_reproduces_sbx_unpatched_train_bit_for_bit(config):
    """SBX's own jitted ``train`` (nothing replaced but its replay buffer's ``sample``), drawing its own
    noise from its key, against the adapter fed the noise SBX draws from that key: every weight, target,
    Adam moment and loss equal bit for bit, and the key chain reproduced, over 12 updates, free-running.

    ``policy_noise=1.0`` (td3): XLA folds SBX's ``normal(k) * 0.2`` into the sampler's own constant
    multiply, which can round one or two ulps away from multiplying a separately drawn normal by 0.2 (next test);
    with 1.0 that multiply vanishes on both sides, so any remaining difference would be the seam's."""
    state = JaxAdapter(config, "float32").state()
    ours = SBXAdapter(config, "float32")
    ours.load(state)
    with _x32():
        theirs = make_model(config, "float32")
        load_model(theirs, state)
        key = theirs.key
    ours.model.key = key
    draws = _draws(config, np.float32)
    for it in range(1, 13):
        batch, _ = next(draws)
        with _x32():
            noise, key = _unpatched_noise(key, config, it)
        obs, action, next_obs, reward, not_done = (torch.from_numpy(x) for x in batch)
        samples = ReplayBufferSamples(obs, action, next_obs, 1 - not_done, reward)
        theirs.replay_buffer.sample = lambda batch_size, env=None, samples=samples: samples
        theirs.logger.name_to_value.clear()
        with _x32():
            theirs.train(gradient_steps=1, batch_size=config.batch_size)
        out = ours.update(batch, noise)
        reference = model_state(theirs)
        assert [k for k in reference if not np.array_equal(reference[k], out[k])] == [], it
        assert out["critic_loss"] == np.float32(theirs.logger.name_to_value["train/critic_loss"]), it
        assert np.array_equal(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                              else key, theirs.key), it
        assert np.array_equal(theirs.key, ours.model.key), it


def test_sbx_scaled_draw_is_within_one_ulp_of_the_fed_one():
    """Why the bitwise test uses policy_noise 1: SBX's jitted ``normal(k) * 0.2`` against our seam's
    ``z * 0.2`` with ``z = normal(k)`` drawn alone differs by one or two float32 ulps on many draws
    (measured: at most 2 over these 2560), never more."""
    with _x32():
        fused = jax.jit(lambda k: jax.random.normal(k, (64, 2)) * 0.2)
        alone = jax.jit(lambda k: jax.random.normal(k, (64, 2)))
        keys = jax.random.split(jax.random.PRNGKey(0), 20)
        a = np.stack([np.asarray(fused(k)) for k in keys])
        b = np.stack([np.asarray(alone(k)) for k in keys]) * np.float32(0.2)
    ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
    assert 0 < ulps.max() <= 2


# -- what is refused ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, setting", [
    (dict(critic_weight_decay=1e-2), "critic_weight_decay"),
    (dict(reward_scale=0.5), "reward_scale"),
    (dict(action_low=(-2.0, -1.0), action_high=(2.0, 1.0)), "action_low"),
])
def test_refuses_what_sbx_cannot_express(change, setting):
    with pytest.raises(ConfigError, match=f"`{setting}"):
        SBXAdapter(CONFIG.replace(**change), "float32")


def test_refuses_other_algorithms_and_a_delayed_ddpg():
    ddpg = DDPGConfig(**{**BOX, "hidden": (8, 8)})
    with pytest.raises(ConfigError, match="`algo`"):
        SBXAdapter(ddpg, "float32")
    with pytest.raises(ConfigError, match="`policy_freq`"):
        SBXAdapter(OURDDPG.replace(policy_freq=2), "float32")


def test_separate_learning_rates_map_to_qf_learning_rate():
    sbx = SBXAdapter(CONFIG.replace(actor_lr=1e-3), "float32")
    assert sbx.model.learning_rate == 1e-3 and sbx.model.qf_learning_rate == CONFIG.critic_lr
