"""Checkpoints: round trip, atomic writes with rotation, corruption and truncation detection,
and moving a train state between the two backends."""

import numpy as np
import pytest

from jax_td3.backends.base import pack_train_state, unpack_train_state
from jax_td3.run import checkpoint as ckpt
from jax_td3.run.checkpoint import CheckpointError


def contents(step=7):
    rng = np.random.default_rng(step)
    return {"train_state": [rng.standard_normal((3, 2)), np.arange(4, dtype=np.int32)],
            "counters": {"env_steps": step, "episode_return": -12.5},
            "rng": {"explore": rng.bit_generator.state},   # PCG64 state: integers beyond 64 bits
            "buffer": None, "returns": [1.0, 2.0]}


def test_round_trip_keeps_values_dtypes_and_big_integers(tmp_path):
    original = contents()
    path = ckpt.save_checkpoint(tmp_path, 7, original, {"backend": "jax", "dtype": "float64"})
    assert path == tmp_path / "checkpoints" / "ckpt-0000000007.jtd3"
    loaded = ckpt.load_checkpoint(path)
    assert loaded.metadata["backend"] == "jax" and loaded.metadata["step"] == 7
    assert loaded.metadata["format_version"] == ckpt.FORMAT_VERSION and len(loaded.metadata["payload_sha256"]) == 64
    np.testing.assert_array_equal(loaded.contents["train_state"][0], original["train_state"][0])
    assert loaded.contents["train_state"][1].dtype == np.int32
    assert loaded.contents["counters"] == original["counters"]
    assert loaded.contents["rng"]["explore"] == original["rng"]["explore"]
    generator = np.random.default_rng()
    generator.bit_generator.state = loaded.contents["rng"]["explore"]
    assert loaded.contents["buffer"] is None and loaded.contents["returns"] == [1.0, 2.0]


def test_keeps_the_newest_n_and_leaves_no_temporary_files(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(tmp_path, step, contents(step), {}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-0000000030.jtd3", "ckpt-0000000040.jtd3"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-0000000030.jtd3", "ckpt-0000000040.jtd3"]


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b[:len(ckpt.MAGIC) + 5], "truncated"),
    (lambda b: b[:-50] + bytes([b[-50] ^ 0xFF]) + b[-49:], "checksum"),
    (lambda b: b"not a checkpoint", "bad magic"),
    (lambda b: b.replace(b'"format_version": %d' % ckpt.FORMAT_VERSION, b'"format_version": 9', 1), "format version 9"),
])
def test_damaged_files_are_refused_with_a_clear_error(tmp_path, damage, message):
    path = ckpt.save_checkpoint(tmp_path, 1, contents(), {})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_checkpoint(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        ckpt.load_checkpoint(tmp_path / "nope.jtd3")


def test_latest_valid_skips_a_corrupted_newest_with_a_warning(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, contents(1), {})
    newest = ckpt.save_checkpoint(tmp_path, 2, contents(2), {})
    newest.write_bytes(newest.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        found = ckpt.latest_valid_checkpoint(tmp_path)
    assert found.metadata["step"] == 1
    assert ckpt.latest_valid_checkpoint(tmp_path / "empty") is None


def test_train_state_shapes_are_checked_against_the_config():
    import jax

    from jax_td3.config import make_config
    from jax_td3.update import init_train_state

    config = make_config("td3", obs_dim=3, act_dim=1, hidden=(8, 8))
    leaves = pack_train_state(jax.jit(init_train_state, static_argnums=0)(config, jax.random.PRNGKey(0)))
    state = unpack_train_state(config, "float32", leaves)
    np.testing.assert_array_equal(state.actor_params["params"]["l1"]["kernel"], leaves["actor_params/params/l1/kernel"])
    with pytest.raises(CheckpointError, match="shape"):
        unpack_train_state(config.replace(hidden=(16, 8)), "float32", leaves)
    with pytest.raises(CheckpointError, match="arrays"):
        unpack_train_state(config.replace(hidden=(8, 8, 8)), "float32", leaves)
    with pytest.raises(CheckpointError, match="shape"):  # one critic instead of two
        unpack_train_state(make_config("ourddpg", obs_dim=3, act_dim=1, hidden=(8, 8)), "float32", leaves)


def test_a_jax_run_continues_identically_in_the_torch_backend(x64):
    """Snapshot a float64 JAX run, restore it into a PyTorch-backed trainer: the next updates agree."""
    from jax_td3.config import config_for_env
    from jax_td3.envs import env_spec, make_env
    from jax_td3.loops.host import Trainer
    from jax_td3.settings import TrainSettings

    config = config_for_env("td3", env_spec(make_env("Pendulum-v1")), hidden=(16, 16), batch_size=16)
    settings = dict(env="Pendulum-v1", total_steps=400, seed=2, dtype="float64", learning_starts=50,
                    eval_every=1_000, eval_episodes=1)
    source = Trainer(config, TrainSettings(backend="jax", **settings))
    for _ in range(200):   # an episode boundary: the env was just reset
        source.step()
    _, snapshot = ckpt.decode(ckpt.encode(source.snapshot(include_buffer=True), {"backend": "jax"}))
    continued = {}
    for backend in ("jax", "torch"):
        trainer = Trainer(config, TrainSettings(backend=backend, **settings))
        trainer.restore(snapshot)
        trainer.obs, _ = trainer.env.reset(seed=99)   # both continue from the same env state
        continued[backend] = [trainer.step() for _ in range(20)]
        assert trainer.updates == source.updates + 20
    for a, b in zip(continued["jax"], continued["torch"]):
        np.testing.assert_allclose(a.action, b.action, rtol=1e-9)
        for ma, mb in zip(a.updates, b.updates):
            np.testing.assert_allclose(ma["critic_loss"], mb["critic_loss"], rtol=1e-9)
            np.testing.assert_allclose(ma["actor_loss"], mb["actor_loss"], rtol=1e-9, atol=1e-12)


def test_eval_reads_a_compiled_multi_seed_checkpoint(tmp_path):
    """The compiled loop stores one train state per seed; ``eval --agent I`` picks one."""
    import dataclasses

    import jax

    from jax_td3.config import make_config
    from jax_td3.evaluate import evaluate_checkpoint
    from jax_td3.update import init_train_state

    config = make_config("td3", obs_dim=3, act_dim=1, max_action=2.0, hidden=(8, 8))
    init = jax.jit(init_train_state, static_argnums=0)
    states = [pack_train_state(init(config, jax.random.PRNGKey(s))) for s in (4, 5)]
    contents = {"config": {"algo": "td3", "fields": dataclasses.asdict(config)},
                "compiled": {"seeds": [4, 5]}, "train_states": states}
    path = ckpt.save_checkpoint(tmp_path, 100, contents, {"backend": "jax-compiled", "dtype": "float32",
                                                           "env": "Pendulum-v1"})
    first, second = (evaluate_checkpoint(path, episodes=1, agent=i) for i in (0, 1))
    assert (first["seed"], second["seed"]) == (104, 105) and first["trained_with"] == "jax-compiled"
    assert first["eval_return_mean"] != second["eval_return_mean"]
    with pytest.raises(CheckpointError, match="out of range"):
        evaluate_checkpoint(path, episodes=1, agent=2)
