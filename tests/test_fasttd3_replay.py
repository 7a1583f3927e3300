"""FastTD3's n-step host replay against a brute-force reference, and the per-environment exploration scales.

The reference below is written from the definition, start by start: it walks forward from every step
of a recorded stream until the episode ends or n steps are taken, and so knows nothing of the
buffer's windows. The buffer must store exactly its transitions, in its order.
"""

import io

import numpy as np
import pytest

from jax_td3.fasttd3.replay import FIELDS, NStepReplayBuffer, draw_exploration_scales, redraw_ended

OBS_DIM, ACT_DIM = 3, 2


def make_stream(seed, steps=60, num_envs=4, p_terminated=0.08, p_truncated=0.06, p_invalid=0.0):
    """A recorded run of ``num_envs`` environments: rows (steps, num_envs, ...). Episodes end at random
    steps, each environment on its own; an ended environment resets to a fresh observation, so a
    reset observation is never the final one. Column 0 of obs and next_obs is the episode's number.
    Environment 0 is terminated and truncated at once mid-stream. Invalid rows (the loop would drop
    them) carry a NaN reward and do not end the episode."""
    rng = np.random.default_rng(seed)
    stream = dict(obs=np.zeros((steps, num_envs, OBS_DIM)), action=rng.uniform(-1, 1, (steps, num_envs, ACT_DIM)),
                  reward=rng.normal(size=(steps, num_envs)), next_obs=np.zeros((steps, num_envs, OBS_DIM)),
                  terminated=rng.random((steps, num_envs)) < p_terminated,
                  truncated=rng.random((steps, num_envs)) < p_truncated,
                  valid=rng.random((steps, num_envs)) >= p_invalid)
    stream["terminated"][steps // 2, 0] = stream["truncated"][steps // 2, 0] = True  # both at once
    stream["valid"][steps // 2, 0] = True
    stream["reward"][~stream["valid"]] = np.nan
    current = rng.normal(size=(num_envs, OBS_DIM))
    episode = np.arange(num_envs, dtype=float)
    current[:, 0] = episode
    for t in range(steps):
        stream["obs"][t] = current
        following = rng.normal(size=(num_envs, OBS_DIM))
        following[:, 0] = episode
        stream["next_obs"][t] = following
        ended = stream["valid"][t] & (stream["terminated"][t] | stream["truncated"][t])
        episode = np.where(ended, episode.max() + 1 + np.arange(num_envs), episode)
        current = np.where(ended[:, None], rng.normal(size=(num_envs, OBS_DIM)), following)
        current[:, 0] = episode
    return stream


def reference(stream, n_step, gamma, disable_bootstrap):
    """(transitions in the order they complete, then by environment, then by start; count of starts
    still pending at the end of the stream)."""
    steps, num_envs = stream["reward"].shape
    found, pending = [], 0
    for env in range(num_envs):
        for start in range(steps):
            if not stream["valid"][start, env]:
                continue
            total, k, completed_at, ended_by = 0.0, 0, None, None
            for i in range(n_step):
                step = start + i
                if step == steps:               # the stream stops first: still pending
                    break
                if not stream["valid"][step, env]:
                    completed_at = step         # cut short before a dropped step
                    break
                total += gamma ** i * float(stream["reward"][step, env])
                k = i + 1
                if stream["terminated"][step, env] or stream["truncated"][step, env]:
                    completed_at = step
                    ended_by = "terminated" if stream["terminated"][step, env] else "truncated"
                    break
                if k == n_step:
                    completed_at = step
            if completed_at is None:
                pending += 1
                continue
            bootstrap = 0.0 if ended_by == "terminated" or (ended_by == "truncated" and disable_bootstrap) else 1.0
            found.append(((completed_at, env, start),
                          dict(obs=stream["obs"][start, env], action=stream["action"][start, env],
                               next_obs=stream["next_obs"][start + k - 1, env], reward=total,
                               bootstrap=bootstrap, discount=gamma ** k)))
    found.sort(key=lambda item: item[0])
    return [transition for _, transition in found], pending


def feed(buffer, stream, begin=0, end=None):
    for t in range(begin, len(stream["reward"]) if end is None else end):
        buffer.add(stream["obs"][t], stream["action"][t], stream["reward"][t], stream["next_obs"][t],
                   stream["terminated"][t], stream["truncated"][t], valid=stream["valid"][t])


def stacked(transitions, dtype):
    return {name: np.array([t[name] for t in transitions]).astype(dtype) for name in FIELDS}


def assert_stores_equal(buffer, expected):
    for name in FIELDS:
        np.testing.assert_array_equal(buffer.arrays[name][: len(buffer)], expected[name], err_msg=name)


@pytest.mark.parametrize("n_step", [1, 3, 5])
@pytest.mark.parametrize("gamma", [0.99, 0.97])
@pytest.mark.parametrize("disable_bootstrap", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_stored_transition_is_the_references(n_step, gamma, disable_bootstrap, dtype):
    stream = make_stream(seed=n_step * 10 + int(disable_bootstrap))
    buffer = NStepReplayBuffer(1000, OBS_DIM, ACT_DIM, num_envs=4, n_step=n_step, gamma=gamma,
                               disable_bootstrap=disable_bootstrap, dtype=dtype)
    feed(buffer, stream)
    transitions, pending = reference(stream, n_step, gamma, disable_bootstrap)
    assert len(buffer) == buffer.written == len(transitions) and buffer.pending() == pending
    assert len(transitions) + pending == 60 * 4 and (n_step > 1 or pending == 0)
    assert_stores_equal(buffer, stacked(transitions, dtype))
    # What the reference's rules mean, seen in the store (the stream has every kind of episode end):
    store = buffer.arrays
    k = np.array([round(np.log(d) / np.log(gamma)) for d in store["discount"][: len(buffer)]])
    assert set(k) == set(range(1, n_step + 1))
    np.testing.assert_array_equal(store["obs"][: len(buffer), 0], store["next_obs"][: len(buffer), 0])  # one episode
    for only in (stream["terminated"] & ~stream["truncated"], stream["truncated"] & ~stream["terminated"]):
        assert only.any()


def test_an_episode_end_flushes_every_pending_start_with_its_own_window():
    """One environment, n = 3, rewards 1..4, the episode ending at the 4th step."""
    gamma = 0.9
    obs = np.arange(4.0)[:, None]
    for ending, disable_bootstrap, bootstrap in (("terminated", False, 0.0), ("truncated", False, 1.0),
                                                 ("truncated", True, 0.0)):
        buffer = NStepReplayBuffer(10, 1, 1, num_envs=1, n_step=3, gamma=gamma, disable_bootstrap=disable_bootstrap,
                                   dtype=np.float64)
        written = []
        for t in range(4):
            end = t == 3
            written.append(buffer.add(obs[t], -obs[t], t + 1.0, obs[t] + 0.5, terminated=end and ending == "terminated",
                                      truncated=end and ending == "truncated"))
        assert written == [0, 0, 1, 3] and len(buffer) == 4 and buffer.pending() == 0  # up to n - 1 steps late
        batch = buffer.last(4)
        np.testing.assert_array_equal(batch.obs[:, 0], [0, 1, 2, 3])
        np.testing.assert_array_equal(batch.next_obs[:, 0], [2.5, 3.5, 3.5, 3.5])  # the true final observation
        np.testing.assert_array_equal(batch.reward, [1 + gamma * 2 + gamma ** 2 * 3, 2 + gamma * 3 + gamma ** 2 * 4,
                                                     3 + gamma * 4, 4.0])
        np.testing.assert_array_equal(batch.discount, [gamma ** 3, gamma ** 3, gamma ** 2, gamma])
        np.testing.assert_array_equal(batch.bootstrap, [1.0, bootstrap, bootstrap, bootstrap])
        assert batch.reward.shape == batch.bootstrap.shape == batch.discount.shape == (4,)


def test_one_step_is_the_one_step_transition():
    stream = make_stream(seed=3)
    buffer = NStepReplayBuffer(240, OBS_DIM, ACT_DIM, num_envs=4, n_step=1, gamma=0.99, dtype=np.float64)
    feed(buffer, stream)
    rows = lambda name: stream[name].reshape(240, -1).squeeze()  # noqa: E731 - step-major, as written
    assert len(buffer) == 240
    np.testing.assert_array_equal(buffer.arrays["obs"], rows("obs"))
    np.testing.assert_array_equal(buffer.arrays["action"], rows("action"))
    np.testing.assert_array_equal(buffer.arrays["next_obs"], rows("next_obs"))
    np.testing.assert_array_equal(buffer.arrays["reward"], rows("reward"))
    np.testing.assert_array_equal(buffer.arrays["bootstrap"], np.where(rows("terminated"), 0.0, 1.0))
    np.testing.assert_array_equal(buffer.arrays["discount"], np.full(240, 0.99))


@pytest.mark.parametrize("n_step", [1, 3])
def test_the_ring_overwrites_the_oldest_first(n_step):
    stream = make_stream(seed=5)
    buffer = NStepReplayBuffer(7, OBS_DIM, ACT_DIM, num_envs=4, n_step=n_step, gamma=0.97)
    feed(buffer, stream)
    transitions, _ = reference(stream, n_step, 0.97, False)
    total = len(transitions)
    assert (len(buffer), buffer.position, buffer.written) == (7, total % 7, total)
    newest = stacked(transitions[-7:], np.float32)
    slots = np.arange(total - 7, total) % 7
    for name in FIELDS:
        np.testing.assert_array_equal(buffer.arrays[name][slots], newest[name], err_msg=name)
    last = buffer.last(7)
    np.testing.assert_array_equal(last.obs, newest["obs"])  # oldest first
    # One add writing more than the ring holds keeps the last ``capacity`` of them.
    small = NStepReplayBuffer(2, 1, 1, num_envs=3, n_step=2, gamma=0.5, dtype=np.float64)
    small.add(np.zeros(3), np.zeros(3), np.ones(3), np.arange(3.0), np.zeros(3), np.zeros(3))
    assert small.add(np.zeros(3), np.zeros(3), np.ones(3), 10 + np.arange(3.0), np.ones(3), np.zeros(3)) == 6
    np.testing.assert_array_equal(small.last(2).next_obs[:, 0], [12.0, 12.0])
    np.testing.assert_array_equal(small.last(2).reward, [1.5, 1.0])


def test_dropped_rows_are_not_stored_and_cut_their_windows():
    stream = make_stream(seed=11, p_invalid=0.1)
    assert not stream["valid"].all()
    for n_step in (1, 4):
        buffer = NStepReplayBuffer(1000, OBS_DIM, ACT_DIM, num_envs=4, n_step=n_step, gamma=0.99)
        feed(buffer, stream)
        transitions, pending = reference(stream, n_step, 0.99, False)
        assert buffer.pending() == pending
        assert_stores_equal(buffer, stacked(transitions, np.float32))
        assert np.isfinite(buffer.arrays["reward"][: len(buffer)]).all()


@pytest.mark.parametrize("split", [0, 1, 17, 33, 59])
def test_a_resumed_buffer_continues_exactly(split):
    stream = make_stream(seed=21, p_terminated=0.03, p_truncated=0.02, p_invalid=0.02)
    settings = dict(capacity=50, obs_dim=OBS_DIM, act_dim=ACT_DIM, num_envs=4, n_step=5, gamma=0.97)
    whole = NStepReplayBuffer(**settings)
    feed(whole, stream, end=split)
    first = NStepReplayBuffer(**settings)
    feed(first, stream, end=split)
    if split >= 17:  # the checkpoint holds pending windows that have moved on from their first slot
        assert first.pending() > 0 and first.window_head.any()
    file = io.BytesIO()
    np.savez(file, **first.state_dict())
    file.seek(0)
    resumed = NStepReplayBuffer(**settings)
    resumed.load_state_dict(dict(np.load(file)))
    for t in range(split, len(stream["reward"])):  # equal after every step (the ring wraps by the end)
        feed(whole, stream, begin=t, end=t + 1)
        feed(resumed, stream, begin=t, end=t + 1)
        expected, got = whole.state_dict(), resumed.state_dict()
        assert expected.keys() == got.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{name} after step {t}")
            assert np.asarray(got[name]).dtype == np.asarray(expected[name]).dtype, name
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for x, y in zip(whole.sample(rng_a, 32), resumed.sample(rng_b, 32)):
        np.testing.assert_array_equal(x, y)


def test_loading_refuses_other_settings():
    buffer = NStepReplayBuffer(10, OBS_DIM, ACT_DIM, num_envs=2, n_step=3, gamma=0.99)
    state = buffer.state_dict()
    for name, value in (("n_step", 2), ("num_envs", 3), ("gamma", 0.97), ("capacity", 11),
                        ("disable_bootstrap", True)):
        with pytest.raises(ValueError, match=name):
            NStepReplayBuffer(**{**dict(capacity=10, obs_dim=OBS_DIM, act_dim=ACT_DIM, num_envs=2, n_step=3,
                                        gamma=0.99), name: value}).load_state_dict(state)


def test_sampling_draws_filled_slots_as_batches():
    stream = make_stream(seed=2)
    buffer = NStepReplayBuffer(1000, OBS_DIM, ACT_DIM, num_envs=4, n_step=3, gamma=0.99)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(np.random.default_rng(0), 4)
    feed(buffer, stream)
    indices = buffer.sample_indices(np.random.default_rng(0), 5000)
    assert indices.min() == 0 and indices.max() == len(buffer) - 1
    batch = buffer.sample(np.random.default_rng(0), 16)
    assert batch.obs.shape == batch.next_obs.shape == (16, OBS_DIM) and batch.action.shape == (16, ACT_DIM)
    assert batch.reward.shape == batch.bootstrap.shape == batch.discount.shape == (16,)
    assert all(np.asarray(field).dtype == np.float32 for field in batch)
    np.testing.assert_array_equal(batch.obs, buffer.gather(indices[:16]).obs)


def test_exploration_scales_are_in_range_and_only_ended_environments_redraw():
    rng = np.random.default_rng(4)
    scales = draw_exploration_scales(rng, 8, 0.05, 0.8)
    assert scales.shape == (8,) and ((scales >= 0.05) & (scales <= 0.8)).all() and len(set(scales)) == 8
    ended = np.array([1, 0, 0, 1, 0, 0, 0, 1], bool)
    before = rng.bit_generator.state
    redrawn = redraw_ended(scales, ended, rng, 0.05, 0.8)
    np.testing.assert_array_equal(redrawn[~ended], scales[~ended])
    assert (redrawn[ended] != scales[ended]).all() and ((redrawn >= 0.05) & (redrawn <= 0.8)).all()
    # Always one draw per environment, environment i taking draw i: the generator moves the same
    # whatever ended, so a resumed run (generator state and scales restored) draws the same.
    replay = np.random.default_rng(0)
    replay.bit_generator.state = before
    np.testing.assert_array_equal(redrawn[ended], replay.uniform(0.05, 0.8, 8)[ended])
    assert replay.bit_generator.state == rng.bit_generator.state
    unchanged = redraw_ended(redrawn, np.zeros(8, bool), rng, 0.05, 0.8)
    np.testing.assert_array_equal(unchanged, redrawn)
    replay.uniform(size=8)
    assert replay.bit_generator.state == rng.bit_generator.state
    np.testing.assert_array_equal(draw_exploration_scales(np.random.default_rng(0), 3, 0.2, 0.2), [0.2] * 3)
