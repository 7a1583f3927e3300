"""Resuming a run: exact after SIGKILL (both backends), a finished run left alone, refusals; NaN guard."""

import csv
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from jax_td3.cli import main
from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint

# Checkpoints every 50 steps fall mid-episode (Pendulum's episodes are 200 steps), so resuming
# exercises the environment replay, not only episode boundaries.
RUN_FLAGS = ["--env", "Pendulum-v1", "--total-steps", "700", "--hidden", "16,16", "--batch-size", "32",
             "--learning-starts", "100", "--eval-every", "250", "--eval-episodes", "1", "--checkpoint-every", "50",
             "--seed", "3", "--no-progress"]
TIMING_COLUMNS = ("wall_time", "steps_per_second")
VARIANTS = {"jax": ["--backend", "jax"], "torch": ["--backend", "torch"],
            "jax-fused": ["--backend", "jax", "--updates-per-call", "40", "--buffer-size", "300"]}


def read_rows(path, drop=TIMING_COLUMNS):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def final_state(out):
    return list(load_checkpoint(list_checkpoints(out)[-1]).contents["trainer"]["train_state"].values())


def train(out, *flags):
    return main(["train", *RUN_FLAGS, "--out", str(out), *flags])


def start_and_kill(out, flags, delay):
    """Start a run in a child process and SIGKILL it ``delay`` seconds after its second checkpoint."""
    child = subprocess.Popen([sys.executable, "-m", "jax_td3.cli", "train", *RUN_FLAGS, "--out", str(out), *flags],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list_checkpoints(out)) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return child.returncode


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_after_sigkill_ends_exactly_like_an_uninterrupted_run(variant, tmp_path, capsys):
    flags = VARIANTS[variant]
    assert train(tmp_path / "whole", *flags) == 0
    delay = np.random.default_rng(list(VARIANTS).index(variant)).uniform(0.0, 0.5)
    killed = tmp_path / "killed"
    assert start_and_kill(killed, flags, delay) == -signal.SIGKILL
    assert not (killed / "summary.json").exists(), "the child finished before it was killed"
    capsys.readouterr()

    assert train(killed, *flags, "--resume") == 0
    resumed_from = load_checkpoint(list_checkpoints(killed)[-1]).metadata["env_steps"]
    assert resumed_from == 700
    assert "resuming" in capsys.readouterr().out

    for whole, resumed in zip(final_state(tmp_path / "whole"), final_state(killed), strict=True):
        np.testing.assert_array_equal(whole, resumed)
    assert read_rows(killed / "metrics.csv") == read_rows(tmp_path / "whole" / "metrics.csv")
    assert read_rows(killed / "episodes.csv") == read_rows(tmp_path / "whole" / "episodes.csv")
    best_whole, best_killed = (load_checkpoint(run / "best.jtd3") for run in (tmp_path / "whole", killed))
    assert best_killed.metadata["step"] == best_whole.metadata["step"]
    for whole, resumed in zip(best_whole.contents["trainer"]["train_state"].values(),
                              best_killed.contents["trainer"]["train_state"].values(), strict=True):
        np.testing.assert_array_equal(whole, resumed)
    import json
    summary = json.loads((killed / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < 700


def test_resume_falls_back_past_a_corrupted_newest_checkpoint_and_is_still_exact(tmp_path, capsys):
    assert train(tmp_path / "whole") == 0
    run = tmp_path / "run"
    assert train(run, "--total-steps", "300") == 0
    newest = list_checkpoints(run)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        assert train(run, "--resume") == 0
    assert "from ckpt-0000000250" in capsys.readouterr().out
    for whole, resumed in zip(final_state(tmp_path / "whole"), final_state(run), strict=True):
        np.testing.assert_array_equal(whole, resumed)


def test_resuming_a_finished_run_changes_nothing_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run) == 0
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(run, "--resume") == 0
    assert "already finished" in capsys.readouterr().out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_a_finished_compiled_run_resumed_with_more_steps_ends_like_one_run_of_them(tmp_path):
    # The first run's replay holds min(buffer_size, total_steps) = 100 transitions and ends exactly full
    # (its write position back at slot 0); the resumed run's holds 200 and goes on after them.
    flags = ["--compiled", "--hidden", "8,8", "--batch-size", "8", "--learning-starts", "20", "--eval-every", "100"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert train(whole, *flags, "--total-steps", "200") == 0
    assert train(run, *flags, "--total-steps", "100") == 0
    assert train(run, *flags, "--total-steps", "200", "--resume") == 0
    import json
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 100
    drop = ("wall_time",)
    assert read_rows(run / "metrics.csv", drop) == read_rows(whole / "metrics.csv", drop)
    assert len(read_rows(whole / "metrics.csv")) == 3
    saved = [load_checkpoint(list_checkpoints(out)[-1]).contents["agents"] for out in (whole, run)]
    assert sorted(saved[0]) == sorted(saved[1])
    for name in saved[0]:
        np.testing.assert_array_equal(saved[1][name], saved[0][name], err_msg=name)


def test_a_compiled_run_that_ended_in_a_partial_block_extends_on_schedule(tmp_path):
    # 155 steps end inside a block of 10 (eval_every 100); extended to 300, the run goes to 160 first, then
    # on to 200 and 300 (it overshot to 355, and the summary named the evaluations by the new schedule).
    flags = ["--compiled", "--hidden", "8,8", "--batch-size", "8", "--learning-starts", "20", "--eval-every", "100"]
    run = tmp_path / "run"
    assert train(run, *flags, "--total-steps", "155") == 0
    assert train(run, *flags, "--total-steps", "300", "--resume") == 0
    rows = read_rows(run / "metrics.csv")
    assert [int(row["step"]) for row in rows] == [0, 100, 155, 200, 300]
    assert [int(row["updates"]) for row in rows] == [0, 80, 135, 180, 280]
    import json
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_steps"] == [0, 100, 155, 200, 300] and summary["env_steps"] == 300
    assert summary["eval_return_curve"][0] == [float(row["eval_return_mean"]) for row in rows]


@pytest.mark.parametrize("case, message", [
    ("existing-run", "already holds a run; pass --resume"),
    ("no-checkpoint", "no complete checkpoint"),
    ("conflicting-flag", "hidden=[16, 16], but (32, 32) was asked for"),
    ("fewer-steps", "is below the"),
])
def test_resume_refusals_are_one_line_and_exit_2(case, message, tmp_path, capsys):
    run = tmp_path / "run"
    if case != "no-checkpoint":
        assert train(run, "--total-steps", "100") == 0
    flags = {"existing-run": [], "no-checkpoint": ["--resume"], "conflicting-flag": ["--resume", "--hidden", "32,32"],
             "fewer-steps": ["--resume", "--total-steps", "50"]}[case]
    capsys.readouterr()
    assert main(["train", *RUN_FLAGS, "--total-steps", "100", "--out", str(run), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


# -- numerical faults -----------------------------------------------------------------------

class NaNAt(gym.Wrapper):
    """Pendulum whose ``field`` (reward or observation) is NaN at the ``at``-th step of the process."""

    def __init__(self, env, field="reward", at=57):
        super().__init__(env)
        self.field, self.at, self.steps = field, at, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.at:
            if self.field == "reward":
                reward = float("nan")
            else:
                obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


def _nan_reward_pendulum(**kwargs):
    """The first instance made after ``_nan_reward_pendulum.armed = True`` (the training env) goes NaN."""
    armed, _nan_reward_pendulum.armed = _nan_reward_pendulum.armed, False
    return NaNAt(gym.make("Pendulum-v1"), "reward", 157 if armed else -1)


_nan_reward_pendulum.armed = False
gym.register("NaNRewardPendulum-v1", entry_point=_nan_reward_pendulum)


@pytest.mark.parametrize("field", ["reward", "observation"])
def test_nan_from_the_environment_stops_with_its_step_and_keeps_the_last_good_checkpoint(field, tmp_path):
    from jax_td3.config import make_config
    from jax_td3.envs import make_env
    from jax_td3.errors import NonFiniteError
    from jax_td3.loops.host import Trainer
    from jax_td3.run.training import run_training
    from jax_td3.settings import TrainSettings

    config = make_config("td3", obs_dim=3, act_dim=1, max_action=2.0, hidden=(16, 16), batch_size=32)
    settings = TrainSettings(total_steps=300, learning_starts=20, eval_every=100, eval_episodes=1)
    trainer = Trainer(config, settings, env=NaNAt(make_env("Pendulum-v1"), field, 157))
    with pytest.raises(NonFiniteError, match=f"non-finite {field} .* at env step 157"):
        run_training(trainer, tmp_path, progress=False, checkpoint_every=50)
    kept = load_checkpoint(tmp_path)
    assert kept.metadata["env_steps"] == 150
    assert all(np.all(np.isfinite(x)) for x in kept.contents["trainer"]["train_state"].values())
    import json
    assert "env step 157" in json.loads((tmp_path / "summary.json").read_text())["stopped"]


def test_skip_nonfinite_drops_the_bad_transition_and_finishes(tmp_path):
    from jax_td3.config import make_config
    from jax_td3.envs import make_env
    from jax_td3.loops.host import Trainer
    from jax_td3.run.training import run_training
    from jax_td3.settings import TrainSettings

    config = make_config("td3", obs_dim=3, act_dim=1, max_action=2.0, hidden=(16, 16), batch_size=32)
    settings = TrainSettings(total_steps=300, learning_starts=20, eval_every=100, eval_episodes=1,
                             skip_nonfinite=True)
    trainer = Trainer(config, settings, env=NaNAt(make_env("Pendulum-v1"), "observation", 157))
    summary = run_training(trainer, tmp_path, progress=False)
    assert summary["skipped_transitions"] == 1 and summary["env_steps"] == 300
    assert len(trainer.buffer) == 299 and np.all(np.isfinite(trainer.buffer.arrays["next_obs"]))
    # The broken episode ended at the NaN: the next one started from a fresh reset.
    assert trainer.episodes == 1 and trainer.episode_length == 300 - 157


def test_nan_parameter_is_named_before_a_checkpoint_is_written(tmp_path):
    import jax

    from jax_td3.config import make_config
    from jax_td3.envs import make_env
    from jax_td3.errors import NonFiniteError
    from jax_td3.loops.host import Trainer
    from jax_td3.settings import TrainSettings

    config = make_config("td3", obs_dim=3, act_dim=1, max_action=2.0, hidden=(16, 16), batch_size=32)
    trainer = Trainer(config, TrainSettings(total_steps=10), env=make_env("Pendulum-v1"))
    def poison(path, leaf):
        leaf = np.array(leaf)
        if jax.tree_util.keystr(path).startswith(".critic_params") and "l2']['kernel" in jax.tree_util.keystr(path) \
                and leaf.ndim > 1:
            leaf.flat[7] = np.inf
        return leaf

    trainer.backend.load_state(jax.tree_util.tree_map_with_path(poison, trainer.backend.state()))
    with pytest.raises(NonFiniteError, match=r"non-finite parameter .*critic_params.*l2.*kernel"):
        trainer.check_parameters()


def test_cli_nan_stops_with_one_line_and_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    _nan_reward_pendulum.armed = True
    code = main(["train", "--env", "NaNRewardPendulum-v1", "--total-steps", "300", "--hidden", "16,16",
                 "--batch-size", "32", "--learning-starts", "20", "--eval-every", "100", "--eval-episodes", "1",
                 "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "non-finite reward" in err[0] and "env step 157" in err[0], err
    assert "ckpt-0000000100" in err[0]
