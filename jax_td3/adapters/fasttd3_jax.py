"""Our JAX FastTD3 update as an adapter, and the one place that maps its layout to the neutral state.

The JAX layout (``jax_td3.fasttd3.state.TrainState``): Flax ``Dense`` kernels are (in, out), the
transpose of the neutral (out, in) ``weight``; LayerNorm's ``scale`` is torch's ``weight``; the two
critics are stacked on a leading axis (slice ``c`` is ``qnet{c+1}``); each optimiser state holds one
``ScaleByAdamState`` (AdamW's moments and count). The neutral names are ``torch_ref.fasttd3``'s module
paths (``adapters.base``), derived here from the config alone so this module needs no PyTorch:

- actor with ``k`` hidden sizes: ``l1`` .. ``l{k-1}`` are ``net.0``, ``net.2`` ..., ``l{k}`` is
  ``fc_head.0``, the output ``l{k+1}`` is ``fc_mu.0``;
- each critic with ``m`` hidden sizes (``s`` = 3 modules per hidden block with LayerNorm, else 2):
  ``l{i}``/``ln{i}`` (i < m) are ``net.{s(i-1)}``/``net.{s(i-1)+1}``, ``l{m}``/``ln{m}`` are
  ``fc_head.0``/``fc_head.1``, the output is ``fc_head.{s}``.

Moving a state to the neutral format and back is a copy with transposes, so it is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import DTypeLike

from jax_td3.adapters.base import FASTTD3_QUANTITY_FAMILIES, NeutralState, quantity_names, tensor_names
from jax_td3.config import FastTD3Config
from jax_td3.dtypes import float_dtype
from jax_td3.errors import ConversionError
from jax_td3.fasttd3.normalizer import normalizer_update, saturated_count
from jax_td3.fasttd3.state import Batch, NormalizerState, TrainState
from jax_td3.fasttd3.update import init_train_state, update_with_internals
from jax_td3.update import adam_state, with_adam_state

# Which TrainState field holds each weight family, and through which network's layout.
NETWORK_FIELDS = {"actor": ("actor_params", "actor"), "critic": ("critic_params", "critic"),
                  "critic_target": ("critic_target_params", "critic")}


def module_paths(config: FastTD3Config, network: str) -> dict[str, str]:
    """``{JAX layer name: torch_ref module path}`` of ``network`` ("actor" or one critic), in forward order."""
    if network == "actor":
        k = len(config.actor_hidden)
        paths = {f"l{i}": f"net.{2 * (i - 1)}" for i in range(1, k)}
        return {**paths, f"l{k}": "fc_head.0", f"l{k + 1}": "fc_mu.0"}
    m = len(config.critic_hidden_sizes)
    stride = 3 if config.critic_layer_norm else 2
    paths = {}
    for i in range(1, m):
        paths[f"l{i}"] = f"net.{stride * (i - 1)}"
        if config.critic_layer_norm:
            paths[f"ln{i}"] = f"net.{stride * (i - 1) + 1}"
    paths[f"l{m}"] = "fc_head.0"
    if config.critic_layer_norm:
        paths[f"ln{m}"] = "fc_head.1"
    paths[f"l{m + 1}"] = f"fc_head.{stride}"
    return paths


def param_layout(config: FastTD3Config, network: str) -> Iterator[tuple[str, str, str, int | None]]:
    """``(neutral tensor name, JAX layer, JAX leaf, critic index or None)`` of every parameter of
    ``network`` ("actor" or "critic", the twin critic), in torch_ref's ``named_parameters`` order."""
    copies = [(None, "")] if network == "actor" else [(0, "qnet1."), (1, "qnet2.")]
    for index, prefix in copies:
        for layer, path in module_paths(config, network).items():
            first = "kernel" if layer.startswith("l") and not layer.startswith("ln") else "scale"
            yield f"{prefix}{path}.weight", layer, first, index
            yield f"{prefix}{path}.bias", layer, "bias", index


def neutral_tensors(config: FastTD3Config, network: str, tree: Any) -> dict[str, np.ndarray]:
    """``{neutral tensor name: array}`` of a params tree of ``network`` (or one shaped like it)."""
    out = {}
    for name, layer, leaf, index in param_layout(config, network):
        value = np.asarray(tree["params"][layer][leaf])
        value = value if index is None else value[index]
        out[name] = value.T if leaf == "kernel" else value
    return out


def _tree_from_neutral(config: FastTD3Config, fam: str, network: str, template: Any, state: NeutralState,
                       source: str) -> Any:
    """A params tree shaped like ``template`` filled from the ``fam`` entries of ``state``."""
    layout = list(param_layout(config, network))
    expected, have = {name for name, *_ in layout}, set(tensor_names(state, fam))
    if expected != have:
        raise ConversionError(f"{fam}: parameter names differ: missing in {source} {sorted(expected - have)}, "
                              f"extra in {source} {sorted(have - expected)}")
    layers = {layer: {leaf: np.array(v) for leaf, v in leaves.items()} for layer, leaves in template["params"].items()}
    for name, layer, leaf, index in layout:
        given = np.asarray(state[f"{fam}.{name}"])
        value = given.T if leaf == "kernel" else given
        target = layers[layer][leaf]
        shape = target.shape if index is None else target.shape[1:]
        if value.shape != tuple(shape):
            raise ConversionError(f"{fam}.{name}: {source} shape {tuple(given.shape)} does not match JAX "
                                  f"{tuple(shape)}{' (transposed)' if leaf == 'kernel' else ''}")
        if index is None:
            layers[layer][leaf] = value
        else:
            layers[layer][leaf] = target.astype(value.dtype)
            layers[layer][leaf][index] = value
    return {"params": {layer: {leaf: jnp.asarray(v) for leaf, v in leaves.items()} for layer, leaves in layers.items()}}


def to_neutral(config: FastTD3Config, state: TrainState) -> NeutralState:
    """The neutral state of a JAX FastTD3 train state (NumPy copies)."""
    out: NeutralState = {}
    for fam, (field, network) in NETWORK_FIELDS.items():
        out.update({f"{fam}.{name}": v for name, v in neutral_tensors(config, network, getattr(state, field)).items()})
    for network in ("actor", "critic"):
        adam = adam_state(getattr(state, f"{network}_opt_state"))
        for moment, tree in (("adam_m", adam.mu), ("adam_v", adam.nu)):
            out.update({f"{network}_{moment}.{name}": v for name, v in neutral_tensors(config, network, tree).items()})
        out[f"{network}_adam_count"] = int(np.asarray(adam.count))
    statistics = state.obs_normalizer
    out["obs_normalizer.mean"] = np.array(statistics.mean)
    out["obs_normalizer.var"] = np.array(statistics.var)
    out["obs_normalizer.count"] = int(np.asarray(statistics.count))
    out["step"] = int(np.asarray(state.step))
    return out


def from_neutral(config: FastTD3Config, state: NeutralState, template: TrainState,
                 source: str = "the neutral state") -> TrainState:
    """A JAX FastTD3 train state holding a neutral state; ``template`` gives the trees' structure."""
    trees: dict[str, Any] = {}
    for fam, (field, network) in NETWORK_FIELDS.items():
        trees[field] = _tree_from_neutral(config, fam, network, getattr(template, field), state, source)
    for network in ("actor", "critic"):
        params_template = getattr(template, f"{network}_params")
        opt_template = getattr(template, f"{network}_opt_state")
        adam = adam_state(opt_template)
        adam = adam._replace(
            count=jnp.asarray(int(state[f"{network}_adam_count"]), adam.count.dtype),
            mu=_tree_from_neutral(config, f"{network}_adam_m", network, params_template, state, source),
            nu=_tree_from_neutral(config, f"{network}_adam_v", network, params_template, state, source))
        trees[f"{network}_opt_state"] = with_adam_state(opt_template, adam)
    for entry in ("obs_normalizer.mean", "obs_normalizer.var"):
        if np.shape(state[entry]) != (config.obs_dim,):
            raise ConversionError(f"{entry}: {source} shape {np.shape(state[entry])} does not match "
                                  f"({config.obs_dim},)")
    count = jnp.asarray(saturated_count(int(state["obs_normalizer.count"])), template.obs_normalizer.count.dtype)
    trees["obs_normalizer"] = NormalizerState(mean=jnp.asarray(state["obs_normalizer.mean"]),
                                              var=jnp.asarray(state["obs_normalizer.var"]), count=count)
    return TrainState(**trees, step=jnp.asarray(int(state["step"]), jnp.int32))


def observe(config: FastTD3Config, statistics: NormalizerState, obs: Any) -> NormalizerState:
    """Fold the observations the loop collected into the statistics; unchanged without
    ``obs_normalization`` (as the JAX backend's ``observe`` and torch_ref's ``normalizer_update`` do)."""
    return normalizer_update(statistics, obs) if config.obs_normalization else statistics


def fasttd3_quantities(actor: Sequence[str], critic: Sequence[str]) -> tuple[str, ...]:
    """Every quantity a FastTD3 adapter reports, in report order, given the tensor names."""
    return quantity_names(actor, critic, FASTTD3_QUANTITY_FAMILIES)


def _prefixed(prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": value for name, value in tensors.items()}


class FastTD3JaxAdapter:
    """``jax_td3.fasttd3.update.update_with_internals`` (jitted) behind the adapter interface.

    It starts from ``init_train_state(config, PRNGKey(seed), dtype)``; matmuls run at "highest" precision.
    ``update(batch, noise)`` takes the seven arrays of ``adapters.base``'s FastTD3 batch: it folds the
    collected observations into the normaliser (``observe``), then runs one update.
    """

    name = "jax"

    def __init__(self, config: FastTD3Config, dtype: DTypeLike = "float64", *, seed: int = 0):
        self.config = config
        self.dtype = float_dtype(dtype)
        self.train_state = init_train_state(config, jax.random.PRNGKey(seed), self.dtype)
        self._update = jax.jit(update_with_internals, static_argnums=0)
        self._observe = jax.jit(observe, static_argnums=0)
        self.quantities = fasttd3_quantities([name for name, *_ in param_layout(config, "actor")],
                                             [name for name, *_ in param_layout(config, "critic")])

    def load(self, state: NeutralState) -> None:
        loaded = from_neutral(self.config, state, self.train_state, source="the loaded state")
        self.train_state = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, self.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, loaded)

    def state(self) -> NeutralState:
        return to_neutral(self.config, jax.device_get(self.train_state))

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        config = self.config
        collected, *fields = (jnp.asarray(x, self.dtype) for x in batch)
        with jax.default_matmul_precision("highest"):
            statistics = self._observe(config, self.train_state.obs_normalizer, collected)
            new_state, metrics, internals = self._update(
                config, self.train_state._replace(obs_normalizer=statistics), Batch(*fields),
                jnp.asarray(target_noise, self.dtype))
        self.train_state = new_state
        new_state, metrics, internals = jax.device_get((new_state, metrics, internals))
        actor_updated = bool(metrics["actor_updated"])
        out: dict[str, Any] = {name: np.asarray(internals[name]) for name in
                               ("target_action", "projected", "cdq_choice", "target_dist", "critic_logits",
                                "critic_lr", "actor_lr", "critic_grad_norm")}
        out["critic_loss"] = np.asarray(metrics["critic_loss"])
        out.update(_prefixed("critic_grad", neutral_tensors(config, "critic", internals["critic_grads"])))
        if actor_updated:   # on the other updates the internals hold zeros, not an actor step
            out["actor_q"] = np.asarray(internals["actor_q"])
            out["actor_loss"] = np.asarray(metrics["actor_loss"])
            out["actor_grad_norm"] = np.asarray(internals["actor_grad_norm"])
            out.update(_prefixed("actor_grad", neutral_tensors(config, "actor", internals["actor_grads"])))
        out.update(to_neutral(config, new_state))
        out["actor_updated"] = actor_updated
        return out


__all__ = ["FastTD3JaxAdapter", "NETWORK_FIELDS", "fasttd3_quantities", "from_neutral", "module_paths",
           "neutral_tensors", "observe", "param_layout", "to_neutral"]
