"""A checkpoint written by jax-td3 0.1.0 before the package was reorganised still loads, evaluates,
exports and resumes (data/td3-pendulum-v0.1.0.jtd3: TD3 4-4 on Pendulum-v1, seed 3, 40 steps,
updates from step 21, replay buffer included)."""

import shutil
from pathlib import Path

import numpy as np

from jax_td3.cli import main
from jax_td3.run.checkpoint import latest_valid_checkpoint, list_checkpoints, load_checkpoint

OLD = Path(__file__).parent / "data" / "td3-pendulum-v0.1.0.jtd3"


def test_an_old_checkpoint_restores_into_a_trainer_exactly():
    from jax_td3.backends.base import pack_train_state
    from jax_td3.loops.host import Trainer
    from jax_td3.run.checkpoint import config_from_checkpoint
    from jax_td3.settings import settings_from_values

    checkpoint = load_checkpoint(OLD)
    assert checkpoint.metadata["jax_td3_version"] == "0.1.0" and checkpoint.metadata["env_steps"] == 40
    contents = checkpoint.contents
    trainer = Trainer(config_from_checkpoint(contents), settings_from_values(contents["settings"]))
    trainer.restore(contents["trainer"])
    try:
        assert (trainer.env_steps, trainer.updates, len(trainer.buffer)) == (40, 20, 40)
        for saved, restored in zip(contents["trainer"]["train_state"],
                                   pack_train_state(trainer.backend.state()).values(), strict=True):
            np.testing.assert_array_equal(saved, restored)
        np.testing.assert_array_equal(trainer.obs, contents["trainer"]["obs"])  # the episode replayed
    finally:
        trainer.close()


def test_an_old_run_evaluates_exports_and_resumes_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(OLD, run / "checkpoints" / "ckpt-0000000040.jtd3")
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert main(["export", str(run), "--to", "torch", str(tmp_path / "agent.pt")]) == 0
    assert main(["train", "--out", str(run), "--resume", "--total-steps", "60", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed = latest_valid_checkpoint(run)
    assert resumed.metadata["env_steps"] == 60 and len(list_checkpoints(run)) == 2
    assert resumed.contents["trainer"]["counters"]["updates"] == 40
