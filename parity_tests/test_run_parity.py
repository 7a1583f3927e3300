"""Whole-run parity (JAX and PyTorch backends training in lockstep) and moving a run between them."""

import copy
import json

import jax
import numpy as np
import pytest
import torch

# Whole runs need environments; a machine without Gymnasium (e.g. a bare GPU image) skips this file.
pytest.importorskip("gymnasium", reason="whole-run parity needs Gymnasium (pip install 'jax-td3[envs]')")

from jax_td3.cli import main
from jax_td3.config import config_for_env
from jax_td3.envs import env_spec, make_env
from jax_td3.loops.host import Trainer
from jax_td3.parity import plot_drift, resume_trainer, run_whole_parity
from jax_td3.run.checkpoint import load_checkpoint, save_checkpoint
from jax_td3.run.training import checkpoint_contents
from jax_td3.settings import TrainSettings


def pendulum_config(hidden=(64, 64), batch_size=64, algo="td3"):
    return config_for_env(algo, env_spec(make_env("Pendulum-v1")), hidden=hidden, batch_size=batch_size)


def test_float64_runs_stay_equal_through_episode_ends_and_evaluations(tmp_path):
    """1,500 steps of TD3 64-64 on Pendulum: warm-up, 1,000 updates, 7 episode ends (every 200 steps),
    3 evaluations; every action, transition, loss and parameter agrees to 1e-9 (measured: ~1e-15)."""
    settings = TrainSettings(env="Pendulum-v1", total_steps=1_500, seed=0, dtype="float64", learning_starts=500,
                             eval_every=500, eval_episodes=1)
    report = run_whole_parity(pendulum_config(), settings, params_every=10)
    assert report.passed, report.table()
    assert (report.steps, report.updates, report.evaluations) == (1_500, 1_000, 3)
    assert report.episode_ends == list(range(200, 1_501, 200))
    worst = max(s.max_rel for s in report.quantities.values())
    assert worst < 1e-9
    # Every kind of quantity was compared, and the learners really did diverge from their start.
    for name in ("action", "next_obs", "reward", "critic_loss", "actor_loss", "eval_return", "actor.l1.kernel",
                 "critic_target.l3.bias", "critic_adam_v.l2.kernel", "counters"):
        assert name in report.quantities, name
    assert report.quantities["critic_loss"].max_abs > 0 or report.quantities["actor.l1.kernel"].max_abs > 0
    plot_drift(report, tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 10_000


def test_a_planted_difference_is_reported_at_its_step_and_quantity(monkeypatch):
    """A one-ulp-scale nudge of one critic-target weight in the PyTorch learner, after its 30th update:
    the report names that tensor and that step, not the transitions or anything before."""
    from jax_td3.backends.torch_backend import TorchBackend

    original = TorchBackend.update

    def nudged(self, batch, target_noise):
        metrics = original(self, batch, target_noise)
        if self.agent.step == 30:
            with torch.no_grad():
                self.agent.critic_target.l2.weight[0, 0] += 1e-6
        return metrics

    monkeypatch.setattr(TorchBackend, "update", nudged)
    settings = TrainSettings(env="Pendulum-v1", total_steps=200, seed=1, dtype="float64", learning_starts=100,
                             eval_every=1_000, eval_episodes=1)
    report = run_whole_parity(pendulum_config(hidden=(16, 16), batch_size=16), settings)
    assert not report.passed
    d = report.first_divergence
    assert (d.step, d.update, d.quantity) == (130, 30, "critic_target.l2.kernel"), report.table()
    assert 1e-9 < d.max_rel < 1e-4 and d.max_abs == pytest.approx(1e-6, rel=1e-6)
    assert report.quantities["action"].first_violation is None or report.quantities["action"].first_violation > 130
    # The nudge sits in the torch backend's update, outside torch_ref: re-running that step through the
    # backends from one state finds it, so the verdict is a bug at that update, not chaos.
    verdict = report.verdict
    assert (verdict.kind, verdict.cause, verdict.step) == ("bug", "update", 130)
    assert (verdict.divergence.quantity, verdict.divergence.update) == ("critic_target.l2.kernel", 30)


def test_cli_run_mode_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "drift.png"
    code = main(["parity", "--run", "--total-steps", "300", "--hidden", "16,16", "--batch-size", "16",
                 "--learning-starts", "100", "--eval-every", "150", "--eval-episodes", "1", "--seed", "2",
                 "--json", "--plot", str(plot)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["passed"] and out["first_divergence"] is None
    assert (out["mode"], out["steps"], out["updates"], out["evaluations"]) == ("run", 300, 200, 2)
    assert out["steps_within_tolerance"] == 300 and out["max_rel"] < 1e-9
    assert plot.stat().st_size > 10_000


def test_cli_passes_every_config_flag_through_in_both_modes(monkeypatch, capsys):
    """The shared config flags (incl. --adam-b1, --reward-scale, --critic-weight-decay, --init) reach the
    config in both modes; the run mode's loop settings are the library's defaults but for 5,000 steps
    and 5 evaluation episodes."""
    import jax_td3.parity
    from jax_td3.parity import ParityReport
    from jax_td3.presets import DEFAULTS

    seen = {}

    def fake_update_level(config, **kwargs):
        seen["update"] = config
        return ParityReport(config.algo, kwargs["dtype"], 1, {}, None)

    def fake_run_level(config, settings, **kwargs):
        seen["run"], seen["settings"] = config, settings
        return ParityReport(config.algo, settings.dtype, 0, {}, None, mode="run", env=settings.env)

    monkeypatch.setattr(jax_td3.parity, "run_parity", fake_update_level)
    monkeypatch.setattr(jax_td3.parity, "run_whole_parity", fake_run_level)
    flags = ["--adam-b1", "0.8", "--reward-scale", "2.5", "--critic-weight-decay", "0.01", "--init", "flax",
             "--gamma", "0.9", "--json"]
    assert main(["parity", *flags]) == 0
    assert main(["parity", "--run", *flags]) == 0
    capsys.readouterr()
    for mode in ("update", "run"):
        config = seen[mode]
        assert (config.adam_b1, config.reward_scale, config.critic_weight_decay, config.init, config.gamma) == \
            (0.8, 2.5, 0.01, "flax", 0.9), mode
    settings = seen["settings"]
    assert (settings.total_steps, settings.eval_episodes) == (5_000, 5)
    for name in ("env", "learning_starts", "buffer_size", "expl_noise", "eval_every"):
        assert getattr(settings, name) == DEFAULTS[name], name


@pytest.mark.parametrize("flags, message", [
    (["--run", "--updates", "10"], "--updates"),
    (["--run", "--resync", "on"], "--resync"),
    (["--total-steps", "10"], "only apply with --run"),
    (["--run", "--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["--run", "--plot", "/no/such/dir/x.png"], "does not exist"),
    (["--perturb", "actor.l1.kernel"], "only apply with --run"),
    (["--run", "--total-steps", "10", "--hidden", "8,8", "--perturb", "actor.l9.kernel"], "no weight tensor"),
])
def test_cli_run_mode_bad_input_exits_2_with_one_line(flags, message, capsys):
    assert main(["parity", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_jax_against_itself_is_exact_and_a_one_ulp_perturbation_is_tracked():
    """JAX against JAX is bitwise equal; with one weight of the second run one ulp higher, that tensor's
    difference is exactly that ulp and the rest of the run still agrees far below 1e-9."""
    config = pendulum_config(hidden=(16, 16), batch_size=16)
    settings = TrainSettings(env="Pendulum-v1", total_steps=150, seed=3, dtype="float64", learning_starts=100,
                             eval_every=1_000, eval_episodes=1)
    same = run_whole_parity(config, settings, backends=("jax", "jax"))
    assert same.passed and all(s.max_abs == 0 for s in same.quantities.values()), same.table()

    perturbed = run_whole_parity(config, settings, backends=("jax", "jax"), perturb="actor.l1.kernel")
    assert perturbed.passed and perturbed.perturbed == "actor.l1.kernel"
    # A first-layer weight is below 1/sqrt(3) in size, so its ulp is at most 2**-53.
    assert 0 < perturbed.quantities["actor.l1.kernel"].max_abs <= 2.0 ** -53
    assert 0 < max(s.max_rel for s in perturbed.quantities.values()) < 1e-12
    assert perturbed.to_dict()["perturbed"] == "actor.l1.kernel"


# -- moving a run between frameworks -------------------------------------------------------------

@pytest.mark.parametrize("source, target", [("jax", "torch"), ("torch", "jax")])
def test_a_run_moves_to_the_other_framework_and_continues_as_if_it_had_not(tmp_path, source, target):
    """Train 250 steps in ``source``, checkpoint (with the buffer), continue 150 steps in ``target`` from
    the file; the uninterrupted ``source`` run's next 150 steps (150 updates, an episode end and an
    evaluation) are the same to 1e-9, and so are all parameters at the end."""
    config = pendulum_config(hidden=(16, 16), batch_size=16)
    settings = TrainSettings(env="Pendulum-v1", total_steps=400, seed=4, dtype="float64", learning_starts=100,
                             eval_every=300, eval_episodes=1, backend=source)
    run = Trainer(config, settings)
    for _ in range(250):
        run.step()
    path = save_checkpoint(tmp_path, run.env_steps, *checkpoint_contents(run, include_buffer=True))
    env_at_checkpoint = copy.deepcopy(run.env)   # the checkpoint cannot hold a mid-episode env state
    expected = [run.step() for _ in range(150)]

    moved = resume_trainer(path, backend=target, env=env_at_checkpoint)
    assert moved.backend.name == target
    # The transfer itself is exact: weights, targets, Adam moments and counters.
    saved = load_checkpoint(path).contents["trainer"]["train_state"]
    for x, y in zip(jax.tree_util.tree_leaves(moved.backend.state()), saved.values(), strict=True):
        np.testing.assert_array_equal(np.asarray(x), y)
    continued = [moved.step() for _ in range(150)]

    assert (moved.env_steps, moved.updates, moved.episodes) == (run.env_steps, run.updates, run.episodes) \
        == (400, 300, 2)
    for a, b in zip(expected, continued):
        np.testing.assert_allclose(b.action, a.action, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.next_obs, a.next_obs, rtol=1e-9, atol=1e-12)
        assert [m["actor_updated"] for m in a.updates] == [m["actor_updated"] for m in b.updates]
        for ma, mb in zip(a.updates, b.updates):
            np.testing.assert_allclose(mb["critic_loss"], ma["critic_loss"], rtol=1e-9)
            np.testing.assert_allclose(mb["actor_loss"], ma["actor_loss"], rtol=1e-9, atol=1e-12)
        assert (a.evaluation is None) == (b.evaluation is None)
        if a.evaluation is not None:
            np.testing.assert_allclose(b.evaluation["eval_returns"], a.evaluation["eval_returns"], rtol=1e-9)
    assert sum(r.evaluation is not None for r in continued) == 2 and any(r.truncated for r in continued)
    for x, y in zip(jax.tree_util.tree_leaves(moved.backend.state()), jax.tree_util.tree_leaves(run.backend.state())):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-9, atol=1e-12)
    run.close()
    moved.close()


def test_resume_without_the_env_starts_a_new_episode_in_either_framework(tmp_path):
    """Without the live environment both frameworks restart the same way: a reset from the env's saved
    random state; their continuations agree with each other."""
    config = pendulum_config(hidden=(16, 16), batch_size=16)
    settings = TrainSettings(env="Pendulum-v1", total_steps=260, seed=6, dtype="float64", learning_starts=50,
                             eval_every=1_000, eval_episodes=1)
    run = Trainer(config, settings)
    for _ in range(150):
        run.step()
    path = save_checkpoint(tmp_path, run.env_steps, *checkpoint_contents(run, include_buffer=True))
    run.close()
    jax_run, torch_run = resume_trainer(path, "jax"), resume_trainer(path, "torch")
    assert jax_run.episode_length == torch_run.episode_length == 0
    np.testing.assert_array_equal(jax_run.obs, torch_run.obs)
    for _ in range(60):
        a, b = jax_run.step(), torch_run.step()
        np.testing.assert_allclose(b.action, a.action, rtol=1e-9, atol=1e-12)
        for ma, mb in zip(a.updates, b.updates):
            np.testing.assert_allclose(mb["critic_loss"], ma["critic_loss"], rtol=1e-9)
    assert jax_run.updates == torch_run.updates == 160
    jax_run.close()
    torch_run.close()


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reachable by two implementations that round differently: TD3's training "
                                       "loop amplifies any ulp-level difference exponentially (measured, seed 0: "
                                       "within 1e-9 for 1,627 steps; see docs/cross-checking.md and the test below)")
def test_float64_runs_stay_equal_for_5000_steps_with_the_default_networks():
    """The issue's bar: 5,000 steps of TD3 (256-256, batch 256) on Pendulum, 4,000 updates, 25 episode ends,
    5 evaluations, max relative difference below 1e-9."""
    config = config_for_env("td3", env_spec(make_env("Pendulum-v1")))
    settings = TrainSettings(env="Pendulum-v1", total_steps=5_000, seed=0, dtype="float64", learning_starts=1_000,
                             eval_every=1_000, eval_episodes=5)
    report = run_whole_parity(config, settings)
    assert report.passed, report.table()
    assert (report.steps, report.updates, report.evaluations, len(report.episode_ends)) == (5_000, 4_000, 5, 25)
    assert max(s.max_rel for s in report.quantities.values()) < 1e-9


@pytest.mark.slow
def test_float64_cross_framework_drift_grows_like_a_one_ulp_perturbation():
    """TD3 64-64 (batch 256) on Pendulum, the --run defaults: JAX against PyTorch stays within 1e-9 for at
    least 3,000 steps (measured 3,653), and gives out no more than 500 steps before JAX against itself
    with one actor weight one ulp higher, which diverges too: the drift is the loop amplifying rounding,
    not a difference between the implementations (one of those shows at the step it happens)."""
    config = pendulum_config(hidden=(64, 64), batch_size=256)
    settings = TrainSettings(env="Pendulum-v1", total_steps=4_500, seed=0, dtype="float64", learning_starts=1_000,
                             eval_every=1_000, eval_episodes=5)
    frameworks = run_whole_parity(config, settings, params_every=10)
    rounding = run_whole_parity(config, settings, backends=("jax", "jax"), perturb="actor.l1.kernel",
                                params_every=10)
    assert not rounding.passed, rounding.table()
    assert frameworks.steps_within_tolerance >= 3_000, frameworks.table()
    assert frameworks.steps_within_tolerance >= rounding.steps_within_tolerance - 500, \
        (frameworks.steps_within_tolerance, rounding.steps_within_tolerance)
