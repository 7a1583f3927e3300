"""The shared training loop: truncation handling, schedules, determinism, JAX-vs-PyTorch equality, CLI."""

import json
import os
import signal

import gymnasium as gym
import jax
import numpy as np
import pytest

from jax_td3.cli import main
from jax_td3.config import config_for_env, make_config
from jax_td3.envs import env_spec, make_env
from jax_td3.loops.host import Trainer
from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint
from jax_td3.run.training import run_training
from jax_td3.settings import TrainSettings


class ScheduledEnv(gym.Env):
    """obs = [episode, t]. Even episodes are truncated at t = 4, odd ones terminate at t = 3; reward 1.

    Optionally sends ``signal_at`` = (step, signum) to this process after that many steps in total.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, signal_at=None):
        self.episode, self.t, self.total, self.signal_at = -1, 0, 0, signal_at

    def _obs(self):
        return np.array([self.episode, self.t], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        if self.signal_at and self.total == self.signal_at[0]:
            os.kill(os.getpid(), self.signal_at[1])
        odd = self.episode % 2 == 1
        return self._obs(), 1.0, odd and self.t == 3, (not odd) and self.t == 4, {}


def scheduled_trainer(**settings):
    config = make_config("td3", obs_dim=2, act_dim=1, max_action=1.0, hidden=(8, 8), batch_size=4)
    defaults = dict(total_steps=14, learning_starts=1_000, eval_every=1_000, eval_episodes=1)
    return Trainer(config, TrainSettings(**{**defaults, **settings}), env=ScheduledEnv(), eval_env=ScheduledEnv())


def run_steps(trainer):
    records = []
    while not trainer.done:
        records.append(trainer.step())
    return records


def test_truncation_bootstraps_and_stores_the_real_final_observation():
    trainer = scheduled_trainer()
    records = run_steps(trainer)
    arrays = trainer.buffer.arrays
    # Step 4 (slot 3): time-limit truncation of episode 0 -> not_done 1, next_obs is [0, 4], not the reset obs.
    assert records[3].truncated and not records[3].terminated
    np.testing.assert_array_equal(arrays["next_obs"][3], [0, 4])
    assert arrays["not_done"][3, 0] == 1.0
    # Step 5 starts episode 1 from its reset observation.
    np.testing.assert_array_equal(arrays["obs"][4], [1, 0])
    # Step 7 (slot 6): termination of episode 1 -> not_done 0, next_obs the terminal [1, 3].
    assert records[6].terminated
    np.testing.assert_array_equal(arrays["next_obs"][6], [1, 3])
    assert arrays["not_done"][6, 0] == 0.0
    np.testing.assert_array_equal(arrays["not_done"][:14, 0], [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0])
    assert [r.episode_return for r in records if r.episode_return is not None] == [4.0, 3.0, 4.0, 3.0]
    assert trainer.episodes == 4 and trainer.updates == 0


def test_no_bootstrap_truncation_option_cuts_at_the_time_limit():
    trainer = scheduled_trainer(bootstrap_truncation=False)
    run_steps(trainer)
    np.testing.assert_array_equal(trainer.buffer.arrays["not_done"][:14, 0],
                                  [1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0])


def test_warmup_actions_are_uniform_in_the_box_then_policy_plus_noise():
    trainer = scheduled_trainer(total_steps=40, learning_starts=1_000, random_steps=20, expl_noise=0.1)
    records = run_steps(trainer)
    assert all(r.random_action for r in records[:20]) and not any(r.random_action for r in records[20:])
    actions = np.array([r.action for r in records])
    assert np.all(actions >= -1) and np.all(actions <= 1)


def test_updates_start_once_the_buffer_holds_more_than_learning_starts():
    trainer = scheduled_trainer(total_steps=12, learning_starts=5)
    records = run_steps(trainer)
    assert [len(r.updates) for r in records] == [0] * 5 + [1] * 7
    assert trainer.updates == 7


def test_episode_schedule_runs_k_updates_after_each_episode():
    trainer = scheduled_trainer(total_steps=14, learning_starts=4, update_schedule="episode", updates_per_episode=3)
    records = run_steps(trainer)
    # Episodes end at steps 4, 7, 11, 14; the buffer holds > 4 transitions from step 5 on.
    assert {r.step: len(r.updates) for r in records if r.updates} == {7: 3, 11: 3, 14: 3}
    assert trainer.updates == 9


def test_fast_mode_runs_the_same_number_of_updates_in_fused_calls():
    trainer = scheduled_trainer(total_steps=14, learning_starts=4, updates_per_call=4)
    before = trainer.backend.state().critic_params["params"]["l1"]["kernel"].copy()
    records = run_steps(trainer)
    assert [r.step for r in records if r.updates] == [8, 12, 14]  # 10 updates: 4 + 4 + the 2 left at the end
    assert trainer.updates == 10
    after = trainer.backend.state().critic_params["params"]["l1"]["kernel"]
    assert not np.allclose(before, after)


def pendulum_settings(backend, dtype="float64", **extra):
    return TrainSettings(**{**dict(env="Pendulum-v1", total_steps=250, seed=5, backend=backend, dtype=dtype,
                                   learning_starts=100, eval_every=125, eval_episodes=1), **extra})


def pendulum_config(algo="td3"):
    return config_for_env(algo, env_spec(make_env("Pendulum-v1")), hidden=(16, 16), batch_size=16)


def state_leaves(trainer):
    return jax.tree_util.tree_leaves(trainer.backend.state())


def test_same_seed_same_run_and_other_seed_differs():
    config = pendulum_config()
    runs = [Trainer(config, pendulum_settings("jax", "float32", total_steps=150, seed=s)) for s in (1, 1, 2)]
    records = [run_steps(t) for t in runs]
    for a, b in zip(records[0], records[1]):
        np.testing.assert_array_equal(a.action, b.action)
        assert a.updates == b.updates
    for x, y in zip(state_leaves(runs[0]), state_leaves(runs[1])):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(records[0][-1].action, records[2][-1].action)


def test_jax_and_torch_backends_give_the_same_run_in_float64(x64):
    """Same seed, same loop-owned randomness: actions, losses, evaluations and parameters agree to ~1e-9
    through warm-up, the start of learning, an episode boundary (step 200) and two evaluations."""
    config = pendulum_config("td3")
    jax_run, torch_run = (Trainer(config, pendulum_settings(b)) for b in ("jax", "torch"))
    worst = 0.0
    while not jax_run.done:
        a, b = jax_run.step(), torch_run.step()
        np.testing.assert_allclose(a.action, b.action, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(a.next_obs, b.next_obs)  # the envs saw the same actions
        assert len(a.updates) == len(b.updates)
        for ma, mb in zip(a.updates, b.updates):
            assert ma["actor_updated"] == mb["actor_updated"]
            for key in ("critic_loss", "actor_loss"):
                worst = max(worst, abs(ma[key] - mb[key]) / max(1.0, abs(mb[key])))
        if a.evaluation is not None:
            np.testing.assert_allclose(a.evaluation["eval_returns"], b.evaluation["eval_returns"], rtol=1e-9)
    assert worst < 1e-9
    assert jax_run.updates == torch_run.updates == 150
    for x, y in zip(state_leaves(jax_run), state_leaves(torch_run)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


def test_cli_train_writes_every_output_then_eval_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--total-steps", "300", "--learning-starts", "100", "--eval-every", "150",
                 "--eval-episodes", "1", "--hidden", "16,16", "--batch-size", "32", "--out", str(out),
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("config.json", "metrics.csv", "episodes.csv", "summary.json", "learning_curve.png"):
        assert (out / name).is_file(), name
        assert str(out / name) in printed or name in ("config.json", "episodes.csv")
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,wall_time,eval_return_mean,eval_return_std")
    assert [int(r.split(",")[0]) for r in rows[1:]] == [0, 150, 300]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 300 and summary["updates"] == 200 and not summary["interrupted"]
    assert summary["final_eval_return"] < 0 and summary["wall_seconds"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["hidden"] == [16, 16] and config["settings"]["learning_starts"] == 100
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-0000000150.jtd3", "ckpt-0000000300.jtd3"]

    assert main(["eval", str(out), "--episodes", "1", "--backend", "torch"]) == 0
    assert "return" in capsys.readouterr().out
    assert main(["plot", str(out), str(out), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("flags, message", [
    (["--total-steps", "0"], "positive integer"),
    (["--tau", "2"], "tau"),
    (["--gamma", "-0.1"], "gamma"),
    (["--hidden", "64,x"], "positive integers"),
    (["--algo", "ppo"], "invalid choice"),
    (["--backend", "torch", "--updates-per-call", "4"], "--updates-per-call > 1 needs --backend jax"),
    (["--batch-size", "64", "--buffer-size", "32"], "larger than the buffer"),
    (["--num-seeds", "2"], "--num-seeds > 1 needs --compiled"),
    (["--preset", "nope"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) if message in ("positive integer", "positive integers", "invalid choice") \
            else _no_raise() as raised:
        code = main(["train", "--out", str(tmp_path / "run"), "--no-progress", *flags])
    code = raised.value.code if raised is not None and hasattr(raised, "value") else code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1, err


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_presets_fill_defaults_and_flags_override():
    from jax_td3.run.training import plan_run

    plan = plan_run({"batch_size": 64}, "seed-ddpg")
    assert plan.algo == "seed-ddpg" and plan.config_overrides["batch_size"] == 64
    settings = plan.settings
    assert (settings.exploration, settings.update_schedule, settings.updates_per_episode) == ("ou", "episode", 10)
    assert (settings.learning_starts, settings.warmup_steps, settings.buffer_size) == (2_000, 0, 50_000)
    assert settings.bootstrap_truncation
    plan = plan_run({}, "seed-t3d")
    assert (plan.algo, plan.settings.env, plan.config_overrides["hidden"], plan.config_overrides["batch_size"]) == (
        "td3", "HalfCheetahBulletEnv-v0", (400, 300), 100)
    assert isinstance(plan.settings, TrainSettings)


def test_sigterm_saves_a_checkpoint_and_stops_cleanly(tmp_path):
    config = make_config("td3", obs_dim=2, act_dim=1, max_action=1.0, hidden=(8, 8), batch_size=4)
    settings = TrainSettings(total_steps=1_000, learning_starts=10, eval_every=500, eval_episodes=1)
    trainer = Trainer(config, settings, env=ScheduledEnv(signal_at=(37, signal.SIGTERM)), eval_env=ScheduledEnv())
    summary = run_training(trainer, tmp_path, progress=False)
    assert summary["interrupted"] and summary["signal"] == signal.SIGTERM
    assert summary["env_steps"] == 37
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.metadata["step"] == 37
    assert checkpoint.contents["trainer"]["counters"]["updates"] == 27
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
