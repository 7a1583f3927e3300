"""``jax-td3 export``: a checkpoint's networks as plain torch_ref state_dicts, loadable without JAX."""

import shutil

import numpy as np
import pytest
import torch

import torch_ref.networks as torch_networks
from jax_td3.cli import main
from jax_td3.config import config_for_env
from jax_td3.dtypes import x64_scope
from jax_td3.export import train_state_from_checkpoint
from jax_td3.loops.host import Trainer
from jax_td3.networks import actor_action
from jax_td3.run.checkpoint import save_checkpoint
from jax_td3.run.training import checkpoint_contents
from jax_td3.settings import TrainSettings

CRITICS = {"td3": "Critic", "ourddpg": "SingleCritic", "ddpg": "DDPGCritic", "seed-ddpg": "SeedCritic"}


def trained_checkpoint(tmp_path, algo="td3", dtype="float64", hidden=(16, 16)):
    """A checkpoint of a short Pendulum run in which the networks and their targets have been updated."""
    from jax_td3.envs import env_spec, make_env

    extra = {} if algo in ("ddpg", "seed-ddpg") else {"hidden": hidden}
    config = config_for_env(algo, env_spec(make_env("Pendulum-v1")), batch_size=8, **extra)
    with x64_scope(dtype):   # JAX's x64 mode for a float64 run, for this run only
        trainer = Trainer(config, TrainSettings(env="Pendulum-v1", total_steps=60, seed=3, dtype=dtype,
                                                learning_starts=30, eval_every=1_000, eval_episodes=1))
        while not trainer.done:
            trainer.step()
        path = save_checkpoint(tmp_path / "run", trainer.env_steps, *checkpoint_contents(trainer, False))
    trainer.close()
    return path


@pytest.fixture(scope="module")
def td3_checkpoint(tmp_path_factory):
    return trained_checkpoint(tmp_path_factory.mktemp("td3"))


def build_torch_modules(c):
    """torch_ref modules from an export's config alone (what a deployment without JAX does), in the
    export's dtype before loading (loading float64 weights into float32 modules would round them)."""
    dtype = getattr(torch, c["dtype"])
    actor = torch_networks.Actor(c["obs_dim"], c["act_dim"], c["action_low"], c["action_high"], c["hidden"])
    critic = getattr(torch_networks, c["critic_class"])(c["obs_dim"], c["act_dim"], c["critic_hidden"])
    return actor.to(dtype), critic.to(dtype)


@pytest.mark.parametrize("algo", ["td3", "seed-ddpg"])
def test_export_loads_strictly_into_torch_ref_and_acts_like_the_jax_policy(tmp_path, td3_checkpoint, algo, x64):
    checkpoint = td3_checkpoint if algo == "td3" else trained_checkpoint(tmp_path, algo)
    out = tmp_path / "agent.pt"
    assert main(["export", str(checkpoint), "--to", "torch", str(out)]) == 0

    blob = torch.load(out, weights_only=True)   # plain tensors and plain values: no pickled classes
    c = blob["config"]
    assert (c["algo"], c["critic_class"], c["dtype"], c["step"]) == (algo, CRITICS[algo], "float64", 60)
    actor, critic = build_torch_modules(c)
    actor_target, critic_target = build_torch_modules(c)
    for module, key in ((actor, "actor"), (critic, "critic"), (actor_target, "actor_target"),
                        (critic_target, "critic_target")):
        module.load_state_dict(blob[key], strict=True)

    config, _, state, _ = train_state_from_checkpoint(checkpoint)
    obs = np.random.default_rng(0).normal(size=(64, config.obs_dim)) * 3
    with torch.no_grad():
        torch_actions = actor(torch.from_numpy(obs)).numpy()
        torch_target_actions = actor_target(torch.from_numpy(obs)).numpy()
    jax_actions = np.asarray(actor_action(config, state.actor_params, obs))
    jax_target_actions = np.asarray(actor_action(config, state.actor_target_params, obs))
    np.testing.assert_allclose(torch_actions, jax_actions, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(torch_target_actions, jax_target_actions, rtol=1e-12, atol=1e-14)
    # Trained: the online actor moved away from its (Polyak-averaged) target.
    assert not np.allclose(jax_actions, jax_target_actions, rtol=1e-6, atol=0)


def test_export_can_cast_to_float32(tmp_path, td3_checkpoint):
    checkpoint = td3_checkpoint
    out = tmp_path / "agent32.pt"
    assert main(["export", str(checkpoint), str(out), "--dtype", "float32"]) == 0
    blob = torch.load(out, weights_only=True)
    assert blob["config"]["dtype"] == "float32"
    assert {v.dtype for v in blob["actor"].values()} == {torch.float32}
    actor, _ = build_torch_modules(blob["config"])
    actor.load_state_dict(blob["actor"])
    config, _, state, _ = train_state_from_checkpoint(checkpoint)
    obs = np.random.default_rng(1).normal(size=(16, config.obs_dim))
    with torch.no_grad():
        actions = actor(torch.from_numpy(obs.astype(np.float32))).numpy()
    np.testing.assert_allclose(actions, np.asarray(actor_action(config, state.actor_params, obs)),
                               rtol=1e-5, atol=1e-5)


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "cannot read checkpoint"),
    ("corrupted", "checksum"),
    ("unknown-format", "unknown export format"),
    ("no-such-dir", "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, td3_checkpoint, case, message):
    checkpoint = tmp_path / "nope.jtd3"
    if case != "missing":
        shutil.copy(td3_checkpoint, checkpoint)
    args = [str(checkpoint), "--to", "torch", str(tmp_path / "agent.pt")]
    if case == "corrupted":
        _corrupt(checkpoint)
    elif case == "unknown-format":
        args[2] = "onnx"
    elif case == "no-such-dir":
        args[3] = str(tmp_path / "missing" / "agent.pt")
    capsys.readouterr()
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "agent.pt").exists()
