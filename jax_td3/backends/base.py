"""The small interface the training loop talks to; a backend holds only the learner.

The loop owns everything else (environments, replay buffer, all randomness), so two
backends fed the same batches and the same target-policy noise compute the same run.
Train states cross this interface in the JAX layout (``update.TrainState``) with
numpy leaves, so either backend can load what the other saved.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from jax_td3.dtypes import dtype_named
from jax_td3.errors import CheckpointError
from jax_td3.update import Batch, TrainState

# Metrics every backend reports for one update, as Python floats.
UPDATE_METRICS = ("critic_loss", "actor_loss", "actor_updated")


class Backend(Protocol):
    name: str
    dtype: np.dtype

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's action for one observation, shape (act_dim,), float64."""

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's actions for a batch of observations (B, obs_dim): (B, act_dim), float64.
        Row i equals ``act(obs[i])`` (one batched forward instead of B)."""

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        """One update on a host batch (numpy, ``Batch`` layout) with N(0, 1) target-policy noise.

        Returns ``UPDATE_METRICS`` (``actor_loss`` is 0 where the actor was not updated).
        """

    def state(self) -> TrainState:
        """The train state in the JAX layout with numpy leaves (a copy)."""

    def load_state(self, state: TrainState) -> None:
        """Replace the train state (JAX layout, numpy or JAX leaves)."""


# -- the train state as arrays keyed by tree path (what checkpoints store) ---------------

def leaf_names(tree) -> list[tuple[str, object]]:
    """``(name, leaf)`` of every leaf of ``tree`` in ``jax.tree_util`` order; the name is the leaf's tree path
    joined by "/" (``actor_params/params/l1/kernel``), except in optimizer chains (plain tuples of states):
    a state is named by its type, not its position, and a nested chain adds no name of its own
    (``actor_opt_state/ScaleByAdamState/mu/params/l1/kernel``). So a chain that gains or loses a stage, or is
    wrapped in another, keeps the names of the states it still has. Where that would name two leaves alike
    (two states of one type), every position is named by its index instead."""
    import jax

    paths_and_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    for by_type in (True, False):
        named = [(_path_name(tree, path, by_type), leaf) for path, leaf in paths_and_leaves]
        if len({name for name, _ in named}) == len(named):
            return named
    raise ValueError(f"leaf names of a {type(tree).__name__} are not unique")


def _path_name(tree, path, by_type: bool) -> str:
    import jax

    parts, node = [], tree
    for key in path:
        if isinstance(key, jax.tree_util.SequenceKey):
            child = node[key.idx]
            if not by_type or _is_named_tuple(node):
                parts.append(str(key.idx))
            elif _is_named_tuple(child):
                parts.append(type(child).__name__)
            elif not isinstance(child, (tuple, list)):
                parts.append(str(key.idx))   # a leaf in a plain tuple; a nested chain adds nothing
            node = child
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
            node = getattr(node, key.name)
        elif isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
            node = node[key.key]
        else:   # a custom node's flattened index: its children are not reachable by key
            parts.append(str(key.key))
            node = None
    return "/".join(parts)


def _is_named_tuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def pack_train_state(state) -> dict[str, np.ndarray]:
    """The leaves of a JAX-layout train state (or any subtree, e.g. actor parameters) as numpy arrays keyed
    by ``leaf_names`` (in ``jax.tree_util`` order)."""
    return {name: np.asarray(leaf) for name, leaf in leaf_names(state)}


def unpack_tree(template, arrays, dtype: str, what: str = "checkpoint train state", hint: str = ""):
    """A tree shaped like ``template`` (arrays or ``jax.ShapeDtypeStruct``s) filled from ``arrays``: a dict
    keyed by ``leaf_names`` (format 2, in any order), or a list in ``jax.tree_util`` order (format 1).
    Floating leaves become ``dtype``, others keep the template's dtype. CheckpointError if they do not fit."""
    import jax

    expected = leaf_names(template)
    if isinstance(arrays, dict):
        names = [name for name, _ in expected]
        if len(arrays) != len(names):
            raise CheckpointError(f"{what} has {len(arrays)} arrays; {hint or 'this tree'} needs {len(names)} "
                                  f"(another algorithm or network?)")
        missing, unexpected = sorted(set(names) - set(arrays)), sorted(set(arrays) - set(names))
        if missing or unexpected:
            raise CheckpointError(f"{what} arrays do not fit {hint or 'this tree'}: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")
        leaves = [arrays[name] for name in names]
    else:
        leaves = list(arrays)
        if len(leaves) != len(expected):
            raise CheckpointError(f"{what} has {len(leaves)} arrays; {hint or 'this tree'} needs {len(expected)} "
                                  f"(another algorithm or network?)")
    out = []
    for (name, want), have in zip(expected, leaves):
        if tuple(np.shape(have)) != tuple(want.shape):
            raise CheckpointError(f"{what} array {name} has shape {tuple(np.shape(have))}, "
                                  f"expected {tuple(want.shape)} (other network shapes?)")
        floating = np.issubdtype(np.dtype(want.dtype), np.floating)
        out.append(np.asarray(have, np.dtype(dtype) if floating else want.dtype))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), out)


def train_state_template(config):
    """The structure and shapes of ``config``'s train state (``jax.ShapeDtypeStruct`` leaves, float32: the
    dtype is the caller's to choose, and this needs no x64 mode)."""
    import jax

    from jax_td3.update import init_train_state

    return jax.eval_shape(lambda: init_train_state(config, jax.random.PRNGKey(0), np.float32))


def unpack_train_state(config, dtype: str, arrays):
    """Rebuild a train state (numpy leaves, floats in ``dtype``) for ``config`` from ``pack_train_state``'s
    dict, or from a format-1 checkpoint's list of leaves; CheckpointError if the arrays do not fit."""
    template = train_state_template(config)
    if not isinstance(arrays, dict):
        arrays = _format_1_arrays(template, list(arrays), config)
    return unpack_tree(template, arrays, dtype_named(dtype).name,
                       hint=f"{config.algo} with hidden {config.hidden}")


def _format_1_arrays(template, leaves: list, config) -> dict:
    """Format 1 (jax-td3 0.1.0) stored the leaves in ``jax.tree_util`` order of its train state, whose optimizer
    chains held arrays only in their Adam state: params, targets, each Adam state's (count, mu, nu), step.
    Named here from the current template, so the names (and the chain's other stages) may have moved on."""
    from jax_td3.update import adam_state

    names = []
    for field, value in zip(template._fields, template):
        if field.endswith("_opt_state"):
            names += [f"{field}/ScaleByAdamState/{name}" for name, _ in leaf_names(adam_state(value))]
        else:
            names += ["/".join(filter(None, (field, name))) for name, _ in leaf_names(value)]
    if len(leaves) != len(names):
        raise CheckpointError(f"checkpoint train state has {len(leaves)} arrays; {config.algo} with hidden "
                              f"{config.hidden} needs {len(names)} (another algorithm or network?)")
    return dict(zip(names, leaves))
