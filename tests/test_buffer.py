"""Host replay buffer: ring overwrite, uniform sampling with replacement over the filled part."""

import numpy as np
import pytest

from jax_td3.buffer import ReplayBuffer


def add_numbered(buffer, n, start=0):
    for i in range(start, start + n):
        buffer.add(obs=[i, i], action=[-i], next_obs=[i + 0.5, i + 0.5], reward=10 * i, not_done=i % 2)


def test_ring_overwrites_oldest_and_keeps_slots():
    buffer = ReplayBuffer(capacity=3, obs_dim=2, act_dim=1)
    add_numbered(buffer, 5)
    assert (len(buffer), buffer.position) == (3, 2)
    # Transitions 0..4 into 3 slots: slot 0 <- 3, slot 1 <- 4, slot 2 <- 2.
    np.testing.assert_array_equal(buffer.arrays["obs"][:, 0], [3, 4, 2])
    np.testing.assert_array_equal(buffer.arrays["reward"][:, 0], [30, 40, 20])
    np.testing.assert_array_equal(buffer.arrays["not_done"][:, 0], [1, 0, 0])
    last = buffer.last(3)
    np.testing.assert_array_equal(last.obs[:, 0], [2, 3, 4])  # oldest first


def test_gather_layout_matches_batch():
    buffer = ReplayBuffer(capacity=10, obs_dim=2, act_dim=1, dtype=np.float64)
    add_numbered(buffer, 4)
    batch = buffer.gather(np.array([3, 0, 3]))
    assert batch.obs.shape == (3, 2) and batch.action.shape == (3, 1)
    assert batch.reward.shape == (3, 1) and batch.not_done.shape == (3, 1)
    assert batch.obs.dtype == np.float64
    np.testing.assert_array_equal(batch.next_obs[:, 0], [3.5, 0.5, 3.5])
    np.testing.assert_array_equal(batch.action[:, 0], [-3, 0, -3])


def test_sampling_only_from_filled_part_and_uniform():
    buffer = ReplayBuffer(capacity=1000, obs_dim=2, act_dim=1)
    add_numbered(buffer, 10)
    rng = np.random.default_rng(0)
    indices = np.concatenate([buffer.sample_indices(rng, 100) for _ in range(300)])
    assert indices.min() == 0 and indices.max() == 9
    counts = np.bincount(indices, minlength=10)
    # 30,000 draws over 10 slots: each count ~ Binomial(30000, 0.1), sd ~ 52.
    assert np.all(np.abs(counts - 3000) < 5 * 52), counts
    # With replacement: a batch larger than the filled part is fine and repeats slots.
    big = buffer.sample_indices(rng, 50)
    assert len(np.unique(big)) <= 10


def test_same_generator_state_gives_same_batch():
    buffer = ReplayBuffer(capacity=100, obs_dim=2, act_dim=1)
    add_numbered(buffer, 60)
    a = buffer.sample(np.random.default_rng(7), 16)
    b = buffer.sample(np.random.default_rng(7), 16)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 2, 1).sample_indices(np.random.default_rng(0), 2)


def test_state_dict_round_trip():
    buffer = ReplayBuffer(capacity=5, obs_dim=2, act_dim=1)
    add_numbered(buffer, 7)
    other = ReplayBuffer(capacity=5, obs_dim=2, act_dim=1)
    other.load_state_dict(buffer.state_dict())
    assert (other.position, other.size) == (buffer.position, buffer.size)
    for name in buffer.arrays:
        np.testing.assert_array_equal(other.arrays[name], buffer.arrays[name])
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=6, obs_dim=2, act_dim=1).load_state_dict(buffer.state_dict())
