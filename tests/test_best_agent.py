"""The best agent a run keeps (``DIR/best.jtd3``): which evaluation it is, that it re-evaluates to it, and
how a resumed run continues it."""

import numpy as np

from jax_td3.cli import main
from jax_td3.evaluate import evaluate_checkpoint
from jax_td3.run.checkpoint import BEST_AGENT_FILE, load_checkpoint, read_metadata, save_best_agent
from jax_td3.run.logger import read_metrics
from jax_td3.run.training import _best_so_far

RUN_FLAGS = ["--env", "Pendulum-v1", "--hidden", "16,16", "--batch-size", "32", "--learning-starts", "100",
             "--eval-every", "100", "--eval-episodes", "1", "--checkpoint-every", "100", "--seed", "3",
             "--no-progress"]


def train(out, *flags):
    return main(["train", *RUN_FLAGS, "--out", str(out), *flags])


def evaluations(run):
    return [(int(r["step"]), r["eval_return_mean"]) for r in read_metrics(run / "metrics.csv")]


def test_best_agent_is_the_first_best_evaluation_and_reevaluates_to_it(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--total-steps", "600") == 0
    logged = evaluations(run)
    best_return = max(r for _, r in logged)
    best_step = next(s for s, r in logged if r == best_return)   # a tie keeps the earlier agent
    metadata = read_metadata(run / BEST_AGENT_FILE)
    assert (metadata["step"], metadata["eval_return_mean"]) == (best_step, best_return)
    assert metadata["has_buffer"] is False
    assert load_checkpoint(run / BEST_AGENT_FILE).contents["trainer"]["buffer"] is None
    again = evaluate_checkpoint(run / BEST_AGENT_FILE, episodes=1)
    assert again["eval_return_mean"] == best_return


def test_a_resumed_run_only_replaces_the_best_agent_with_a_better_one(tmp_path):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert train(whole, "--total-steps", "600") == 0
    assert train(run, "--total-steps", "300") == 0
    assert train(run, "--total-steps", "600", "--resume") == 0
    # The same run in two sittings keeps the same best agent.
    assert read_metadata(run / BEST_AGENT_FILE)["step"] == read_metadata(whole / BEST_AGENT_FILE)["step"]
    for a, b in zip(load_checkpoint(run / BEST_AGENT_FILE).contents["trainer"]["train_state"].values(),
                    load_checkpoint(whole / BEST_AGENT_FILE).contents["trainer"]["train_state"].values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_bar_on_resume_is_the_best_agent_before_the_checkpoint_or_else_the_best_logged(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--total-steps", "400") == 0
    logged = evaluations(run)
    contents = load_checkpoint(run / BEST_AGENT_FILE).contents
    # A best agent from before the resume point sets the bar.
    save_best_agent(run, 200, contents, {"eval_return_mean": -1.5e3})
    assert _best_so_far(run, 300) == -1.5e3
    # One from after it belongs to steps that run again: it goes, and the logged evaluations up to the
    # resume point set the bar.
    save_best_agent(run, 400, contents, {"eval_return_mean": 0.0})
    assert _best_so_far(run, 300) == max(r for s, r in logged if s <= 300)
    assert not (run / BEST_AGENT_FILE).exists()
