"""JAX train state <-> PyTorch reference agent, both ways, with optimizer states.

This is the one place that knows both frameworks' parameter layouts:
- Flax ``Dense`` kernel is (in, out); ``nn.Linear.weight`` is (out, in).
- The JAX critics are stacked on a leading axis; TD3's torch critic keeps Q1 in
  ``l1..l{n}`` and Q2 in ``l{n+1}..l{2n}`` (n = layers per critic).
- optax's Adam keeps one ``count`` for the tree and ``mu``/``nu`` shaped like the
  params; torch keeps ``step``/``exp_avg``/``exp_avg_sq`` per parameter.

Moving a state across and back is exact (a copy, no arithmetic), so a run can
change framework mid-training and continue identically.
"""

from __future__ import annotations

import re
from typing import Iterator

import jax.numpy as jnp
import numpy as np
import optax
import torch

import torch_ref
from jax_td3.config import TD3Config
from jax_td3.errors import ConversionError
from jax_td3.update import ADAM_STATE_INDEX, TrainState


def make_torch_agent(config: TD3Config, dtype=torch.float32, device="cpu"):
    """The torch_ref agent with the same architecture and hyperparameters as ``config``."""
    common = dict(hidden=config.actor_hidden, critic_hidden=config.critic_hidden_sizes, discount=config.gamma,
                  tau=config.tau, policy_freq=config.policy_freq, actor_lr=config.actor_lr,
                  critic_lr=config.critic_lr, adam_betas=(config.adam_b1, config.adam_b2),
                  adam_eps=config.adam_eps, device=device, dtype=dtype)
    box = (config.obs_dim, config.act_dim, config.action_low, config.action_high)
    if config.algo == "td3":
        return torch_ref.TD3(*box, policy_noise=config.policy_noise, noise_clip=config.noise_clip, **common)
    return torch_ref.AGENTS[config.algo](*box, critic_weight_decay=config.critic_weight_decay,
                                         reward_scale=config.reward_scale, **common)


# -- layouts ---------------------------------------------------------------------------

def _layers_per_critic(config: TD3Config) -> int:
    return len(config.critic_hidden_sizes) + 1


def _torch_layer(config: TD3Config, network: str, jax_layer: str, critic_index: int) -> str:
    """The torch module name of a JAX layer (``critic_index`` picks Q1/Q2 in the twin critic)."""
    if critic_index and config.critic_arch == "mlp":
        number = int(re.fullmatch(r"l(\d+)", jax_layer).group(1))
        return f"l{number + critic_index * _layers_per_critic(config)}"
    return jax_layer


def param_pairs(config: TD3Config, network: str, jax_params) -> Iterator[tuple[str, tuple, bool]]:
    """Yield ``(torch_name, jax_index, transpose)`` for every parameter of ``network`` ("actor"/"critic").

    ``jax_index`` is ``(layer, "kernel"|"bias", critic_index or None)``.
    """
    is_critic = network.startswith("critic")
    for c in range(config.num_critics if is_critic else 1):
        for layer in jax_params["params"]:
            torch_layer = _torch_layer(config, network, layer, c)
            critic_index = c if is_critic else None
            yield f"{torch_layer}.weight", (layer, "kernel", critic_index), True
            yield f"{torch_layer}.bias", (layer, "bias", critic_index), False


def _get(jax_params, index):
    layer, leaf, c = index
    x = jax_params["params"][layer][leaf]
    return x if c is None else x[c]


def _to_torch_value(x, transpose: bool) -> np.ndarray:
    x = np.asarray(x)
    return x.T if transpose else x


def _check_names(network: str, expected: list[str], module: torch.nn.Module):
    have = [n for n, _ in module.named_parameters()]
    missing, extra = sorted(set(expected) - set(have)), sorted(set(have) - set(expected))
    if missing or extra:
        raise ConversionError(f"{network}: parameter names differ: missing in torch {missing}, extra in torch {extra}")


def _copy_into(network: str, name: str, tensor: torch.Tensor, value: np.ndarray):
    if tuple(tensor.shape) != value.shape:
        raise ConversionError(f"{network}.{name}: shape {tuple(value.shape)} (from JAX) does not match "
                              f"torch {tuple(tensor.shape)}")
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.array(value)))


# -- JAX -> torch ----------------------------------------------------------------------

def params_to_torch(config: TD3Config, network: str, jax_params, module: torch.nn.Module) -> None:
    pairs = list(param_pairs(config, network, jax_params))
    _check_names(network, [name for name, _, _ in pairs], module)
    torch_params = dict(module.named_parameters())
    for name, index, transpose in pairs:
        _copy_into(network, name, torch_params[name], _to_torch_value(_get(jax_params, index), transpose))


def adam_to_torch(config: TD3Config, network: str, jax_params, opt_state, module, optimizer) -> None:
    adam = opt_state[ADAM_STATE_INDEX]
    torch_params = dict(module.named_parameters())
    step = float(np.asarray(adam.count))
    for name, index, transpose in param_pairs(config, network, jax_params):
        p = torch_params[name]
        state = optimizer.state[p]
        state["step"] = torch.tensor(step, dtype=torch.get_default_dtype())
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        _copy_into(network, f"exp_avg[{name}]", state["exp_avg"], _to_torch_value(_get(adam.mu, index), transpose))
        _copy_into(network, f"exp_avg_sq[{name}]", state["exp_avg_sq"],
                   _to_torch_value(_get(adam.nu, index), transpose))


def state_to_torch(config: TD3Config, state: TrainState, agent) -> None:
    """Load a JAX train state into a torch_ref agent: online and target weights, Adam states, counter."""
    params_to_torch(config, "actor", state.actor_params, agent.actor)
    params_to_torch(config, "actor_target", state.actor_target_params, agent.actor_target)
    params_to_torch(config, "critic", state.critic_params, agent.critic)
    params_to_torch(config, "critic_target", state.critic_target_params, agent.critic_target)
    adam_to_torch(config, "actor", state.actor_params, state.actor_opt_state, agent.actor, agent.actor_optimizer)
    adam_to_torch(config, "critic", state.critic_params, state.critic_opt_state, agent.critic,
                  agent.critic_optimizer)
    agent.total_it = int(np.asarray(state.step))


# -- torch -> JAX ----------------------------------------------------------------------

def _from_torch_tree(config: TD3Config, network: str, template, named: dict[str, torch.Tensor]):
    """A JAX tree shaped like ``template`` (a params tree) filled from torch tensors by name."""
    pairs = list(param_pairs(config, network, template))
    expected = {name for name, _, _ in pairs}
    missing, extra = sorted(expected - set(named)), sorted(set(named) - expected)
    if missing or extra:
        raise ConversionError(f"{network}: parameter names differ: missing in torch {missing}, extra in torch {extra}")
    layers = {layer: {leaf: np.array(v) for leaf, v in leaves.items()}
              for layer, leaves in template["params"].items()}
    for name, (layer, leaf, c), transpose in pairs:
        value = named[name].detach().cpu().numpy()
        value = value.T if transpose else value
        target_shape = layers[layer][leaf].shape[1:] if c is not None else layers[layer][leaf].shape
        if value.shape != tuple(target_shape):
            raise ConversionError(f"{network}.{name}: torch shape {tuple(named[name].shape)} does not match "
                                  f"JAX {tuple(target_shape)} (transposed)")
        if c is None:
            layers[layer][leaf] = value
        else:
            layers[layer][leaf] = layers[layer][leaf].astype(value.dtype)
            layers[layer][leaf][c] = value
    return {"params": {layer: {leaf: jnp.asarray(v) for leaf, v in leaves.items()}
                       for layer, leaves in layers.items()}}


def _adam_from_torch(config, network, template_params, template_opt_state, module, optimizer):
    torch_params = dict(module.named_parameters())
    steps, mu, nu = set(), {}, {}
    for name, p in torch_params.items():
        state = optimizer.state.get(p, {})
        if state:
            steps.add(float(state["step"]))
            mu[name], nu[name] = state["exp_avg"], state["exp_avg_sq"]
        else:
            steps.add(0.0)
            mu[name] = nu[name] = torch.zeros_like(p)
    if len(steps) != 1:
        raise ConversionError(f"{network} optimizer: parameters have different Adam step counts {sorted(steps)}")
    adam = template_opt_state[ADAM_STATE_INDEX]
    adam = adam._replace(count=jnp.asarray(int(steps.pop()), adam.count.dtype),
                         mu=_from_torch_tree(config, network, template_params, mu),
                         nu=_from_torch_tree(config, network, template_params, nu))
    opt_state = list(template_opt_state)
    opt_state[ADAM_STATE_INDEX] = adam
    return tuple(opt_state)


def state_from_torch(config: TD3Config, agent, template: TrainState) -> TrainState:
    """A JAX train state holding the torch agent's weights, targets, Adam states and counter.

    ``template`` (e.g. ``init_train_state(config, key, dtype)``) gives the tree structure.
    """
    def params(network, module, like):
        return _from_torch_tree(config, network, like, dict(module.named_parameters()))

    actor = params("actor", agent.actor, template.actor_params)
    critic = params("critic", agent.critic, template.critic_params)
    return TrainState(
        actor_params=actor,
        critic_params=critic,
        actor_target_params=params("actor_target", agent.actor_target, template.actor_params),
        critic_target_params=params("critic_target", agent.critic_target, template.critic_params),
        actor_opt_state=_adam_from_torch(config, "actor", template.actor_params, template.actor_opt_state,
                                         agent.actor, agent.actor_optimizer),
        critic_opt_state=_adam_from_torch(config, "critic", template.critic_params, template.critic_opt_state,
                                          agent.critic, agent.critic_optimizer),
        step=jnp.asarray(agent.total_it, jnp.int32),
    )


def adam_moments(opt_state) -> optax.ScaleByAdamState:
    """The Adam part of an optimizer state made by ``update.adam``."""
    return opt_state[ADAM_STATE_INDEX]
