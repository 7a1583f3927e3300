"""The Gymnasium loop over N environments (``--num-envs``, ``--vector-mode``): ``loops.vector.VectorTrainer``."""

import csv
import json

import gymnasium as gym
import jax
import numpy as np
import pytest

from jax_td3.cli import main
from jax_td3.config import config_for_env, make_config
from jax_td3.envs import env_spec, make_env
from jax_td3.errors import ConfigError
from jax_td3.loops import schedule
from jax_td3.loops.host import Trainer
from jax_td3.loops.vector import VectorTrainer
from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint
from jax_td3.run.training import uses_vector_loop
from jax_td3.settings import TrainSettings

# Most runs here are float64; the library leaves JAX's x64 mode to its caller.
pytestmark = pytest.mark.usefixtures("x64")


class ScheduledEnv(gym.Env):
    """obs = [episode, t]. Even episodes are truncated at t = 4, odd ones terminate at t = 3; reward 1."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.episode, self.t = -1, 0

    def _obs(self):
        return np.array([self.episode, self.t], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        odd = self.episode % 2 == 1
        return self._obs(), 1.0, odd and self.t == 3, (not odd) and self.t == 4, {}


class RandomLengthPendulum(gym.Wrapper):
    """Pendulum truncated after a length drawn from its own RNG at each reset (5 to 30 steps), so that the
    sub-environments' episodes end at different steps and their RNG states matter on a resume."""

    def reset(self, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.left = int(self.env.unwrapped.np_random.integers(5, 31))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.left -= 1
        return obs, reward, terminated, truncated or self.left == 0, info


def random_length_pendulum():
    return RandomLengthPendulum(make_env("Pendulum-v1"))


def pendulum_config():
    return config_for_env("td3", env_spec(make_env("Pendulum-v1")), hidden=(16, 16), batch_size=16)


def pendulum_settings(**extra):
    return TrainSettings(**{**dict(env="Pendulum-v1", total_steps=150, seed=5, backend="jax", dtype="float64",
                                   learning_starts=30, eval_every=1_000, eval_episodes=1), **extra})


def run_steps(trainer):
    records = []
    while not trainer.done:
        records.append(trainer.step())
    return records


def leaves(trainer):
    return jax.tree_util.tree_leaves(trainer.backend.state())


def test_one_env_keeps_the_plain_trainer_and_the_vector_trainer_matches_it_bit_for_bit():
    assert not uses_vector_loop(TrainSettings())
    assert uses_vector_loop(TrainSettings(num_envs=2)) and uses_vector_loop(TrainSettings(updates_per_step=0.5))
    config = pendulum_config()
    plain, vector = Trainer(config, pendulum_settings()), VectorTrainer(config, pendulum_settings())
    for a, b in zip(run_steps(plain), run_steps(vector), strict=True):
        np.testing.assert_array_equal(a.action, b.action[0])
        assert len(a.updates) == len(b.updates)
    for name, array in plain.buffer.arrays.items():
        np.testing.assert_array_equal(array, vector.buffer.arrays[name])
    for x, y in zip(leaves(plain), leaves(vector), strict=True):
        np.testing.assert_array_equal(x, y)
    vector.close()


def scheduled_vector_trainer(**settings):
    config = make_config("td3", obs_dim=2, act_dim=1, max_action=1.0, hidden=(8, 8), batch_size=4)
    defaults = dict(total_steps=42, learning_starts=1_000, eval_every=1_000, eval_episodes=1, num_envs=3,
                    buffer_size=1_000)
    return VectorTrainer(config, TrainSettings(**{**defaults, **settings}), eval_env=ScheduledEnv(),
                         env_fn=ScheduledEnv)


def test_episode_ends_store_the_real_final_observation_and_reset_each_environment():
    trainer = scheduled_vector_trainer()
    records = run_steps(trainer)
    assert trainer.env_steps == 42 and len(trainer.buffer) == 42 and len(records) == 14
    arrays = trainer.buffer.arrays
    for i in range(3):  # environment i's transitions are slots 3 v + i
        not_done = arrays["not_done"][i:42:3, 0]
        np.testing.assert_array_equal(not_done, [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0])
        # Vector step 4 truncates episode 0: next_obs is its final [0, 4], not the reset [1, 0] ...
        np.testing.assert_array_equal(arrays["next_obs"][3 * 3 + i], [0, 4])
        # ... which the next transition starts from.
        np.testing.assert_array_equal(arrays["obs"][4 * 3 + i], [1, 0])
        np.testing.assert_array_equal(arrays["next_obs"][6 * 3 + i], [1, 3])  # termination of episode 1
    assert records[3].truncated.all() and not records[3].terminated.any()
    assert [len(r.ended_episodes) for r in records] == [0, 0, 0, 3, 0, 0, 3, 0, 0, 0, 3, 0, 0, 3]
    assert records[3].ended_episodes == [(0, 4.0, 4), (1, 4.0, 4), (2, 4.0, 4)]
    assert trainer.episodes == 12 and trainer.episode_returns == [4.0] * 3 + [3.0] * 3 + [4.0] * 3 + [3.0] * 3
    trainer.close()


def test_episode_schedule_owes_updates_for_every_episode_that_ended():
    trainer = scheduled_vector_trainer(learning_starts=10, update_schedule="episode", updates_per_episode=2)
    records = run_steps(trainer)
    # Three episodes end at vector steps 4, 7, 11, 14 (buffer: 12, 21, 33, 42 > 10 transitions).
    assert {r.step: len(r.updates) for r in records if r.updates} == {12: 6, 21: 6, 33: 6, 42: 6}
    trainer.close()


@pytest.mark.parametrize("backend, updates_per_step", [("jax", 0.5), ("torch", 2.0), ("jax", 1.5)])
def test_updates_per_vector_step_follow_the_exact_fraction_rule(backend, updates_per_step):
    settings = pendulum_settings(backend=backend, num_envs=3, updates_per_step=updates_per_step)
    trainer = VectorTrainer(pendulum_config(), settings)
    records = run_steps(trainer)
    assert trainer.env_steps == 150 and len(trainer.buffer) == 150 and len(records) == 50
    p, q = schedule.update_fraction(updates_per_step)
    first = 30 // 3   # vector step 10 (0-based) is the first after which the buffer holds more than 30
    expected = [0] * first + [schedule.updates_at(k, p, q) for k in range(50 - first)]
    assert [len(r.updates) for r in records] == expected
    assert trainer.updates == sum(expected) == int(40 * updates_per_step)
    if updates_per_step == 0.5:
        assert expected[first:first + 4] == [0, 1, 0, 1]
    # Warm-up transitions are those with index below learning_starts: vector step 10 holds 30, 31, 32.
    assert records[9].random_action.all() and not records[10].random_action.any()
    trainer.close()


def test_counts_cross_multiples_and_stop_at_the_first_vector_step_reaching_total_steps():
    trainer = VectorTrainer(pendulum_config(), pendulum_settings(num_envs=3, total_steps=100, eval_every=50,
                                                                 updates_per_call=4))
    records = run_steps(trainer)
    assert trainer.env_steps == 102 and len(trainer.buffer) == 102
    assert [r.step for r in records if r.evaluation is not None] == [51, 102]
    assert trainer.updates == 34 - 10 and trainer.pending_updates == 0   # fused calls of 4, the rest at the end
    trainer.close()


def test_resume_replays_every_environment_to_the_same_state_and_continues_exactly():
    """Sub-environments with episodes of random lengths, interrupted mid-episode: a trainer restored from
    the snapshot continues exactly like the one that was not interrupted (float64, sync)."""
    settings = pendulum_settings(num_envs=3, total_steps=240, learning_starts=60)
    config = pendulum_config()
    whole = VectorTrainer(config, settings, env_fn=random_length_pendulum)
    while whole.env_steps < 120:
        whole.step()
    snapshot = whole.snapshot(include_buffer=True)
    lengths = [len(a) for a in snapshot["episode_actions"]]
    assert len(set(lengths)) > 1, lengths   # the lockstep replay has work to do
    resumed = VectorTrainer(config, settings, env_fn=random_length_pendulum)
    resumed.restore(snapshot)
    np.testing.assert_array_equal(resumed.obs, whole.obs)
    for a, b in zip(run_steps(whole), run_steps(resumed), strict=True):
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.next_obs, b.next_obs)
        assert a.ended_episodes == b.ended_episodes
    for x, y in zip(leaves(whole), leaves(resumed), strict=True):
        np.testing.assert_array_equal(x, y)
    assert whole.episode_returns == resumed.episode_returns
    whole.close()
    resumed.close()


def test_overlap_with_many_environments_delivers_every_update_and_resumes_exactly():
    """--overlap on the vector loop: every fused update's metrics arrive (the last ones at the evaluation
    that ends the run), and a snapshot taken with a block in flight resumes exactly (float64)."""
    settings = pendulum_settings(num_envs=2, total_steps=160, learning_starts=20, updates_per_step=2,
                                 updates_per_call=10, overlap=True)
    config = pendulum_config()
    whole = VectorTrainer(config, settings)
    while whole.env_steps < 80:
        whole.step()
    assert whole.inflight, "a block is in flight at the snapshot"
    snapshot = whole.snapshot(include_buffer=True)
    resumed = VectorTrainer(config, settings)
    resumed.restore(snapshot)
    rest_whole, rest_resumed = run_steps(whole), run_steps(resumed)
    for a, b in zip(rest_whole, rest_resumed, strict=True):
        np.testing.assert_array_equal(a.action, b.action)
        assert a.updates == b.updates
    for x, y in zip(leaves(whole), leaves(resumed), strict=True):
        np.testing.assert_array_equal(x, y)
    assert whole.updates == (160 - 20) // 2 * 2 and not whole.inflight
    whole.close()
    resumed.close()


RUN_FLAGS = ["--env", "Pendulum-v1", "--hidden", "16,16", "--batch-size", "16", "--learning-starts", "60",
             "--eval-every", "200", "--eval-episodes", "1", "--checkpoint-every", "100", "--seed", "3",
             "--dtype", "float64", "--num-envs", "2", "--updates-per-step", "0.5", "--no-progress"]


def read_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_time", "steps_per_second")}
                for row in csv.DictReader(f)]


def test_cli_async_runs_end_to_end_equals_sync_and_resumes_exactly(tmp_path, capsys):
    """`--vector-mode async` gives the sync run's transitions for the same seed, and an async run stopped
    mid-episode and resumed ends where the uninterrupted run does."""
    sync, async_ = tmp_path / "sync", tmp_path / "async"
    assert main(["train", *RUN_FLAGS, "--total-steps", "440", "--out", str(sync)]) == 0
    assert main(["train", *RUN_FLAGS, "--total-steps", "220", "--vector-mode", "async", "--out", str(async_)]) == 0
    assert main(["train", *RUN_FLAGS, "--total-steps", "440", "--vector-mode", "async", "--out", str(async_),
                 "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    contents = [load_checkpoint(list_checkpoints(run)[-1]).contents["trainer"] for run in (sync, async_)]
    for name in ("obs", "action", "next_obs", "reward", "not_done"):
        np.testing.assert_array_equal(contents[0]["buffer"][name], contents[1]["buffer"][name])
    for x, y in zip(contents[0]["train_state"].values(), contents[1]["train_state"].values(), strict=True):
        np.testing.assert_array_equal(x, y)
    summary = json.loads((async_ / "summary.json").read_text())
    assert summary["env_steps"] == 440 and summary["updates"] == (220 - 30) // 2
    assert read_rows(async_ / "episodes.csv") == read_rows(sync / "episodes.csv")
    assert [r["step"] for r in read_rows(sync / "episodes.csv")] == ["400", "400"]   # both truncated at 200
    sync_metrics = [r for r in read_rows(sync / "metrics.csv")]
    assert [r["step"] for r in sync_metrics] == ["0", "200", "400", "440"]


@pytest.mark.parametrize("values, message", [
    (dict(num_envs=0), "`num_envs` must be >= 1"),
    (dict(vector_mode="threads"), "`vector_mode` must be one of sync, async"),
    (dict(updates_per_step=0.3333), "ratio of small whole numbers"),
])
def test_bad_vector_settings_are_one_line_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings(**values).validate()


def test_cli_refuses_updates_per_step_with_the_episode_schedule(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), "--no-progress", "--update-schedule", "episode",
                 "--updates-per-step", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--updates-per-step applies to --update-schedule step" in err and err.count("\n") == 1, err
