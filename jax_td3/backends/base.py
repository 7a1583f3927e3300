"""The interface the training loop talks to; a backend holds only the learner.

The loop owns everything else (environments, replay buffer, all randomness), so two
backends fed the same batches and the same target-policy noise compute the same run.
Train states cross this interface in the JAX layout (``update.TrainState``) with
numpy leaves, so either backend can load what the other saved.

Two protocols, checked with ``isinstance``: ``Backend``, what every backend does (act, one
update on a host batch, the train state), and ``FusedBackend``, a ``Backend`` that also runs
blocks of updates on a device copy of the replay buffer (``updates_per_call`` > 1, ``overlap``).
The loop uses nothing else; a backend without the fused calls is refused by ``require_fused`` in
one line naming the backend and the option. ``backends.jax_backend.JaxBackend`` is a
``FusedBackend``; ``backends.torch_backend.TorchBackend`` a ``Backend``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import DTypeLike

from jax_td3.dtypes import dtype_named
from jax_td3.errors import CheckpointError, ConfigError
from jax_td3.update import Batch, TrainState

if TYPE_CHECKING:  # for annotations only
    from jax_td3.config import TD3Config

# Metrics every backend reports for one update, as Python floats.
UPDATE_METRICS = ("critic_loss", "actor_loss", "actor_updated")


@runtime_checkable
class Backend(Protocol):
    """What the loop asks of every backend."""

    name: str
    dtype: np.dtype

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's action for one observation, shape (act_dim,), float64."""

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        """The noiseless policy's actions for a batch of observations (B, obs_dim): (B, act_dim), float64.
        Row i equals ``act(obs[i])`` (one batched forward instead of B)."""

    def update(self, batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
        """One update on a host batch (numpy, the algorithm's ``Batch`` layout: ``jax_td3.update.Batch``, or
        ``jax_td3.fasttd3.state.Batch`` for fasttd3) with N(0, 1) target-policy noise.

        Returns ``UPDATE_METRICS`` (``actor_loss`` is 0 where the actor was not updated).
        """

    def observe(self, obs: np.ndarray) -> None:
        """Fold observations the loop collected (N, obs_dim) into the learner's observation statistics
        (fasttd3's normaliser, which ``act``, ``act_batch`` and ``update`` read); a no-op for the others."""

    def state(self) -> TrainState:
        """The train state in the JAX layout with numpy leaves (a copy)."""

    def load_state(self, state: TrainState) -> None:
        """Replace the train state (JAX layout, numpy or JAX leaves); acting uses its actor."""


@runtime_checkable
class FusedBackend(Backend, Protocol):
    """A backend that also runs K updates in one call on a device copy of the replay buffer, sampling it
    with a key of its own (``updates_per_call`` K > 1), without waiting for them (``overlap``)."""

    @property
    def has_replay(self) -> bool:
        """Whether the device replay copy exists (``load_replay`` made it and ``drop_replay`` did not drop it)."""

    def load_replay(self, buffer_state: dict) -> None:
        """Make the device replay a copy of a host ring (``ReplayBuffer.state_dict()``), slot for slot."""

    def sync_replay(self, new_transitions: Batch) -> None:
        """Append host transitions to the device replay copy."""

    def drop_replay(self) -> None:
        """Forget the device copy (the next fused call rebuilds it from the host buffer)."""

    def expect_compiled(self, thread: Any) -> None:
        """The first fused call waits for this thread compiling it ahead, rather than compile twice."""

    def update_many(self, key: Any, num_updates: int) -> list[dict[str, float]]:
        """``num_updates`` updates in one call, sampling the device replay with ``key``; their metrics."""

    def dispatch_many(self, key: Any, num_updates: int) -> dict:
        """``update_many`` without waiting: the metrics as device arrays, for ``fetch_metrics``."""

    def fetch_metrics(self, metrics: dict) -> list[dict[str, float]]:
        """The per-update metrics of a ``dispatch_many``, waiting for them."""

    def hold_acting_params(self, params: Any = None) -> None:
        """Act with these actor parameters (default: the current state's) until released or a state is loaded."""

    def release_acting_params(self) -> None:
        """Act with the current state's actor again."""

    def acting_params(self) -> Any:
        """The held actor parameters as numpy arrays (a copy), or None when acting uses the current state."""


def require_fused(backend: Backend, option: str) -> FusedBackend:
    """``backend`` as a ``FusedBackend``; a one-line ConfigError naming it and ``option`` if it is not one."""
    if not isinstance(backend, FusedBackend):
        raise ConfigError(f"backend {backend.name!r} does not run fused updates on a device replay, which "
                          f"`{option}` needs; use backend 'jax'")
    return backend


# -- the train state as arrays keyed by tree path (what checkpoints store) ---------------

def leaf_names(tree: Any) -> list[tuple[str, Any]]:
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


def _path_name(tree: Any, path: tuple, by_type: bool) -> str:
    import jax

    parts: list[str] = []
    node = tree
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


def _is_named_tuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def pack_train_state(state: Any) -> dict[str, np.ndarray]:
    """The leaves of a JAX-layout train state (or any subtree, e.g. actor parameters) as numpy arrays keyed
    by ``leaf_names`` (in ``jax.tree_util`` order)."""
    return {name: np.asarray(leaf) for name, leaf in leaf_names(state)}


def unpack_tree(template: Any, arrays: dict[str, Any] | Iterable[Any], dtype: str, what: str = "checkpoint train state",
                hint: str = "") -> Any:
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


def is_fasttd3(config: TD3Config) -> bool:
    """Whether ``config`` is FastTD3's (its own update, train state and batch: ``jax_td3.fasttd3``)."""
    return config.algo == "fasttd3"


def initial_train_state(config: TD3Config, key: Any, dtype: Any) -> Any:
    """A fresh train state of ``config``'s algorithm (``update.init_train_state``, or FastTD3's)."""
    if is_fasttd3(config):
        from jax_td3.fasttd3.update import init_train_state as init_fasttd3

        return init_fasttd3(config, key, dtype)   # type: ignore[arg-type]  # a FastTD3Config, by its algo
    from jax_td3.update import init_train_state

    return init_train_state(config, key, dtype)


def train_state_template(config: TD3Config) -> Any:
    """The structure and shapes of ``config``'s train state (``jax.ShapeDtypeStruct`` leaves, float32: the
    dtype is the caller's to choose, and this needs no x64 mode)."""
    import jax

    return jax.eval_shape(lambda: initial_train_state(config, jax.random.PRNGKey(0), np.float32))


def unpack_train_state(config: TD3Config, dtype: DTypeLike, arrays: dict[str, Any] | Iterable[Any]) -> Any:
    """Rebuild a train state (numpy leaves, floats in ``dtype``) for ``config`` from ``pack_train_state``'s
    dict, or from a format-1 checkpoint's list of leaves; CheckpointError if the arrays do not fit."""
    template = train_state_template(config)
    if not isinstance(arrays, dict):
        arrays = _format_1_arrays(template, list(arrays), config)
    return unpack_tree(template, arrays, dtype_named(dtype).name,
                       hint=f"{config.algo} with hidden {config.hidden}")


def _format_1_arrays(template: TrainState, leaves: list, config: TD3Config) -> dict:
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
