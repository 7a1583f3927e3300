"""``jax-td3 train --algo fasttd3`` in the Gymnasium loop: both backends, 1 and 2 environments, exact resume
(after SIGKILL too), export and eval with the observation normaliser, and one-line refusals."""

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from jax_td3.cli import main
from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint

# Small networks and batches; checkpoints every 50 steps fall mid-episode (Pendulum's are 200 steps), so a
# resume replays environments and restores pending n-step windows and exploration scales mid-episode.
RUN_FLAGS = ["--algo", "fasttd3", "--env", "Pendulum-v1", "--hidden", "16,16", "--critic-hidden", "16,16",
             "--num-atoms", "11", "--v-min", "-1650", "--v-max", "0", "--batch-size", "16", "--learning-starts", "100",
             "--eval-every", "150", "--eval-episodes", "1", "--checkpoint-every", "50", "--seed", "2",
             "--no-progress"]
VARIANTS = {"jax-1env": ["--backend", "jax", "--total-steps", "300"],
            "torch-1env": ["--backend", "torch", "--total-steps", "300"],
            "jax-2envs-nstep3": ["--backend", "jax", "--num-envs", "2", "--n-step", "3", "--total-steps", "300"],
            "torch-2envs-nstep3": ["--backend", "torch", "--num-envs", "2", "--n-step", "3", "--total-steps", "300"]}
TIMING_COLUMNS = ("wall_time", "steps_per_second")


def train(out, *flags):
    return main(["train", *RUN_FLAGS, "--out", str(out), *flags])


def read_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def final_trainer(out):
    return load_checkpoint(list_checkpoints(out)[-1]).contents["trainer"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fasttd3_trains_with_either_backend_on_one_or_two_environments(variant, tmp_path):
    out = tmp_path / "run"
    assert train(out, *VARIANTS[variant]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "fasttd3" and summary["env_steps"] == 300
    assert summary["updates"] == (200 if "1env" in variant else 100)   # one per vector step after learning_starts
    assert np.isfinite(summary["final_eval_return"])
    trainer = final_trainer(out)
    state = trainer["train_state"]
    assert int(state["obs_normalizer/count"]) == 300   # every observation acted on, once
    assert int(state["step"]) == summary["updates"]
    scales = np.asarray(trainer["noise_state"]).reshape(-1)
    assert np.all((scales >= 0.001) & (scales < 0.4))   # each environment's exploration std
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "fasttd3" and config["config"]["num_atoms"] == 11


def test_backends_give_the_same_fasttd3_run_in_float64(x64):
    """Same seed, loop-owned randomness, the normaliser fed alike: the JAX and torch learners act, learn and
    evaluate alike through warm-up, learning, n-step windows and per-environment scales on two environments."""
    from jax_td3.config import config_for_env
    from jax_td3.envs import env_spec, make_env
    from jax_td3.loops.vector import VectorTrainer
    from jax_td3.settings import TrainSettings

    config = config_for_env("fasttd3", env_spec(make_env("Pendulum-v1")), hidden=(16, 16), critic_hidden=(16, 16),
                            num_atoms=11, v_min=-1650.0, v_max=0.0, batch_size=16, n_step=3)
    settings = dict(env="Pendulum-v1", total_steps=240, seed=1, dtype="float64", learning_starts=60, eval_every=120,
                    eval_episodes=1, num_envs=2)
    runs = [VectorTrainer(config, TrainSettings(backend=backend, **settings)) for backend in ("jax", "torch")]
    try:
        worst = 0.0
        while not runs[0].done:
            a, b = (run.step() for run in runs)
            np.testing.assert_allclose(a.action, b.action, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(a.next_obs, b.next_obs)
            assert len(a.updates) == len(b.updates)
            for ma, mb in zip(a.updates, b.updates):
                assert ma["actor_updated"] == mb["actor_updated"]
                for key in ("critic_loss", "actor_loss"):
                    worst = max(worst, abs(ma[key] - mb[key]) / max(1.0, abs(mb[key])))
            if a.evaluation is not None:
                np.testing.assert_allclose(a.evaluation["eval_returns"], b.evaluation["eval_returns"], rtol=1e-9)
        assert worst < 1e-9
        assert runs[0].updates == runs[1].updates == 90
        import jax
        for x, y in zip(jax.tree_util.tree_leaves(runs[0].backend.state()),
                        jax.tree_util.tree_leaves(runs[1].backend.state()), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)
    finally:
        for run in runs:
            run.close()


def test_a_dropped_non_finite_transition_is_left_out_of_the_n_step_windows_and_the_run_goes_on():
    import gymnasium as gym

    from jax_td3.config import config_for_env
    from jax_td3.envs import env_spec, make_env
    from jax_td3.loops.host import Trainer
    from jax_td3.settings import TrainSettings

    class NaNRewardAt57(gym.Wrapper):
        steps = 0

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.steps += 1
            return obs, float("nan") if self.steps == 57 else reward, terminated, truncated, info

    env = NaNRewardAt57(make_env("Pendulum-v1"))
    config = config_for_env("fasttd3", env_spec(env), hidden=(16, 16), critic_hidden=(16, 16), num_atoms=11,
                            v_min=-1650.0, v_max=0.0, batch_size=16, n_step=3)
    trainer = Trainer(config, TrainSettings(env="Pendulum-v1", total_steps=120, learning_starts=60, eval_every=1000,
                                            eval_episodes=1, skip_nonfinite=True), env=env)
    try:
        while not trainer.done:
            trainer.step()
        assert trainer.skipped_transitions == 1 and trainer.updates == 60
        buffer = trainer.buffer
        assert buffer.written + buffer.pending() == 119   # every finite transition starts one, the NaN none
        assert np.all(np.isfinite(buffer.arrays["reward"][:len(buffer)]))
        assert np.sum(buffer.arrays["discount"][:len(buffer)] > 0.99 ** 3 + 1e-6) == 2   # the two cut windows
    finally:
        trainer.close()


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


def assert_same_run(whole, resumed):
    a, b = final_trainer(whole), final_trainer(resumed)
    assert a["train_state"].keys() == b["train_state"].keys()
    for name in a["train_state"]:
        np.testing.assert_array_equal(a["train_state"][name], b["train_state"][name], err_msg=name)
    np.testing.assert_array_equal(a["noise_state"], b["noise_state"])
    assert a["buffer"].keys() == b["buffer"].keys()
    for name in a["buffer"]:   # the ring and the pending n-step windows
        np.testing.assert_array_equal(a["buffer"][name], b["buffer"][name], err_msg=name)
    assert read_rows(resumed / "episodes.csv") == read_rows(whole / "episodes.csv")


def test_resume_after_sigkill_ends_exactly_like_an_uninterrupted_run(tmp_path):
    flags = VARIANTS["jax-2envs-nstep3"]
    assert train(tmp_path / "whole", *flags) == 0
    killed = tmp_path / "killed"
    assert start_and_kill(killed, flags, delay=0.2) == -signal.SIGKILL
    assert not (killed / "summary.json").exists(), "the child finished before it was killed"
    assert train(killed, *flags, "--resume") == 0
    summary = json.loads((killed / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < 300
    assert_same_run(tmp_path / "whole", killed)
    assert read_rows(killed / "metrics.csv") == read_rows(tmp_path / "whole" / "metrics.csv")


def test_torch_run_continued_from_its_checkpoint_ends_like_an_uninterrupted_one(tmp_path):
    """A run stopped at step 130 (mid-episode, pending windows) and resumed to 300 ends in the same state."""
    flags = [*VARIANTS["torch-2envs-nstep3"], "--actor-lr-end", "1e-4", "--critic-lr-end", "1e-4",
             "--lr-schedule-updates", "100"]
    assert train(tmp_path / "whole", *flags) == 0
    part = tmp_path / "part"
    assert train(part, *flags, "--total-steps", "130") == 0   # the last --total-steps wins
    assert train(part, *flags, "--resume") == 0
    assert_same_run(tmp_path / "whole", part)


def test_the_cosine_schedule_runs_over_the_runs_updates_when_lr_ends_are_given(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--total-steps", "300", "--actor-lr-end", "1e-5") == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["lr_schedule_updates"] == 200
    assert load_checkpoint(list_checkpoints(out)[-1]).contents["config"]["fields"]["lr_schedule_updates"] == 200


def test_export_holds_the_normaliser_and_acts_like_the_backend_then_eval_reads_it(tmp_path, capsys):
    from jax_td3.backends import make_backend
    from jax_td3.export import train_state_from_checkpoint
    from torch_ref.fasttd3 import Actor, EmpiricalNormalization

    out = tmp_path / "run"
    assert train(out, *VARIANTS["jax-1env"]) == 0
    agent = tmp_path / "agent.pt"
    assert main(["export", str(out), "--to", "torch", str(agent)]) == 0
    blob = torch.load(agent, weights_only=True)
    c = blob["config"]
    assert c["algo"] == "fasttd3" and c["module"] == "torch_ref.fasttd3"
    assert set(blob) >= {"actor", "critic", "critic_target", "obs_normalizer"}
    dtype = getattr(torch, c["dtype"])
    actor = Actor(c["obs_dim"], c["act_dim"], c["action_low"], c["action_high"], c["hidden"], c["init_scale"],
                  dtype=dtype)
    actor.load_state_dict(blob["actor"])
    normalizer = EmpiricalNormalization(c["obs_dim"], dtype=dtype)
    normalizer.load_state_dict(blob["obs_normalizer"])
    assert int(normalizer.count) == 300

    config, saved_dtype, state, _ = train_state_from_checkpoint(out)
    obs = np.random.default_rng(0).uniform(-8, 8, (5, 3))
    with torch.no_grad():
        exported = actor(normalizer(torch.as_tensor(obs, dtype=dtype), update=False)).numpy()
    backend = make_backend("jax", config, state, saved_dtype)
    acted = np.stack([backend.act(o) for o in obs])
    np.testing.assert_allclose(exported, acted, rtol=1e-5, atol=1e-6)   # float32: torch's and NumPy's roundings
    assert not np.allclose(acted, np.asarray(make_backend("jax", config, state._replace(
        obs_normalizer=state.obs_normalizer._replace(mean=state.obs_normalizer.mean * 0 + 1)),
        saved_dtype).act_batch(obs)))   # the normaliser matters

    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "2"]) == 0
    from_checkpoint = capsys.readouterr().out.split("return ")[1].split(" over")[0]
    assert main(["eval", str(agent), "--episodes", "2", "--backend", "torch"]) == 0
    from_export = capsys.readouterr().out.split("return ")[1].split(" over")[0]
    assert from_export == from_checkpoint


@pytest.mark.parametrize("flags, message", [
    (["--compiled", "--n-step", "5"], "needs --learning-starts >= 4"),   # the compiled loop's rules are the host's
    (["--updates-per-call", "2"], "fasttd3 does not run --updates-per-call > 1 yet"),
    (["--num-atoms", "1"], "num_atoms must be >= 2"),
    (["--v-min", "0", "--v-max", "0"], "v_min must be < v_max"),
    (["--n-step", "0"], "expected a positive integer"),
    (["--n-step", "5"], "needs --learning-starts >= 4"),
    (["--algo", "td3"], "td3 has no setting --num-atoms, --v-max, --v-min (fasttd3 only)"),
])
def test_refusals_are_one_line_and_exit_2(flags, message, tmp_path, capsys):
    learning_starts = ["--learning-starts", "2"] if "--n-step" in flags else []
    try:
        code = main(["train", *RUN_FLAGS, "--total-steps", "300", *learning_starts, "--out", str(tmp_path / "run"),
                     *flags])
    except SystemExit as exit:   # argparse's own refusals
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()
