"""The whole-run mode says why two runs separated: a bug (in the update or in the loop) or chaos."""

from __future__ import annotations

import pytest

pytest.importorskip("gymnasium", reason="whole-run parity needs Gymnasium (pip install 'jax-td3[envs]')")

from jax_td3.config import config_for_env  # noqa: E402
from jax_td3.envs import env_spec, make_env  # noqa: E402
from jax_td3.parity import run_whole_parity  # noqa: E402
from jax_td3.settings import TrainSettings  # noqa: E402


def tiny_pendulum_config(**overrides):
    return config_for_env("td3", env_spec(make_env("Pendulum-v1")), hidden=(8, 8), batch_size=8, **overrides)


def settings(total_steps, learning_starts, seed=0, dtype="float64"):
    return TrainSettings(env="Pendulum-v1", total_steps=total_steps, seed=seed, dtype=dtype,
                         learning_starts=learning_starts, eval_every=10_000, eval_episodes=1)


def test_a_bug_in_the_update_gets_verdict_bug_with_the_update_level_divergence():
    """Polyak with tau and 1 - tau swapped in the reference: the runs separate at the step of the first actor
    update, and re-running that update from one state names the first critic-target tensor at update 2."""
    report = run_whole_parity(tiny_pendulum_config(), settings(30, 20), mutant="polyak-swapped")
    assert not report.passed and report.mutant == "polyak-swapped"
    assert (report.first_divergence.step, report.first_divergence.update) == (22, 2)
    verdict = report.verdict
    assert (verdict.kind, verdict.cause, verdict.step, verdict.rerun_updates) == ("bug", "update", 22, 1)
    assert (verdict.divergence.quantity, verdict.divergence.update) == ("critic_target.l1.weight", 2)
    assert verdict.divergence.max_rel > 1e-5
    as_dict = report.to_dict()["verdict"]
    assert as_dict["verdict"] == "bug" and as_dict["divergence"]["quantity"] == "critic_target.l1.weight"
    assert "VERDICT: bug" in report.table()


def test_a_bug_in_the_loop_gets_verdict_bug_in_the_loop():
    """not_done stored as 0 at Pendulum's time limit (step 200): the learners agree, the transitions do not."""
    report = run_whole_parity(tiny_pendulum_config(), settings(201, 1_000), mutant="truncation-as-done")
    d = report.first_divergence
    assert (d.step, d.quantity) == (200, "not_done")
    assert (report.verdict.kind, report.verdict.cause, report.verdict.step) == ("bug", "loop", 200)


def test_a_one_ulp_perturbation_gets_verdict_chaos():
    """JAX against itself with one weight one ulp higher: the difference grows until it leaves a tight
    tolerance (1e-16, reached near step 260 here); every single update agrees, so the verdict is chaos and
    the horizon is this run's own."""
    report = run_whole_parity(tiny_pendulum_config(), settings(300, 20), backends=("jax", "jax"),
                              perturb="actor.l1.kernel", tol=1e-16)
    assert not report.passed
    step = report.first_divergence.step
    assert 100 < step <= 300
    verdict = report.verdict
    assert (verdict.kind, verdict.step, verdict.cause, verdict.divergence) == ("chaos", step, None, None)
    assert verdict.chaos_horizon == step - 1 and verdict.rerun_updates == 1
    assert report.to_dict()["verdict"]["chaos_horizon"] == step - 1
    assert "VERDICT: chaos" in report.table()


def test_no_verdict_when_the_runs_agree_or_when_not_asked():
    report = run_whole_parity(tiny_pendulum_config(), settings(30, 20), mutant="polyak-swapped", verdict=False)
    assert not report.passed and report.verdict is None
    report = run_whole_parity(tiny_pendulum_config(), settings(30, 20))
    assert report.passed and report.verdict is None and report.to_dict()["verdict"] is None
