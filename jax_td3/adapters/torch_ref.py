"""The PyTorch reference (``torch_ref``) as an adapter, and the one place that knows its layout.

torch_ref's layout is the neutral one (``adapters.base``) held in live objects: the networks are
the agent's ``actor``, ``critic``, ``actor_target`` and ``critic_target`` modules, whose
``named_parameters()`` are the neutral tensor names (``nn.Linear`` weights are (out, in), TD3's
twin critic keeps Q1 in ``l1..l{n}`` and Q2 in ``l{n+1}..l{2n}``); ``torch.optim.Adam`` keeps, per
parameter, ``step`` (the Adam count, equal across parameters), ``exp_avg`` (first moment) and
``exp_avg_sq`` (second moment); the agent's ``step`` is the update counter. Also here: the map
from a dtype name to torch's dtype, and from a ``TD3Config`` to torch_ref's constructors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Union

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

import torch_ref
from jax_td3.adapters.base import NETWORKS, NeutralState, quantity_names, tensor_names
from jax_td3.config import TD3Config
from jax_td3.dtypes import dtype_named
from jax_td3.errors import ConversionError

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

Agent = Union[torch_ref.TD3, torch_ref.DDPG]  # (DDPG: also OurDDPG and SeedDDPG)


def torch_dtype(dtype: DTypeLike | torch.dtype) -> torch.dtype:
    """torch's dtype for a dtype name or NumPy dtype (a torch dtype passes through)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return TORCH_DTYPES[dtype_named(dtype).name]


def make_agent(config: TD3Config, dtype: DTypeLike | torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> Agent:
    """The torch_ref agent with the architecture and hyperparameters of ``config`` (``dtype``: a torch
    dtype or a name)."""
    common: dict[str, Any]  # keyword arguments of several types, common to every agent class
    common = dict(hidden=config.actor_hidden, critic_hidden=config.critic_hidden_sizes, gamma=config.gamma,
                  tau=config.tau, policy_freq=config.policy_freq, actor_lr=config.actor_lr,
                  critic_lr=config.critic_lr, adam_betas=(config.adam_b1, config.adam_b2),
                  adam_eps=config.adam_eps, critic_weight_decay=config.critic_weight_decay,
                  reward_scale=config.reward_scale, critic_loss_scale=config.critic_loss_scale,
                  target_update=config.target_update, actor_q=config.actor_q, device=device,
                  dtype=torch_dtype(dtype))
    box = (config.obs_dim, config.act_dim, config.action_low, config.action_high)
    if config.algo == "td3":
        return torch_ref.TD3(*box, policy_noise=config.policy_noise, noise_clip=config.noise_clip, **common)
    return torch_ref.AGENTS[config.algo](*box, **common)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().copy()


# -- torch_ref agent <-> neutral state --------------------------------------------------

def modules_state(params: dict[str, dict[str, torch.Tensor]], optimizers: dict[str, torch.optim.Optimizer], step: int,
                  library: str = "torch") -> NeutralState:
    """The neutral state of PyTorch networks trained with ``torch.optim.Adam`` (copies).

    ``params`` maps each of ``NETWORKS`` to ``{neutral tensor name: parameter}``; ``optimizers`` maps
    "actor" and "critic" to their Adam. An optimizer that has not stepped yet has Adam count 0 and
    zero moments. Shared by every adapter over a PyTorch implementation (torch_ref, Stable-Baselines3).
    """
    out: NeutralState = {}
    for network in NETWORKS:
        for name, p in params[network].items():
            out[f"{network}.{name}"] = _numpy(p)
    for network in ("actor", "critic"):
        counts = set()
        for name, p in params[network].items():
            adam = optimizers[network].state.get(p, {})
            if adam:
                counts.add(float(adam["step"]))
                m, v = _numpy(adam["exp_avg"]), _numpy(adam["exp_avg_sq"])
            else:
                counts.add(0.0)
                m, v = _numpy(torch.zeros_like(p)), _numpy(torch.zeros_like(p))
            out[f"{network}_adam_m.{name}"], out[f"{network}_adam_v.{name}"] = m, v
        if len(counts) != 1:
            raise ConversionError(f"{library} {network} optimizer: parameters have different Adam step counts "
                                  f"{sorted(counts)}")
        out[f"{network}_adam_count"] = int(counts.pop())
    out["step"] = int(step)
    return out


def _check_names(label: str, expected: list[str], have: Iterable[str], library: str) -> None:
    missing, extra = sorted(set(expected) - set(have)), sorted(set(have) - set(expected))
    if missing or extra:
        raise ConversionError(f"{label}: parameter names differ: missing in {library} {missing}, "
                              f"extra in {library} {extra}")


def _copy_into(label: str, tensor: torch.Tensor, value: ArrayLike, source: str, library: str) -> None:
    value = np.asarray(value)
    if tuple(tensor.shape) != value.shape:
        raise ConversionError(f"{label}: shape {tuple(value.shape)} ({source}) does not match "
                              f"{library} {tuple(tensor.shape)}")
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.array(value)))


def load_modules(params: dict[str, dict[str, torch.Tensor]], optimizers: dict[str, torch.optim.Optimizer],
                 state: NeutralState, source: str = "from the neutral state", library: str = "torch") -> None:
    """Make PyTorch networks and their Adam optimizers (laid out as for ``modules_state``) hold the
    weights, targets and Adam states of a neutral state; the caller sets its own update counter.
    ``source`` says where the state came from in error messages."""
    for network in NETWORKS:
        _check_names(network, tensor_names(state, network), params[network], library)
        for name, p in params[network].items():
            _copy_into(f"{network}.{name}", p, state[f"{network}.{name}"], source, library)
    for network in ("actor", "critic"):
        for moment in ("adam_m", "adam_v"):
            _check_names(f"{network}_{moment}", tensor_names(state, f"{network}_{moment}"), params[network], library)
        count = float(state[f"{network}_adam_count"])
        for name, p in params[network].items():
            # A fresh per-parameter state, as Adam's first step would make it.
            adam = optimizers[network].state[p]
            adam["step"] = torch.tensor(count, dtype=torch.get_default_dtype())
            adam["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            adam["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            _copy_into(f"{network}_adam_m.{name}", adam["exp_avg"], state[f"{network}_adam_m.{name}"], source,
                       library)
            _copy_into(f"{network}_adam_v.{name}", adam["exp_avg_sq"], state[f"{network}_adam_v.{name}"], source,
                       library)


def _agent_layout(agent: Any) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.optim.Optimizer]]:
    params = {network: dict(getattr(agent, network).named_parameters()) for network in NETWORKS}
    return params, {"actor": agent.actor_optimizer, "critic": agent.critic_optimizer}


def agent_state(agent: Any) -> NeutralState:
    """The neutral state of a torch_ref agent (copies)."""
    return modules_state(*_agent_layout(agent), agent.step)


def load_agent(agent: Any, state: NeutralState, source: str = "from the neutral state") -> None:
    """Make a torch_ref agent hold a neutral state: weights, targets, Adam states, update counter."""
    load_modules(*_agent_layout(agent), state, source)
    agent.step = int(state["step"])


# -- the adapter -------------------------------------------------------------------------

class TorchRefAdapter:
    """A torch_ref agent behind the adapter interface of ``adapters.base``.

    ``agent`` may be any object with torch_ref's interface (the four modules with torch_ref's
    parameter names, ``actor_optimizer``/``critic_optimizer``, ``step``, and ``train(batch, noise,
    record=True)`` returning the intermediate quantities), e.g. a modified reference; by default it
    is ``make_agent(config, dtype, device)``.
    """

    name = "torch_ref"

    def __init__(self, config: TD3Config, dtype: DTypeLike = "float64", *, agent: Any = None,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.dtype = dtype_named(dtype)
        self.torch_dtype = torch_dtype(self.dtype)
        self.device = device
        self.agent = agent if agent is not None else make_agent(config, self.torch_dtype, device)
        self.quantities = quantity_names([n for n, _ in self.agent.actor.named_parameters()],
                                         [n for n, _ in self.agent.critic.named_parameters()])

    def load(self, state: NeutralState) -> None:
        load_agent(self.agent, state)

    def state(self) -> NeutralState:
        return agent_state(self.agent)

    def _tensor(self, x: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.torch_dtype, device=self.device)

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        info = self.agent.train(torch_ref.Batch(*(self._tensor(x) for x in batch)), self._tensor(target_noise),
                                record=True)
        actor_updated = "actor_loss" in info
        out: dict[str, Any] = {name: _numpy(info[name])
                               for name in ("target_action", "target_q", "current_q", "critic_loss") if name in info}
        out.update({f"critic_grad.{name}": _numpy(g) for name, g in info.get("critic_grads", {}).items()})
        if actor_updated:
            out.update({name: _numpy(info[name]) for name in ("actor_q", "actor_loss") if name in info})
            out.update({f"actor_grad.{name}": _numpy(g) for name, g in info.get("actor_grads", {}).items()})
        out.update(agent_state(self.agent))
        out["actor_updated"] = actor_updated
        return out


__all__ = ["TORCH_DTYPES", "TorchRefAdapter", "agent_state", "load_agent", "make_agent", "torch_dtype"]
