"""Checkpoint train states are keyed by tree path (format 2), with optimizer states named by type, so a
changed leaf order or optimizer chain still loads; format-1 files (jax-td3 0.1.0) still load and evaluate."""

from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from jax_td3.backends.base import leaf_names, pack_train_state, train_state_template, unpack_train_state, unpack_tree
from jax_td3.config import make_config
from jax_td3.run import checkpoint as ckpt
from jax_td3.update import adam, adam_state, init_train_state

OLD = Path(__file__).parent / "data" / "td3-pendulum-v0.1.0.jtd3"
CONFIG = make_config("td3", obs_dim=3, act_dim=1, hidden=(8, 8))


def trained_looking_state():
    """A train state whose every leaf differs from a fresh one (so a misplaced array would show)."""
    state = jax.jit(init_train_state, static_argnums=0)(CONFIG, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(lambda x: np.asarray(rng.standard_normal(np.shape(x)), x.dtype)
                                  if np.issubdtype(x.dtype, np.floating) else np.asarray(x) + 7, state)


def assert_same_state(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for (name, x), (_, y) in zip(leaf_names(a), leaf_names(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_optimizer_states_are_named_by_type():
    names = list(pack_train_state(trained_looking_state()))
    assert "actor_params/params/l1/kernel" in names and names[-1] == "step"
    assert "critic_opt_state/ScaleByAdamState/nu/params/l2/kernel" in names
    assert "actor_opt_state/ScaleByAdamState/count" in names


def test_a_path_keyed_file_survives_a_changed_leaf_order():
    state = trained_looking_state()
    shuffled = dict(reversed(list(pack_train_state(state).items())))
    _, contents = ckpt.decode(ckpt.encode({"train_state": shuffled}, {}))
    assert_same_state(unpack_train_state(CONFIG, "float32", contents["train_state"]), state)


def test_a_path_keyed_file_survives_a_changed_optimizer_chain():
    """A chain with one more stage (gradient clipping in front, the Adam chain nested in it) finds the Adam
    moments under the same names: the train state loads into the new structure unchanged."""
    state = trained_looking_state()
    clipped = optax.chain(optax.clip_by_global_norm(1.0), adam(1e-3, 0.9, 0.999, 1e-8))
    template = train_state_template(CONFIG)
    template = template._replace(actor_opt_state=jax.eval_shape(clipped.init, template.actor_params))
    assert jax.tree_util.tree_structure(template) != jax.tree_util.tree_structure(state)
    loaded = unpack_tree(template, pack_train_state(state), "float32")
    for network in ("actor", "critic"):
        for x, y in zip(jax.tree_util.tree_leaves(adam_state(getattr(loaded, f"{network}_opt_state"))),
                        jax.tree_util.tree_leaves(adam_state(getattr(state, f"{network}_opt_state"))), strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(loaded.actor_params["params"]["l2"]["kernel"],
                                  state.actor_params["params"]["l2"]["kernel"])


def test_format_1_lists_load_in_tree_order():
    state = trained_looking_state()
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    assert_same_state(unpack_train_state(CONFIG, "float32", leaves), state)


def test_a_missing_or_unexpected_array_is_named():
    arrays = pack_train_state(trained_looking_state())
    arrays["actor_params/params/l9/kernel"] = arrays.pop("actor_params/params/l1/kernel")
    with pytest.raises(ckpt.CheckpointError, match="missing .*l1/kernel.* unexpected .*l9/kernel"):
        unpack_train_state(CONFIG, "float32", arrays)


def test_new_files_are_format_2_and_record_the_package_version(tmp_path):
    from jax_td3 import __version__

    path = ckpt.save_checkpoint(tmp_path, 5, {"train_state": pack_train_state(trained_looking_state())}, {})
    metadata = ckpt.read_metadata(path)
    assert metadata["format_version"] == 2 == ckpt.FORMAT_VERSION
    assert metadata["jax_td3_version"] == __version__ and metadata["step"] == 5
    assert ckpt.load_checkpoint(OLD).metadata["format_version"] == 1


def test_the_previous_release_checkpoint_evaluates_to_the_same_return():
    """The return jax-td3 gave for this file before checkpoints were keyed by path (its 0.1.0 reader, on the
    machine these numbers were set on: float32 matmuls on other processors may round differently)."""
    from jax_td3.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(OLD, episodes=2)
    assert result["seed"] == 103
    np.testing.assert_allclose(result["returns"], [-1157.0038126600086, -1381.9730646958953], rtol=1e-6)
