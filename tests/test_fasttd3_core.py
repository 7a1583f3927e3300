"""FastTD3's pure pieces (jax_td3.fasttd3): the observation normaliser, the categorical projection and
one update, against NumPy re-derivations and the properties the rules promise."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jax_td3.config import FastTD3Config
from jax_td3.fasttd3 import losses, networks
from jax_td3.fasttd3.normalizer import COUNT_LIMIT, EPS, normalize, normalizer_init, normalizer_update
from jax_td3.fasttd3.state import Batch
from jax_td3.fasttd3.update import (
    clip_by_global_norm_if_positive,
    init_train_state,
    learning_rates,
    update,
    update_from_key,
    update_with_internals,
)
from jax_td3.update import adam_state

OBS_DIM, ACT_DIM, BATCH, ATOMS = 3, 2, 6, 11
CONFIG = FastTD3Config(obs_dim=OBS_DIM, act_dim=ACT_DIM, action_low=(-1.0, -2.0), action_high=(1.0, 2.0),
                       hidden=(8, 8), critic_hidden=(8, 8), batch_size=BATCH, num_atoms=ATOMS, v_min=-5.0,
                       v_max=5.0, policy_freq=1).validate()
# The x64 fixture is a switch that stays on for all the inputs of one test, so sharing it is intended.
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Compiled once per config (the config is static) and shared by the tests: eager dispatch of every small
# operation costs more than the compilation on these sizes.
STEP = jax.jit(update_with_internals)  # the config a pytree argument: configs differing in numbers share it
INIT = jax.jit(init_train_state, static_argnums=(0, 2))
PROJECT = jax.jit(losses.categorical_projection)


def key(seed):
    """A PRNG key of the "rbg" kind: initialisation compiles in a fraction of threefry's time on CPU."""
    return jax.random.key(seed, impl="rbg")


def numpy_normalizer_update(mean, var, count, x):
    """FastTD3's rule written out in NumPy: the between-batch term uses the updated mean."""
    n = x.shape[0]
    batch_mean, batch_var = x.mean(axis=0), x.var(axis=0)
    new_count = count + n
    new_mean = mean + (batch_mean - mean) * (n / new_count)
    delta2 = batch_mean - new_mean
    m2 = var * count + batch_var * n + delta2 ** 2 * (count * n / new_count)
    return new_mean, m2 / new_count, new_count


def test_normaliser_follows_fasttd3s_rule_over_several_batches(x64):
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 4)) * np.array([1, 10, 0.1, 1]) for n in (5, 1, 17, 8)]
    state = normalizer_init(4, jnp.float64)
    assert np.all(state.mean == 0) and np.all(state.var == 1) and int(state.count) == 0
    mean, var, count = np.zeros(4), np.ones(4), 0
    step = jax.jit(normalizer_update)
    for x in batches:
        state = step(state, x)
        mean, var, count = numpy_normalizer_update(mean, var, count, x)
        np.testing.assert_allclose(state.mean, mean, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(state.var, var, rtol=1e-13)
        assert int(state.count) == count and state.mean.dtype == jnp.float64
    seen = np.concatenate(batches)
    np.testing.assert_allclose(state.mean, seen.mean(axis=0), rtol=1e-12, atol=1e-12)
    obs = rng.normal(size=(3, 4))
    np.testing.assert_allclose(normalize(state, obs), (obs - mean) / (np.sqrt(var) + 1e-2), rtol=1e-13)
    assert EPS == 1e-2


def test_normaliser_variance_is_exact_for_one_batch_and_falls_short_of_it_after_two(x64):
    """From empty, one batch gives its population variance. After a second batch, FastTD3's rule adds
    delta^2 * na^3 nb / n^3 where the population variance of all rows (Chan et al.) adds delta^2 * na nb / n:
    it is below the plain variance by exactly delta^2 na nb / n (1 - na^2 / n^2), delta the difference of
    the two batches' means."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.0, 1.0, (7, 2)), rng.normal(4.0, 3.0, (5, 2))
    state = normalizer_update(normalizer_init(2, jnp.float64), a)
    np.testing.assert_allclose(state.var, a.var(axis=0), rtol=1e-13)
    state = normalizer_update(state, b)
    both = np.concatenate([a, b])
    na, nb, n = 7, 5, 12
    delta = b.mean(axis=0) - a.mean(axis=0)
    shortfall = delta ** 2 * na * nb / n * (1 - na ** 2 / n ** 2) / n
    np.testing.assert_allclose(state.mean, both.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(state.var, both.var(axis=0) - shortfall, rtol=1e-12)
    assert np.all(shortfall > 0.1)


def test_normaliser_count_saturates_at_the_int32_limit_with_the_weight_of_the_saturated_count(x64):
    """Near 2^31 - 1 the int32 count used to wrap negative (4,096 envs x 600k vector steps get there). It
    stops at COUNT_LIMIT instead: a batch of N rows is folded in as if COUNT_LIMIT - N had been seen, so it
    moves mean and var by exactly the weight N / COUNT_LIMIT, and keeps doing so once saturated."""
    rng = np.random.default_rng(2)
    rows = 8
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([1.0, 4.0, 0.25])
    state = normalizer_init(3, jnp.float64)._replace(mean=jnp.asarray(mean), var=jnp.asarray(var),
                                                     count=jnp.asarray(COUNT_LIMIT - 3, jnp.int32))
    step = jax.jit(normalizer_update)
    for _ in range(2):   # from 3 short of the limit, then from the limit itself
        x = rng.normal(1e6, 1.0, (rows, 3))   # far from the mean, so that the weight shows in float64
        state = step(state, x)
        assert state.count.dtype == jnp.int32 and int(state.count) == COUNT_LIMIT
        expected_mean, expected_var, _ = numpy_normalizer_update(mean, var, COUNT_LIMIT - rows, x)
        moved = np.asarray(state.mean) - mean
        np.testing.assert_allclose(moved, (x.mean(axis=0) - mean) * rows / COUNT_LIMIT, rtol=1e-12)
        np.testing.assert_allclose(moved, expected_mean - mean, rtol=1e-12)
        np.testing.assert_allclose(state.var, expected_var, rtol=1e-12)
        assert np.all(np.asarray(state.var) > 1e3)   # the between-batch term counted: the test sees the count
        mean, var = np.asarray(state.mean), np.asarray(state.var)


def numpy_projection(probs, reward, bootstrap, discount, z, v_min, v_max):
    """The projection one sample and one atom at a time, FastTD3's on-atom rule included. b is kept within
    [0, atoms - 1]: where (v_max - v_min) / delta_z rounds one ulp above atoms - 1, a target at v_max would
    otherwise reach past the last atom (FastTD3 indexes out of its row there)."""
    batch, atoms = probs.shape
    delta_z = (v_max - v_min) / (atoms - 1)
    out = np.zeros_like(probs)
    for i in range(batch):
        for j in range(atoms):
            tz = min(max(reward[i] + bootstrap[i] * discount[i] * z[j], v_min), v_max)
            b = min((tz - v_min) / delta_z, atoms - 1)
            lo, up = math.floor(b), math.ceil(b)
            if lo == up:
                lo, up = (lo - 1, up) if lo > 0 else (lo, up + 1)
            out[i, lo] += probs[i, j] * (up - b)
            out[i, up] += probs[i, j] * (b - lo)
    return out


def projection_atol(atoms):
    """Absolute tolerance of a projected mass: the weights u - b and b - l carry the rounding of b, up to
    atoms - 1, which differs by a few ulps where XLA fuses reward + bootstrap * discount * z into one
    multiply-add and NumPy does not."""
    return 8 * np.finfo(np.float64).eps * atoms


def random_probs(rng, batch, atoms, dtype=np.float64):
    logits = rng.normal(0.0, 2.0, (batch, atoms))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def project(probs, reward, bootstrap, discount, v_min, v_max, z=None):
    """The library's projection (compiled) on ``linspace(v_min, v_max, atoms)`` or on the support ``z``."""
    dtype = probs.dtype
    z = jnp.linspace(v_min, v_max, probs.shape[1], dtype=dtype) if z is None else jnp.asarray(z, dtype)
    cast = lambda x: jnp.asarray(x, dtype)
    return PROJECT(cast(probs), cast(reward), cast(bootstrap), cast(discount), z, cast(v_min), cast(v_max))


@PROPERTY
@given(seed=st.integers(0, 2 ** 31), atoms=st.sampled_from([2, 5, 11, 51]),
       v_min=st.floats(-300, 50), width=st.floats(0.5, 500), reward_scale=st.floats(0.0, 400))
def test_projection_equals_the_per_atom_rule_and_conserves_mass(x64, seed, atoms, v_min, width, reward_scale):
    rng = np.random.default_rng(seed)
    probs = random_probs(rng, 4, atoms)
    reward = rng.normal(0.0, reward_scale, 4)
    bootstrap = rng.integers(0, 2, 4).astype(np.float64)
    discount = rng.uniform(0.5, 1.0, 4)
    v_max = v_min + width
    got = np.asarray(project(probs, reward, bootstrap, discount, v_min, v_max))
    z = np.asarray(jnp.linspace(v_min, v_max, atoms, dtype=jnp.float64))
    np.testing.assert_allclose(got, numpy_projection(probs, reward, bootstrap, discount, z, v_min, v_max),
                               rtol=1e-12, atol=projection_atol(atoms))
    np.testing.assert_allclose(got.sum(axis=1), probs.sum(axis=1), rtol=1e-13)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-13)
    assert np.all(got >= 0)


def test_a_target_at_v_max_stays_on_the_last_atom_where_the_support_rounds_up(x64):
    """For this support (v_max - v_min) / delta_z is 50.000000000000007, one ulp above the last atom's index:
    the mass of targets at v_max still lands on the last atom, none is lost."""
    v_min, v_max, atoms = -120.88077284468329, 316.1461800131642, 51
    assert (v_max - v_min) / ((v_max - v_min) / (atoms - 1)) > atoms - 1
    probs = random_probs(np.random.default_rng(0), 2, atoms)
    got = np.asarray(project(probs, np.array([v_max, 1e3]), np.array([0.0, 1.0]), np.ones(2), v_min, v_max))
    np.testing.assert_array_equal(got[:, :-1], 0.0)
    np.testing.assert_allclose(got[:, -1], 1.0, rtol=1e-15)


@PROPERTY
@given(atoms=st.sampled_from([2, 3, 11, 30]), lowest=st.integers(-40, 40), data=st.data())
def test_a_target_on_an_atom_lands_on_that_atom(x64, atoms, lowest, data):
    """An integer support (delta_z = 1, all arithmetic exact): a reward on atom k with no bootstrap puts all
    the mass on atom k, the first and last atoms included (FastTD3's on-atom rule); reward 0 with
    bootstrap and discount 1 maps every atom onto itself (the projection is the identity)."""
    k = data.draw(st.integers(0, atoms - 1))
    probs = random_probs(np.random.default_rng(atoms * 1000 + k), 3, atoms)
    v_min, v_max = float(lowest), float(lowest + atoms - 1)
    z = np.arange(atoms, dtype=np.float64) + lowest
    got = np.asarray(project(probs, np.full(3, z[k]), np.zeros(3), np.full(3, 0.9), v_min, v_max, z))
    np.testing.assert_array_equal(np.delete(got, k, axis=1), 0.0)
    np.testing.assert_allclose(got[:, k], 1.0, rtol=1e-15)  # the sum of probs: 1 to rounding
    identity = np.asarray(project(probs, np.zeros(3), np.ones(3), np.ones(3), v_min, v_max, z))
    np.testing.assert_array_equal(identity, probs)


@PROPERTY
@given(seed=st.integers(0, 2 ** 31), excess=st.floats(1e-6, 1e6), bootstrap=st.sampled_from([0.0, 1.0]))
def test_targets_beyond_the_support_pile_on_the_end_atoms(x64, seed, excess, bootstrap):
    rng = np.random.default_rng(seed)
    probs = random_probs(rng, 2, ATOMS)
    v_min, v_max = -5.0, 5.0
    shift = bootstrap * 0.99 * 5.0  # the largest |bootstrap * discount * z|
    above = np.asarray(project(probs, np.full(2, v_max + shift + excess), np.full(2, bootstrap), np.full(2, 0.99),
                               v_min, v_max))
    below = np.asarray(project(probs, np.full(2, v_min - shift - excess), np.full(2, bootstrap), np.full(2, 0.99),
                               v_min, v_max))
    np.testing.assert_array_equal(above[:, :-1], 0.0)
    np.testing.assert_array_equal(below[:, 1:], 0.0)
    np.testing.assert_allclose(above[:, -1], 1.0, rtol=1e-15)
    np.testing.assert_allclose(below[:, 0], 1.0, rtol=1e-15)


@PROPERTY
@given(seed=st.integers(0, 2 ** 31), fraction=st.floats(0.0, 1.0))
def test_without_bootstrap_the_reward_splits_between_its_two_neighbouring_atoms(x64, seed, fraction):
    """bootstrap 0: every atom shifts to the reward, so the mass (1) splits between the atoms l = floor(b) and
    l + 1 as (l + 1 - b, b - l) with b = (reward - v_min) / delta_z, whatever ``probs`` was."""
    rng = np.random.default_rng(seed)
    v_min, v_max = -5.0, 5.0
    delta_z = (v_max - v_min) / (ATOMS - 1)
    reward = v_min + fraction * (v_max - v_min)
    b = (reward - v_min) / delta_z
    got = np.asarray(project(random_probs(rng, 1, ATOMS), np.array([reward]), np.zeros(1), np.ones(1),
                             v_min, v_max))[0]
    lo = min(math.floor(b), ATOMS - 2)
    if b == lo and lo > 0:  # on an atom (not the first): the pair is (lo - 1, lo) with all mass on lo
        lo -= 1
    expected = np.zeros(ATOMS)
    expected[lo], expected[lo + 1] = lo + 1 - b, b - lo
    np.testing.assert_allclose(got, expected, atol=1e-15)
    assert np.count_nonzero(got) <= 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_projection_keeps_shape_and_dtype(dtype):
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(3)
    probs = random_probs(rng, 5, ATOMS, dtype)
    got = project(probs, rng.normal(0, 3, 5), rng.integers(0, 2, 5), np.full(5, 0.97), -5.0, 5.0)
    assert got.shape == (5, ATOMS) and got.dtype == dtype
    tolerance = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(np.asarray(got).sum(axis=1), probs.sum(axis=1), rtol=tolerance)
    identity = project(probs, np.zeros(5), np.ones(5), np.ones(5), -5.0, 5.0, np.arange(-5.0, 6.0))
    assert identity.dtype == dtype
    np.testing.assert_array_equal(identity, probs)


def make_batch(rng, dtype, batch=BATCH):
    cast = lambda x: np.asarray(x, dtype)
    return Batch(obs=cast(rng.normal(2.0, 3.0, (batch, OBS_DIM))),
                 action=cast(rng.uniform(-1, 1, (batch, ACT_DIM)) * np.array([1.0, 2.0])),
                 next_obs=cast(rng.normal(2.0, 3.0, (batch, OBS_DIM))),
                 reward=cast(rng.normal(0.0, 1.0, batch)), bootstrap=cast(rng.integers(0, 2, batch)),
                 discount=cast(np.full(batch, 0.99 ** 3)))


def seen_state(seed=0):
    """A fresh float64 train state whose normaliser has seen some observations (normalising is not the
    identity). Every config of these tests has CONFIG's networks, so one initialisation serves them all."""
    state = INIT(CONFIG, key(seed), jnp.float64)
    rows = np.random.default_rng(9).normal(2.0, 3.0, (50, OBS_DIM))
    return state._replace(obs_normalizer=normalizer_update(state.obs_normalizer, rows))


def leaves_close(a, b, **kw):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **kw)


def leaves_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_init_state_targets_copy_and_networks_follow_fasttd3s_init(x64):
    state = INIT(CONFIG, key(1), jnp.float64)
    leaves_equal(state.critic_target_params, state.critic_params)
    assert {x.dtype for x in jax.tree_util.tree_leaves(state)} == {np.dtype("float64"), np.dtype("int32")}
    actor = state.actor_params["params"]
    assert np.all(actor["l3"]["bias"] == 0) and 0.002 < np.std(actor["l3"]["kernel"]) < 0.02  # N(0, 0.01^2)
    assert np.max(np.abs(actor["l1"]["kernel"])) <= 1 / math.sqrt(OBS_DIM)
    critic = state.critic_params["params"]
    assert critic["l1"]["kernel"].shape == (2, OBS_DIM + ACT_DIM, 8) and critic["l3"]["kernel"].shape == (2, 8, ATOMS)
    assert np.max(np.abs(critic["l3"]["kernel"])) <= 1 / math.sqrt(8)
    assert not np.array_equal(critic["l1"]["kernel"][0], critic["l1"]["kernel"][1])
    assert int(adam_state(state.critic_opt_state).count) == 0 and int(state.obs_normalizer.count) == 0
    with_ln = jax.eval_shape(lambda: init_train_state(CONFIG.replace(critic_layer_norm=True), jax.random.key(1)))
    assert with_ln.critic_params["params"]["ln1"]["scale"].shape == (2, 8)


def test_one_update_in_float64(x64):
    """Params move, the normaliser does not, the critic target is Polyak of the new critic, and the
    internals agree with the rules written out in NumPy."""
    config = CONFIG.replace(tau=0.3, reward_scale=0.5, critic_loss_scale=0.7)
    state = seen_state()
    batch = make_batch(np.random.default_rng(0), np.float64)
    noise = np.random.default_rng(1).normal(size=(BATCH, ACT_DIM))
    new, metrics, internals = STEP(config, state, batch, noise)

    assert int(new.step) == 1 and bool(metrics["actor_updated"])
    assert not np.allclose(new.actor_params["params"]["l1"]["kernel"], state.actor_params["params"]["l1"]["kernel"])
    assert not np.allclose(new.critic_params["params"]["l1"]["kernel"], state.critic_params["params"]["l1"]["kernel"])
    leaves_equal(new.obs_normalizer, state.obs_normalizer)
    # Equal to rounding (the compiled update may fuse the product and the sum into one multiply-add).
    leaves_close(new.critic_target_params, optax.incremental_update(new.critic_params, state.critic_target_params, 0.3),
                 rtol=1e-15, atol=1e-17)

    stats = state.obs_normalizer
    norm = lambda x: (x - np.asarray(stats.mean)) / (np.sqrt(np.asarray(stats.var)) + 1e-2)
    scale = np.array([1.0, 2.0])
    mu_next = networks.actor_action(config, state.actor_params, norm(batch.next_obs))
    expected_action = np.clip(mu_next + np.clip(noise * 0.001 * scale, -0.5 * scale, 0.5 * scale), -scale, scale)
    np.testing.assert_allclose(internals["target_action"], expected_action, rtol=1e-14)

    z = np.linspace(-5.0, 5.0, ATOMS)
    target_logits = networks.critic_logits(config, state.critic_target_params, norm(batch.next_obs), expected_action)
    projected = [numpy_projection(np.asarray(jax.nn.softmax(target_logits[i])), batch.reward * 0.5, batch.bootstrap,
                                  batch.discount, z, -5.0, 5.0) for i in range(2)]
    np.testing.assert_allclose(internals["projected"], projected, rtol=1e-12, atol=projection_atol(ATOMS))
    first = (projected[0] @ z) < (projected[1] @ z)
    np.testing.assert_array_equal(internals["cdq_choice"], first)
    chosen = np.where(first[:, None], projected[0], projected[1])
    np.testing.assert_allclose(internals["target_dist"], [chosen, chosen], rtol=1e-12, atol=projection_atol(ATOMS))

    logits = np.asarray(networks.critic_logits(config, state.critic_params, norm(batch.obs), batch.action))
    np.testing.assert_allclose(internals["critic_logits"], logits, rtol=1e-13)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    critic_loss = 0.7 * sum(np.mean(-np.sum(chosen * log_softmax[i], axis=-1)) for i in range(2))
    np.testing.assert_allclose(metrics["critic_loss"], critic_loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["q_mean"], np.mean(np.exp(log_softmax[0]) @ z), rtol=1e-12)

    # First AdamW step from zero moments: direction g / (|g| + eps) (bias-corrected), plus weight_decay * p.
    expected_critic = jax.tree_util.tree_map(
        lambda p, g: p - 3e-4 * (g / (np.abs(g) + 1e-8) + 0.1 * p), state.critic_params, internals["critic_grads"])
    leaves_close(new.critic_params, expected_critic, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(internals["critic_grad_norm"], optax.tree.norm(internals["critic_grads"]), rtol=1e-14)
    assert float(internals["critic_lr"]) == 3e-4 and float(internals["actor_lr"]) == 3e-4

    new_probs = jax.nn.softmax(networks.critic_logits(
        config, new.critic_params, norm(batch.obs), networks.actor_action(config, state.actor_params, norm(batch.obs))))
    actor_q = np.minimum(np.asarray(new_probs[0]) @ z, np.asarray(new_probs[1]) @ z)
    np.testing.assert_allclose(internals["actor_q"], actor_q, rtol=1e-12)
    np.testing.assert_allclose(metrics["actor_loss"], -actor_q.mean(), rtol=1e-12)
    assert float(internals["actor_grad_norm"]) > 0


def test_clipped_double_q_on_and_off(x64):
    state = seen_state()
    batch = make_batch(np.random.default_rng(4), np.float64)
    noise = np.zeros((BATCH, ACT_DIM))
    _, on_metrics, on = STEP(CONFIG, state, batch, noise)
    _, off_metrics, off = STEP(CONFIG.replace(use_cdq=False), state, batch, noise)
    np.testing.assert_array_equal(on["projected"], off["projected"])
    np.testing.assert_array_equal(on["target_dist"][0], on["target_dist"][1])
    np.testing.assert_array_equal(off["target_dist"], off["projected"])
    assert 0 < int(np.sum(on["cdq_choice"])) < BATCH  # each critic's projection is taken somewhere
    assert float(on_metrics["critic_loss"]) != float(off_metrics["critic_loss"])
    assert float(on_metrics["actor_loss"]) != float(off_metrics["actor_loss"])
    # The actor's value under each rule, on the same critics: the minimum or the mean of the two.
    z = np.linspace(-5.0, 5.0, ATOMS)
    obs = normalize(state.obs_normalizer, batch.obs)
    _, q_min = losses.actor_loss(CONFIG, state.actor_params, state.critic_params, obs)
    _, q_mean = losses.actor_loss(CONFIG.replace(use_cdq=False), state.actor_params, state.critic_params, obs)
    probs = jax.nn.softmax(networks.critic_logits(CONFIG, state.critic_params, obs,
                                                  networks.actor_action(CONFIG, state.actor_params, obs)))
    q1, q2 = np.asarray(probs[0]) @ z, np.asarray(probs[1]) @ z
    np.testing.assert_allclose(q_min, np.minimum(q1, q2), rtol=1e-13)
    np.testing.assert_allclose(q_mean, (q1 + q2) / 2, rtol=1e-13)


def test_gradient_clipping_rule():
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    clip = lambda max_norm: clip_by_global_norm_if_positive(max_norm).update(grads, optax.EmptyState())[0]
    leaves_equal(clip(0.0), grads)
    leaves_equal(clip(10.0), grads)
    leaves_close(clip(1.0), {"a": jnp.array([0.6, 0.0]), "b": jnp.array([[0.8]])}, rtol=1e-6)
    leaves_close(jax.vmap(clip)(jnp.array([0.0, 2.5])),
                 {"a": jnp.array([[3.0, 0.0], [1.5, 0.0]]), "b": jnp.array([[[4.0]], [[2.0]]])}, rtol=1e-6)


def test_an_update_with_clipping_steps_the_clipped_gradient(x64):
    """Clipping scales the gradient that Adam sees: the first step's g / (|g| + eps) shows the scale through
    eps only, so compare the second moments Adam stores, (1 - b2) g^2."""
    state = seen_state()
    batch = make_batch(np.random.default_rng(5), np.float64)
    new, _, internals = STEP(CONFIG.replace(max_grad_norm=1e-3), state, batch, np.zeros((BATCH, ACT_DIM)))
    norm = float(internals["critic_grad_norm"])
    assert norm > 1e-3
    clipped = jax.tree_util.tree_map(lambda g: g / norm * 1e-3, internals["critic_grads"])
    leaves_close(adam_state(new.critic_opt_state).nu, jax.tree_util.tree_map(lambda g: 0.001 * g ** 2, clipped),
                 rtol=1e-12, atol=1e-300)


def test_learning_rate_schedules(x64):
    constant = CONFIG.replace(actor_lr=1e-3, critic_lr=2e-3, lr_schedule_updates=100)
    assert [float(x) for x in learning_rates(constant, 57)] == [1e-3, 2e-3]
    cosine = constant.replace(actor_lr_end=1e-4, critic_lr_end=5e-4)
    quarter = (1 + math.cos(math.pi / 4)) / 2
    for step, actor, critic in ((0, 1e-3, 2e-3), (50, 5.5e-4, 1.25e-3), (100, 1e-4, 5e-4), (250, 1e-4, 5e-4),
                                (25, 1e-4 + 9e-4 * quarter, 5e-4 + 1.5e-3 * quarter)):
        got = jax.jit(learning_rates, static_argnums=0)(cosine, jnp.asarray(step, jnp.int32))
        np.testing.assert_allclose([float(x) for x in got], [actor, critic], rtol=1e-14)
    assert [float(x) for x in learning_rates(cosine.replace(lr_schedule_updates=0), 50)] == [1e-3, 2e-3]


SWEEPABLE = CONFIG.replace(policy_freq=2, max_grad_norm=0.5, actor_lr_end=1e-4, critic_lr_end=1e-5,
                           lr_schedule_updates=10)


def test_the_actor_moves_only_on_every_policy_freq_th_update_and_lrs_follow_the_schedule(x64):
    state = seen_state()
    rng = np.random.default_rng(2)
    first, metrics, internals = STEP(SWEEPABLE, state, make_batch(rng, np.float64), np.zeros((BATCH, ACT_DIM)))
    leaves_equal(first.actor_params, state.actor_params)
    leaves_equal(first.actor_opt_state, state.actor_opt_state)
    assert not bool(metrics["actor_updated"]) and float(metrics["actor_loss"]) == 0
    assert float(internals["actor_grad_norm"]) == 0 and np.all(internals["actor_q"] == 0)
    assert not np.allclose(first.critic_params["params"]["l2"]["kernel"], state.critic_params["params"]["l2"]["kernel"])
    assert float(metrics["actor_lr"]) == 3e-4 and float(metrics["critic_lr"]) == 3e-4  # the first update: lr
    second, metrics, _ = STEP(SWEEPABLE, first, make_batch(rng, np.float64), np.zeros((BATCH, ACT_DIM)))
    assert bool(metrics["actor_updated"]) and int(second.step) == 2
    assert not np.allclose(second.actor_params["params"]["l1"]["kernel"], first.actor_params["params"]["l1"]["kernel"])
    assert int(adam_state(second.actor_opt_state).count) == 1 and int(adam_state(second.critic_opt_state).count) == 2
    tenth = (1 + math.cos(math.pi / 10)) / 2  # the second update: t = 1 of T = 10
    np.testing.assert_allclose([float(metrics["actor_lr"]), float(metrics["critic_lr"])],
                               [1e-4 + 2e-4 * tenth, 1e-5 + 2.9e-4 * tenth], rtol=1e-14)


def test_vmap_over_two_taus_equals_two_updates(x64):
    """The config as a pytree argument, every number batched (as a sweep passes it) and tau differing:
    initialisation and update under vmap equal each agent's own."""
    batch = make_batch(np.random.default_rng(7), np.float64)
    noise = np.random.default_rng(8).normal(size=(BATCH, ACT_DIM))
    taus = [0.1, 0.6]
    swept = jax.tree_util.tree_map(lambda x: np.full((2,), x, np.float64), SWEEPABLE)
    swept = dataclasses.replace(swept, tau=np.array(taus))
    keys = jax.random.split(key(3), 2)

    @jax.jit
    def init_and_update(swept, keys):
        states = jax.vmap(lambda c, k: init_train_state(c, k, jnp.float64))(swept, keys)
        return states, jax.vmap(update, in_axes=(0, 0, None, None))(swept, states, batch, noise)

    states, (both, metrics) = init_and_update(swept, keys)
    # Agent 0 against the update compiled with its config static, agent 1 with its config a pytree argument.
    steps = [jax.jit(update_with_internals, static_argnums=0), STEP]
    for i, tau in enumerate(taus):
        agent = lambda tree: jax.tree_util.tree_map(lambda x: x[i], tree)
        one, one_metrics, _ = steps[i](SWEEPABLE.replace(tau=tau), agent(states), batch, noise)
        leaves_close(agent(both), one, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(metrics["critic_loss"][i], one_metrics["critic_loss"], rtol=1e-12)
    assert not np.allclose(states.critic_params["params"]["l1"]["kernel"][0],
                           states.critic_params["params"]["l1"]["kernel"][1])


def test_layer_norm_and_bfloat16_products():
    """The options FastTD3 offers: LayerNorm in the critics, bfloat16 matrix products (parameters, losses
    and metrics stay float32)."""
    config = CONFIG.replace(critic_layer_norm=True, bfloat16_matmuls=True)
    state = INIT(config, key(4), jnp.float32)
    batch = make_batch(np.random.default_rng(11), np.float32)
    step = lambda s: update_with_internals(config, s, batch, np.zeros((BATCH, ACT_DIM), np.float32))
    jaxpr = str(jax.make_jaxpr(step)(state))
    assert "bf16" in jaxpr and "ln1" not in jaxpr
    new, metrics, internals = STEP(config, state, batch, np.zeros((BATCH, ACT_DIM), np.float32))
    assert all(np.isfinite(v) for v in metrics.values())
    assert {x.dtype for x in jax.tree_util.tree_leaves(new)} == {np.dtype("float32"), np.dtype("int32")}
    assert internals["critic_logits"].dtype == np.float32 and metrics["critic_loss"].dtype == np.float32
    assert not np.allclose(new.critic_params["params"]["ln1"]["bias"], 0)


def test_hundreds_of_updates_on_a_tiny_problem_stay_finite_and_learn():
    """A one-step problem (no bootstrap), reward 1 - |a / scale - 0.5|^2, in float32 with the config a
    compile-time constant: 300 updates keep everything finite and the critics' loss falls by half."""
    config = CONFIG.replace(policy_freq=2, v_min=-4.0, v_max=2.0, actor_lr=3e-3, critic_lr=3e-3)
    rng = np.random.default_rng(10)
    n = 256
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    action = (rng.uniform(-1, 1, (n, ACT_DIM)) * np.array([1.0, 2.0])).astype(np.float32)
    reward = (1 - np.sum((action / np.array([1.0, 2.0]) - 0.5) ** 2, axis=1)).astype(np.float32)
    data = Batch(obs, action, obs, reward, np.zeros(n, np.float32), np.ones(n, np.float32))

    @jax.jit
    def train(seed_key):
        state = init_train_state(config, seed_key)
        state = state._replace(obs_normalizer=normalizer_update(state.obs_normalizer, obs))

        def one(state, step_key):
            pick, noise = jax.random.split(step_key)
            rows = jax.random.randint(pick, (64,), 0, n)
            return update_from_key(config, state, jax.tree_util.tree_map(lambda x: jnp.asarray(x)[rows], data), noise)
        return jax.lax.scan(one, state, jax.random.split(seed_key, 300))

    new, metrics = train(key(0))
    assert all(np.all(np.isfinite(v)) for v in metrics.values())
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new))
    critic_loss = np.asarray(metrics["critic_loss"])
    assert critic_loss[-20:].mean() < 0.5 * critic_loss[:20].mean()
    assert int(new.step) == 300 and int(adam_state(new.actor_opt_state).count) == 150
