"""Our JAX update as an adapter, and the one place that knows the JAX layout.

The JAX layout (``update.TrainState``):

- Flax ``Dense`` kernels are (in, out), the transpose of the neutral (out, in) ``weight``;
- the critics are stacked on a leading axis of size ``num_critics`` (also 1 for the single
  critics): slice ``c`` of layer ``l{i}`` is neutral layer ``l{i + c * n}`` for the MLP critics
  (``n`` layers per critic), so TD3's Q2 is ``l{n+1}`` .. ``l{2n}``;
- each optimizer state is an optax chain holding one ``ScaleByAdamState`` (one ``count`` for the tree,
  ``mu``/``nu`` shaped like the params), found by its type (``update.adam_state``).

Moving a state to the neutral format and back is a copy with transposes, no arithmetic, so it
is exact. The names of the JAX layout itself (``actor.l1.kernel``, ``critic_adam_v.l2.bias``:
one tensor per stacked leaf) are what the whole-run comparison reports, since the training
loop's backends exchange states in this layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import DTypeLike

from jax_td3.adapters.base import STATE_FAMILIES, NeutralState, quantity_names, tensor_names
from jax_td3.config import TD3Config
from jax_td3.dtypes import float_dtype
from jax_td3.errors import ConversionError
from jax_td3.update import Batch, TrainState, adam_state, init_train_state, update_with_internals, with_adam_state

# Which TrainState field holds each neutral state family, and through which network's layout.
_FIELDS = {"actor": ("actor_params", "actor"), "critic": ("critic_params", "critic"),
           "actor_target": ("actor_target_params", "actor"), "critic_target": ("critic_target_params", "critic")}
_ADAM = {"actor_adam_m": ("actor", "mu"), "actor_adam_v": ("actor", "nu"),
         "critic_adam_m": ("critic", "mu"), "critic_adam_v": ("critic", "nu")}


def adam_moments(opt_state: Any) -> optax.ScaleByAdamState:
    """The Adam part of an optimizer state made by ``update.adam``."""
    return adam_state(opt_state)


# -- JAX layout <-> neutral names --------------------------------------------------------

def _neutral_layer(config: TD3Config, layer: str, critic_index: int) -> str:
    if critic_index and config.critic_arch == "mlp":
        match = re.fullmatch(r"l(\d+)", layer)
        assert match is not None, layer  # the MLP critics' layers are l1, l2, ...
        number = int(match.group(1))
        return f"l{number + critic_index * (len(config.critic_hidden_sizes) + 1)}"
    return layer


def param_layout(config: TD3Config, network: str, params: Any) -> Iterator[tuple[str, tuple, bool]]:
    """``(neutral tensor name, (layer, "kernel"|"bias", critic index or None), transpose)`` for every
    parameter of ``params``, a tree of ``network`` ("actor" or "critic"), in report order."""
    is_critic = network == "critic"
    for c in range(config.num_critics if is_critic else 1):
        for layer in params["params"]:
            name = _neutral_layer(config, layer, c)
            index = c if is_critic else None
            yield f"{name}.weight", (layer, "kernel", index), True
            yield f"{name}.bias", (layer, "bias", index), False


def _get(params: Any, index: tuple[str, str, int | None]) -> np.ndarray:
    layer, leaf, c = index
    x = np.asarray(params["params"][layer][leaf])
    return x if c is None else x[c]


def neutral_tensors(config: TD3Config, network: str, params: Any) -> dict[str, np.ndarray]:
    """``{neutral tensor name: array}`` of one params tree (or a tree shaped like it: gradients, moments)."""
    return {name: (_get(params, index).T if transpose else _get(params, index))
            for name, index, transpose in param_layout(config, network, params)}


def to_neutral(config: TD3Config, state: TrainState) -> NeutralState:
    """The neutral state of a JAX train state."""
    out: NeutralState = {}
    for fam in STATE_FAMILIES:
        if fam in _FIELDS:
            field, network = _FIELDS[fam]
            tree = getattr(state, field)
        else:
            network, moment = _ADAM[fam]
            tree = getattr(adam_moments(getattr(state, f"{network}_opt_state")), moment)
        out.update({f"{fam}.{name}": value for name, value in neutral_tensors(config, network, tree).items()})
    out["step"] = int(np.asarray(state.step))
    for network in ("actor", "critic"):
        out[f"{network}_adam_count"] = int(np.asarray(adam_moments(getattr(state, f"{network}_opt_state")).count))
    return out


def _tree_from_neutral(config: TD3Config, fam: str, network: str, template: Any, state: NeutralState,
                       source: str) -> dict[str, Any]:
    """A params tree shaped like ``template`` filled from the ``fam`` entries of ``state``."""
    pairs = list(param_layout(config, network, template))
    expected = {name for name, _, _ in pairs}
    have = set(tensor_names(state, fam))
    missing, extra = sorted(expected - have), sorted(have - expected)
    if missing or extra:
        raise ConversionError(f"{fam}: parameter names differ: missing in {source} {missing}, "
                              f"extra in {source} {extra}")
    layers = {layer: {leaf: np.array(v) for leaf, v in leaves.items()}
              for layer, leaves in template["params"].items()}
    for name, (layer, leaf, c), transpose in pairs:
        given = np.asarray(state[f"{fam}.{name}"])
        value = given.T if transpose else given
        target_shape = layers[layer][leaf].shape[1:] if c is not None else layers[layer][leaf].shape
        if value.shape != tuple(target_shape):
            raise ConversionError(f"{fam}.{name}: {source} shape {tuple(given.shape)} does not match "
                                  f"JAX {tuple(target_shape)} (transposed)")
        if c is None:
            layers[layer][leaf] = value
        else:
            layers[layer][leaf] = layers[layer][leaf].astype(value.dtype)
            layers[layer][leaf][c] = value
    return {"params": {layer: {leaf: jnp.asarray(v) for leaf, v in leaves.items()}
                       for layer, leaves in layers.items()}}


def from_neutral(config: TD3Config, state: NeutralState, template: TrainState,
                 source: str = "the neutral state") -> TrainState:
    """A JAX train state holding a neutral state; ``template`` (e.g. ``init_train_state(config, key,
    dtype)``) gives the tree structure. Leaves take the neutral arrays' dtypes. ``source`` names where
    the state came from in error messages."""
    trees = {}
    for fam, (field, network) in _FIELDS.items():
        trees[field] = _tree_from_neutral(config, fam, network, getattr(template, field), state, source)
    for network in ("actor", "critic"):
        params_template = getattr(template, f"{network}_params")
        opt_template = getattr(template, f"{network}_opt_state")
        adam = adam_moments(opt_template)
        adam = adam._replace(
            count=jnp.asarray(int(state[f"{network}_adam_count"]), adam.count.dtype),
            mu=_tree_from_neutral(config, f"{network}_adam_m", network, params_template, state, source),
            nu=_tree_from_neutral(config, f"{network}_adam_v", network, params_template, state, source))
        trees[f"{network}_opt_state"] = with_adam_state(opt_template, adam)
    return TrainState(**trees, step=jnp.asarray(int(state["step"]), jnp.int32))


# -- the JAX layout's own names (what the whole-run comparison reports) ----------------

WEIGHT_FIELDS = {"actor": "actor_params", "critic": "critic_params", "actor_target": "actor_target_params",
                 "critic_target": "critic_target_params"}


def layout_name(path: Sequence[Any]) -> str:
    """``l1.kernel`` for the tree path of a params leaf (the "params" level left out)."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path if getattr(k, "key", None) != "params")


def layout_tensors(state: TrainState) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """(named float tensors, integer counters) of a train state, in JAX-layout names.

    Tensors are named ``family.layer.leaf`` (``critic_adam_v.l2.kernel``, stacked critics as one
    tensor); the counters are the update step and both Adam counts.
    """
    actor_adam, critic_adam = adam_moments(state.actor_opt_state), adam_moments(state.critic_opt_state)
    trees = {**{fam: getattr(state, field) for fam, field in WEIGHT_FIELDS.items()},
             "actor_adam_m": actor_adam.mu, "actor_adam_v": actor_adam.nu,
             "critic_adam_m": critic_adam.mu, "critic_adam_v": critic_adam.nu}
    named = []
    for fam in STATE_FAMILIES:
        for path, leaf in jax.tree_util.tree_flatten_with_path(trees[fam])[0]:
            named.append((f"{fam}.{layout_name(path)}", np.asarray(leaf)))
    counters = np.array([int(np.asarray(state.step)), int(np.asarray(actor_adam.count)),
                         int(np.asarray(critic_adam.count))])
    return named, counters


def weight_names(state: TrainState) -> list[str]:
    """``family.layer.leaf`` of every weight tensor in JAX-layout names, e.g. ``actor.l1.kernel``."""
    return [f"{fam}.{layout_name(path)}" for fam, field in WEIGHT_FIELDS.items()
            for path, _ in jax.tree_util.tree_flatten_with_path(getattr(state, field))[0]]


# -- the adapter -------------------------------------------------------------------------

class JaxAdapter:
    """``update.update_with_internals`` (jitted) behind the adapter interface of ``adapters.base``.

    It starts from ``init_train_state(config, PRNGKey(seed), dtype)``. Matmuls run at full
    precision ("highest"): on GPUs whose default is TF32 the comparison would otherwise measure that.
    """

    name = "jax"

    def __init__(self, config: TD3Config, dtype: DTypeLike = "float64", *, seed: int = 0):
        self.config = config
        self.dtype = float_dtype(dtype)
        self.train_state = init_train_state(config, jax.random.PRNGKey(seed), self.dtype)
        self._update = jax.jit(update_with_internals, static_argnums=0)
        names = {network: [name for name, _, _ in param_layout(config, network, getattr(self.train_state, field))]
                 for network, field in (("actor", "actor_params"), ("critic", "critic_params"))}
        self.quantities = quantity_names(names["actor"], names["critic"])

    def load(self, state: NeutralState) -> None:
        loaded = from_neutral(self.config, state, self.train_state, source="the loaded state")
        # The jitted update is traced for one dtype: a state from a wider implementation is cast.
        self.train_state = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, self.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, loaded)

    def state(self) -> NeutralState:
        return to_neutral(self.config, jax.device_get(self.train_state))

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        config = self.config
        with jax.default_matmul_precision("highest"):
            new_state, metrics, internals = self._update(
                config, self.train_state, Batch(*(jnp.asarray(x, self.dtype) for x in batch)),
                jnp.asarray(target_noise, self.dtype))
        self.train_state = new_state
        new_state, metrics, internals = jax.device_get((new_state, metrics, internals))
        actor_updated = bool(metrics["actor_updated"])
        out: dict[str, Any] = {name: np.asarray(internals[name]) for name in ("target_action", "target_q", "current_q")}
        out["critic_loss"] = np.asarray(metrics["critic_loss"])
        out.update(_prefixed("critic_grad", neutral_tensors(config, "critic", internals["critic_grads"])))
        if actor_updated:   # on the other updates the internals hold zeros, not an actor step
            out["actor_q"] = np.asarray(internals["actor_q"])
            out["actor_loss"] = np.asarray(metrics["actor_loss"])
            out.update(_prefixed("actor_grad", neutral_tensors(config, "actor", internals["actor_grads"])))
        out.update(to_neutral(config, new_state))
        out["actor_updated"] = actor_updated
        return out


def _prefixed(prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": value for name, value in tensors.items()}


__all__ = ["JaxAdapter", "WEIGHT_FIELDS", "adam_moments", "from_neutral", "layout_name", "layout_tensors",
           "neutral_tensors", "param_layout", "to_neutral", "weight_names"]
