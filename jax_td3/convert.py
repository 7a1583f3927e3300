"""JAX train state <-> PyTorch reference agent, both ways, with optimizer states.

Composed from the two adapters' layout functions through the neutral state
(``jax_td3.adapters``): ``adapters.jax`` knows the JAX layout, ``adapters.torch_ref``
torch_ref's; this module knows neither. Moving a state across and back is exact
(a copy, no arithmetic), so a run can change framework mid-training and continue
identically.
"""

from __future__ import annotations

from typing import Any

from jax_td3.adapters import jax as jax_layout
from jax_td3.config import TD3Config
from jax_td3.errors import ConversionError, require_torch
from jax_td3.update import TrainState


def _torch_layout() -> Any:
    """``adapters.torch_ref``, imported on first use: PyTorch is an extra (one-line error without it)."""
    require_torch("moving a train state to or from PyTorch (jax_td3.convert)")
    from jax_td3.adapters import torch_ref

    return torch_ref


def make_torch_agent(config: TD3Config, dtype: Any = "float32", device: Any = "cpu") -> Any:
    """The torch_ref agent with the same architecture and hyperparameters as ``config`` (``dtype``: a
    torch dtype or a name); ``torch_ref.FastTD3`` for fasttd3 (``make_fasttd3_agent``)."""
    if config.algo == "fasttd3":
        return make_fasttd3_agent(config, dtype, device)
    return _torch_layout().make_agent(config, dtype, device)


def state_to_torch(config: TD3Config, state: TrainState, agent: Any) -> None:
    """Load a JAX train state into a torch_ref agent: online and target weights, Adam states, counter
    (fasttd3: ``fasttd3_to_torch``)."""
    if config.algo == "fasttd3":
        fasttd3_to_torch(state, agent)
        return
    _torch_layout().load_agent(agent, jax_layout.to_neutral(config, state), source="from JAX")


def state_from_torch(config: TD3Config, agent: Any, template: TrainState) -> TrainState:
    """A JAX train state holding the torch agent's weights, targets, Adam states and counter.

    ``template`` (e.g. ``init_train_state(config, key, dtype)``) gives the tree structure (fasttd3:
    ``fasttd3_from_torch``).
    """
    if config.algo == "fasttd3":
        return fasttd3_from_torch(agent, template)  # type: ignore[no-any-return]  # a FastTD3 TrainState
    return jax_layout.from_neutral(config, _torch_layout().agent_state(agent), template, source="torch")


# -- FastTD3: its JAX train state <-> torch_ref.FastTD3 (modules, AdamW states, normaliser) ----------------

def make_fasttd3_agent(config: Any, dtype: Any = "float32", device: Any = "cpu") -> Any:
    """The ``torch_ref.FastTD3`` learner with the architecture and hyperparameters of a ``FastTD3Config``."""
    _torch_layout()   # PyTorch present (one-line error otherwise)
    import torch_ref
    from jax_td3.adapters.torch_ref import torch_dtype

    if config.bfloat16_matmuls:
        raise ConversionError("torch_ref's FastTD3 computes in the state's dtype; it has no `bfloat16_matmuls`")
    return torch_ref.FastTD3(
        config.obs_dim, config.act_dim, config.action_low, config.action_high, hidden=config.actor_hidden,
        critic_hidden=config.critic_hidden_sizes, num_atoms=config.num_atoms, v_min=config.v_min,
        v_max=config.v_max, gamma=config.gamma, tau=config.tau, policy_noise=config.policy_noise,
        noise_clip=config.noise_clip, policy_freq=config.policy_freq, actor_lr=config.actor_lr,
        critic_lr=config.critic_lr, actor_lr_end=config.actor_lr_end, critic_lr_end=config.critic_lr_end,
        lr_schedule_updates=config.lr_schedule_updates, adam_b1=config.adam_b1, adam_b2=config.adam_b2,
        adam_eps=config.adam_eps, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        use_cdq=config.use_cdq, obs_normalization=config.obs_normalization,
        critic_layer_norm=config.critic_layer_norm, init_scale=config.init_scale, reward_scale=config.reward_scale,
        critic_loss_scale=config.critic_loss_scale, device=device, dtype=torch_dtype(dtype))


def fasttd3_layers(module: Any) -> list[tuple[str, Any]]:
    """``(JAX layer name, torch layer)`` of a torch_ref FastTD3 network (actor or one distributional critic)
    in forward order: its ``nn.Linear`` layers are ``l1``, ``l2`` ... and its ``nn.LayerNorm`` layers ``ln1`` ...
    (as ``jax_td3.fasttd3.networks`` names them). A layer's tensors: Linear (weight.T = kernel, bias), LayerNorm
    (weight = scale, bias)."""
    import torch

    layers: list[tuple[str, Any]] = []
    linear = norm = 0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            linear += 1
            layers.append((f"l{linear}", layer))
        elif isinstance(layer, torch.nn.LayerNorm):
            norm += 1
            layers.append((f"ln{norm}", layer))
    return layers


def _jax_pairs(layer: Any) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """((JAX name, torch tensor), ...) of one torch layer, the kernel transposed back below."""
    first = "kernel" if layer.weight.ndim == 2 else "scale"
    return (first, layer.weight), ("bias", layer.bias)


def _to_jax(name: str, tensor: Any) -> Any:
    import numpy as np

    value = tensor.detach().cpu().numpy().copy()
    return np.ascontiguousarray(value.T) if name == "kernel" else value


def _from_jax(name: str, value: Any) -> Any:
    import numpy as np

    value = np.asarray(value)
    return np.ascontiguousarray(value.T) if name == "kernel" else value


def _network_tree(modules: list[Any], pick: Any) -> dict:
    """The Flax tree ``{"params": {layer: {tensor: array}}}`` of one network (or of several stacked on a
    leading axis: the twin critics) with each torch tensor mapped by ``pick(tensor)`` (the tensor, or an
    optimiser moment of it)."""
    import numpy as np

    per_module = [{name: {jax_name: _to_jax(jax_name, pick(tensor)) for jax_name, tensor in _jax_pairs(layer)}
                   for name, layer in fasttd3_layers(module)} for module in modules]
    if len(modules) == 1:
        return {"params": per_module[0]}
    return {"params": {name: {leaf: np.stack([tree[name][leaf] for tree in per_module])
                              for leaf in per_module[0][name]} for name in per_module[0]}}


def _load_network(modules: list[Any], tree: dict, assign: Any) -> None:
    """Write a Flax tree (stacked on a leading axis when there are several modules) into torch modules,
    calling ``assign(torch tensor, numpy value)`` per tensor."""
    params = tree["params"]
    for index, module in enumerate(modules):
        layers = fasttd3_layers(module)
        if sorted(name for name, _ in layers) != sorted(params):
            raise ConversionError(f"FastTD3 layers {sorted(params)} do not fit the torch network's "
                                  f"{sorted(name for name, _ in layers)}")
        for name, layer in layers:
            for jax_name, tensor in _jax_pairs(layer):
                value = params[name][jax_name]
                value = value[index] if len(modules) > 1 else value
                value = _from_jax(jax_name, value)
                if tuple(value.shape) != tuple(tensor.shape):
                    raise ConversionError(f"FastTD3 {name}.{jax_name} has shape {tuple(value.shape)}, the torch "
                                          f"tensor {tuple(tensor.shape)}")
                assign(tensor, value)


def _critic_nets(critic: Any) -> list[Any]:
    return [critic.qnet1, critic.qnet2]


def fasttd3_to_torch(state: Any, agent: Any) -> None:
    """Load a JAX FastTD3 train state (``jax_td3.fasttd3.state.TrainState``, numpy or JAX leaves) into a
    ``torch_ref.FastTD3``: actor, critics, critic target, both AdamW states (count and moments), the
    normaliser and the update counter. Exact (copies)."""
    import numpy as np
    import torch

    from jax_td3.update import adam_state

    def copy_into(tensor: Any, value: Any) -> None:
        with torch.no_grad():
            tensor.copy_(torch.as_tensor(np.array(value), dtype=tensor.dtype))

    _load_network([agent.actor], state.actor_params, copy_into)
    _load_network(_critic_nets(agent.qnet), state.critic_params, copy_into)
    _load_network(_critic_nets(agent.qnet_target), state.critic_target_params, copy_into)
    for optimizer, modules, opt_state in ((agent.actor_optimizer, [agent.actor], state.actor_opt_state),
                                          (agent.q_optimizer, _critic_nets(agent.qnet), state.critic_opt_state)):
        adam = adam_state(opt_state)
        count = int(np.asarray(adam.count))
        optimizer.state.clear()
        if count == 0:
            continue   # torch's AdamW starts its moments at its first step, as zeros
        moments: dict[Any, dict[str, Any]] = {}

        def moment(key: str) -> Any:
            def assign(tensor: Any, value: Any) -> None:
                moments.setdefault(tensor, {})[key] = torch.as_tensor(np.array(value), dtype=tensor.dtype)
            return assign

        _load_network(modules, adam.mu, moment("exp_avg"))
        _load_network(modules, adam.nu, moment("exp_avg_sq"))
        for tensor, values in moments.items():
            optimizer.state[tensor] = {"step": torch.tensor(float(count)), **values}
    normalizer_to_torch(state.obs_normalizer, agent.obs_normalizer)
    agent.step = int(np.asarray(state.step))


def normalizer_to_torch(statistics: Any, module: Any) -> None:
    """Load observation statistics (a ``fasttd3.state.NormalizerState``) into a ``torch_ref.fasttd3``
    ``EmpiricalNormalization`` (in its dtype). Exact (copies)."""
    import numpy as np

    torch = require_torch("converting to PyTorch")
    dtype = module.mean.dtype
    mean = torch.as_tensor(np.array(statistics.mean), dtype=dtype)[None]
    var = torch.as_tensor(np.array(statistics.var), dtype=dtype)[None]
    module.load_state_dict({"_mean": mean, "_var": var, "_std": var.sqrt(),
                            "count": torch.tensor(int(np.asarray(statistics.count)))})


def normalizer_from_torch(module: Any) -> Any:
    """The observation statistics (a ``fasttd3.state.NormalizerState`` with numpy leaves) of a
    ``torch_ref.fasttd3`` ``EmpiricalNormalization``. Exact (copies), but for a count past int32, which
    saturates as ``fasttd3.normalizer`` keeps it (``saturated_count``)."""
    import numpy as np

    from jax_td3.fasttd3.normalizer import saturated_count
    from jax_td3.fasttd3.state import NormalizerState

    buffers = module.state_dict()
    return NormalizerState(mean=buffers["_mean"][0].detach().cpu().numpy().copy(),
                           var=buffers["_var"][0].detach().cpu().numpy().copy(),
                           count=np.asarray(saturated_count(int(buffers["count"])), np.int32))  # type: ignore[arg-type]  # numpy leaves, as every state crossing the backends


def fasttd3_from_torch(agent: Any, template: Any) -> Any:
    """The JAX FastTD3 train state (numpy leaves) of a ``torch_ref.FastTD3``; ``template`` (a train state of
    the same config, e.g. ``init_train_state``) gives the optimiser chains' structure. Exact (copies)."""
    import numpy as np
    import optax

    from jax_td3.update import adam_state, with_adam_state

    def adam_of(optimizer: Any, modules: list[Any], template_state: Any) -> Any:
        template_adam = adam_state(template_state)
        if not optimizer.state:   # no step yet
            zeros = lambda tensor: tensor.detach() * 0
            mu = nu = _network_tree(modules, zeros)
            count = 0
        else:
            steps = {float(optimizer.state[p]["step"]) for p in optimizer.state}
            if len(steps) != 1:
                raise ConversionError(f"torch AdamW parameters disagree on their step count: {sorted(steps)}")
            count = int(steps.pop())
            mu = _network_tree(modules, lambda tensor: optimizer.state[tensor]["exp_avg"])
            nu = _network_tree(modules, lambda tensor: optimizer.state[tensor]["exp_avg_sq"])
        adam = optax.ScaleByAdamState(count=np.asarray(count, np.asarray(template_adam.count).dtype), mu=mu, nu=nu)
        return with_adam_state(template_state, adam)

    normalizer = normalizer_from_torch(agent.obs_normalizer)
    return type(template)(
        actor_params=_network_tree([agent.actor], lambda tensor: tensor),
        critic_params=_network_tree(_critic_nets(agent.qnet), lambda tensor: tensor),
        critic_target_params=_network_tree(_critic_nets(agent.qnet_target), lambda tensor: tensor),
        actor_opt_state=adam_of(agent.actor_optimizer, [agent.actor], template.actor_opt_state),
        critic_opt_state=adam_of(agent.q_optimizer, _critic_nets(agent.qnet), template.critic_opt_state),
        obs_normalizer=normalizer,
        step=np.asarray(agent.step, np.int32),
    )


__all__ = ["ConversionError", "fasttd3_from_torch", "fasttd3_to_torch", "make_fasttd3_agent", "make_torch_agent",
           "normalizer_from_torch", "normalizer_to_torch", "state_from_torch", "state_to_torch"]
