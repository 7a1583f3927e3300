"""The RL Baselines3 Zoo's PyBullet setup: the time feature, "as many updates as steps", the preset,
and evaluations that do not depend on the environment's history."""

import json

import gymnasium as gym
import numpy as np
import pytest

from jax_td3.cli import main
from jax_td3.config import make_config
from jax_td3.envs import make_env
from jax_td3.envs.gymnasium import with_time_feature
from jax_td3.errors import EnvError
from jax_td3.loops.host import Trainer, evaluate_policy
from jax_td3.settings import TrainSettings
from tests.test_train import ScheduledEnv, run_steps


def test_time_feature_counts_the_time_limit_down_to_zero():
    plain, timed = make_env("Pendulum-v1"), make_env("Pendulum-v1", time_feature=True)
    assert timed.observation_space.shape == (4,)
    np.testing.assert_array_equal(timed.observation_space.low[-1:], [0.0])
    np.testing.assert_array_equal(timed.observation_space.high[-1:], [1.0])
    np.testing.assert_array_equal(timed.observation_space.low[:3], plain.observation_space.low)
    obs, _ = plain.reset(seed=3)
    timed_obs, _ = timed.reset(seed=3)
    np.testing.assert_array_equal(timed_obs, np.append(obs, 1.0).astype(np.float32))
    actions = np.random.default_rng(0).uniform(-2, 2, (200, 1)).astype(np.float32)
    for t, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, _ = plain.step(action)
        timed_obs, timed_reward, timed_terminated, timed_truncated, _ = timed.step(action)
        np.testing.assert_array_equal(timed_obs[:3], obs)
        assert timed_obs[3] == np.float32(1.0 - t / 200)
        assert (timed_reward, timed_terminated, timed_truncated) == (reward, terminated, truncated)
    assert truncated and timed_obs[3] == 0.0
    timed_obs, _ = timed.reset()
    assert timed_obs[3] == 1.0


def test_time_feature_needs_a_time_limit():
    class NoLimit(ScheduledEnv):
        spec = None

    with pytest.raises(EnvError, match="`time_feature` needs a time limit"):
        with_time_feature(NoLimit())


def scheduled_trainer(**settings):
    config = make_config("td3", obs_dim=2, act_dim=1, max_action=1.0, hidden=(8, 8), batch_size=4)
    defaults = dict(total_steps=14, learning_starts=4, eval_every=1_000, eval_episodes=1,
                    update_schedule="episode", updates_per_episode="steps")
    return Trainer(config, TrainSettings(**{**defaults, **settings}), env=ScheduledEnv(), eval_env=ScheduledEnv())


def test_updates_per_episode_steps_runs_as_many_updates_as_the_episode_had_steps():
    trainer = scheduled_trainer()
    records = run_steps(trainer)
    # Episodes of 4, 3, 4, 3 steps end at steps 4, 7, 11, 14; the buffer holds > 4 transitions from step 5.
    assert {r.step: len(r.updates) for r in records if r.updates} == {7: 3, 11: 4, 14: 3}
    assert trainer.updates == 10


def test_updates_per_episode_steps_in_fused_calls_of_a_fixed_size():
    trainer = scheduled_trainer(updates_per_call=2)
    calls = []
    update_many = trainer.backend.update_many
    trainer.backend.update_many = lambda key, n: calls.append(n) or update_many(key, n)
    records = run_steps(trainer)
    # 3 owed at step 7: one call of 2, one waits; 4 more at 11: two calls; 3 more at 14: two calls and
    # the run's end takes none, as nothing is left.
    assert {r.step: len(r.updates) for r in records if r.updates} == {7: 2, 11: 4, 14: 4}
    assert calls == [2, 2, 2, 2, 2] and trainer.updates == 10 and trainer.pending_updates == 0


def test_zoo_pybullet_preset_has_the_zoo_settings_and_flags_override():
    from jax_td3.config import config_for_env
    from jax_td3.run.training import plan_run

    plan = plan_run({}, "zoo-pybullet")
    s = plan.settings
    assert (plan.algo, s.env, s.total_steps, s.buffer_size, s.learning_starts, s.warmup_steps) == (
        "td3", "HalfCheetahBulletEnv-v0", 1_000_000, 200_000, 10_000, 10_000)
    assert (s.exploration, s.expl_noise, s.update_schedule, s.updates_per_episode) == (
        "gaussian", 0.1, "episode", "steps")
    assert s.time_feature and not s.bootstrap_truncation
    overrides = plan.config_overrides
    assert (overrides["hidden"], overrides["batch_size"], overrides["gamma"]) == ((400, 300), 100, 0.98)
    assert (overrides["actor_lr"], overrides["critic_lr"]) == (1e-3, 1e-3)
    plan = plan_run({"algo": "ourddpg", "env": "HopperBulletEnv-v0", "batch_size": 256}, "zoo-pybullet")
    assert (plan.algo, plan.settings.env, plan.config_overrides["batch_size"]) == (
        "ourddpg", "HopperBulletEnv-v0", 256)
    spec = make_env("Pendulum-v1", time_feature=True)
    from jax_td3.envs import env_spec

    config = config_for_env(plan.algo, env_spec(spec), **plan.config_overrides)
    assert (config.obs_dim, config.tau, config.policy_freq, config.gamma) == (4, 0.005, 1, 0.98)


@pytest.mark.parametrize("value", ["0", "-3", "step", "2.5"])
def test_cli_refuses_a_bad_updates_per_episode_in_one_line(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["train", "--out", str(tmp_path / "run"), "--updates-per-episode", value])
    err = capsys.readouterr().err
    assert raised.value.code == 2
    assert "a positive integer or 'steps'" in err and err.count("\n") == 1, err


def test_a_pybullet_evaluation_does_not_depend_on_the_environments_history():
    # HalfCheetahBulletEnv's first reset builds the scene and later ones restore it: the same seed gave
    # returns 5e-5 apart. Every evaluation of the same policy and seed must now agree exactly.
    pytest.importorskip("pybullet_envs_gymnasium")
    env = make_env("HalfCheetahBulletEnv-v0")
    weights = np.random.default_rng(1).normal(0, 0.3, (env.action_space.shape[0], env.observation_space.shape[0]))

    def act(obs):
        return np.tanh(weights @ obs)

    first, again = evaluate_policy(act, env, 1, 100), evaluate_policy(act, env, 1, 100)
    fresh = evaluate_policy(act, make_env("HalfCheetahBulletEnv-v0"), 1, 100)
    assert first == again == fresh


def test_time_feature_run_evaluates_and_exports_to_its_reported_return(tmp_path):
    import jax_td3
    from jax_td3.evaluate import evaluate_checkpoint
    from jax_td3.export import export_checkpoint

    out = tmp_path / "run"
    summary = jax_td3.train("td3", out, env="Pendulum-v1", total_steps=400, learning_starts=200, eval_every=400,
                            eval_episodes=2, hidden=(16, 16), batch_size=16, time_feature=True,
                            update_schedule="episode", updates_per_episode="steps", updates_per_call=50,
                            progress=False)
    assert summary["updates"] == 200  # the second episode's 200 steps, in calls of 50
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["time_feature"] and settings["updates_per_episode"] == "steps"
    result = evaluate_checkpoint(out, episodes=2)
    assert result["eval_return_mean"] == summary["final_eval_return"]
    blob, _ = export_checkpoint(out, tmp_path / "agent.pt")
    assert blob["config"]["time_feature"] is True and blob["config"]["obs_dim"] == 4
    assert blob["config"]["eval_seed"] == result["seed"]  # the run's evaluation seed, used by default
    exported = evaluate_checkpoint(tmp_path / "agent.pt", episodes=2)
    assert exported["returns"] == result["returns"]


def test_make_env_with_time_feature_keeps_the_spec():
    env = make_env("Pendulum-v1", time_feature=True)
    assert isinstance(env, gym.Wrapper) and env.spec.id == "Pendulum-v1" and env.spec.max_episode_steps == 200
