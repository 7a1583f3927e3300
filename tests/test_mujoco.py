"""Gymnasium's MuJoCo tasks (the `mujoco` extra) train and evaluate like any other Gymnasium id."""

import json

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="the MuJoCo tasks need the mujoco extra: pip install 'jax-td3[mujoco]'")


def test_halfcheetah_v5_trains_checkpoints_and_reevaluates(tmp_path):
    from jax_td3.cli import main
    from jax_td3.evaluate import evaluate_checkpoint

    out = tmp_path / "run"
    code = main(["train", "--env", "HalfCheetah-v5", "--total-steps", "1200", "--learning-starts", "1000",
                 "--eval-every", "1200", "--eval-episodes", "1", "--hidden", "32,32", "--batch-size", "32",
                 "--updates-per-call", "100", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["env_steps"], summary["updates"], summary["episodes"]) == (1200, 200, 1)
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["obs_dim"], config["act_dim"]) == (17, 6)
    assert np.isfinite(summary["final_eval_return"])
    # A fresh evaluation of the checkpoint gives the return the run reported.
    assert evaluate_checkpoint(out, episodes=1)["eval_return_mean"] == summary["final_eval_return"]


@pytest.mark.parametrize("env_id, dims", [("Hopper-v5", (11, 3)), ("Walker2d-v5", (17, 6)), ("Ant-v5", (105, 8))])
def test_mujoco_locomotion_specs(env_id, dims):
    from jax_td3.envs import env_spec, make_env

    spec = env_spec(make_env(env_id))
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (*dims, 1000)
    assert spec.action_low == (-1.0,) * dims[1] and spec.action_high == (1.0,) * dims[1]
