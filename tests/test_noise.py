"""Exploration noise: Gaussian and Ornstein-Uhlenbeck statistics with fixed seeds."""

import numpy as np

from jax_td3.noise import GaussianNoise, OrnsteinUhlenbeckNoise


def draw(noise, n, seed):
    rng, state, out = np.random.default_rng(seed), noise.init(), []
    for _ in range(n):
        x, state = noise.sample(state, rng)
        out.append(x)
    return np.array(out)


def test_gaussian_std_per_dimension_and_zero_mean():
    samples = draw(GaussianNoise(std=(0.2, 1.0)), 20_000, seed=0)
    assert samples.shape == (20_000, 2)
    # Sample std of 20,000 normals is within ~1% (1 sd ~ 0.5%); 3% is > 5 sd.
    np.testing.assert_allclose(samples.std(axis=0), [0.2, 1.0], rtol=0.03)
    assert np.all(np.abs(samples.mean(axis=0)) < 5 * np.array([0.2, 1.0]) / np.sqrt(20_000))
    # Independent steps: lag-1 correlation near 0.
    assert abs(np.corrcoef(samples[:-1, 1], samples[1:, 1])[0, 1]) < 0.03


def test_gaussian_is_the_generators_normals_scaled():
    samples = draw(GaussianNoise(std=(0.5,)), 5, seed=3)
    expected = np.random.default_rng(3).standard_normal((5, 1)) * 0.5
    np.testing.assert_array_equal(samples, expected)


def test_ou_follows_its_recursion_exactly():
    noise = OrnsteinUhlenbeckNoise(act_dim=2, theta=0.15, sigma=0.3, mu=0.5, dt=0.05)
    samples = draw(noise, 4, seed=11)
    rng, x = np.random.default_rng(11), np.zeros(2)
    for row in samples:
        x = x + 0.15 * (0.5 - x) * 0.05 + 0.3 * np.sqrt(0.05) * rng.standard_normal(2)
        np.testing.assert_array_equal(row, x)


def test_ou_stationary_std_and_autocorrelation():
    theta, sigma, dt = 1.0, 0.5, 0.1
    samples = draw(OrnsteinUhlenbeckNoise(act_dim=1, theta=theta, sigma=sigma, dt=dt), 60_000, seed=1)[1_000:, 0]
    # Euler-Maruyama's exact stationary law: AR(1) with phi = 1 - theta dt.
    phi = 1 - theta * dt
    stationary_std = sigma * np.sqrt(dt / (1 - phi ** 2))
    np.testing.assert_allclose(samples.std(), stationary_std, rtol=0.05)
    np.testing.assert_allclose(np.corrcoef(samples[:-1], samples[1:])[0, 1], phi, atol=0.01)
    assert abs(samples.mean()) < 0.05


def test_ou_seed_ddpg_settings_are_small_and_correlated():
    # The DDPG notebook's OU (theta 0.1, dt 0.01, sigma 0.1): each step moves by ~0.01.
    samples = draw(OrnsteinUhlenbeckNoise(act_dim=1), 2_000, seed=0)[:, 0]
    steps = np.diff(samples)
    np.testing.assert_allclose(steps.std(), 0.1 * np.sqrt(0.01), rtol=0.1)
