"""The PyTorch FastTD3 reference (``torch_ref.fasttd3``) as an adapter, and the one place that knows its layout.

Its layout is the neutral one (``adapters.base``) held in live objects: the networks are the agent's
``actor``, ``qnet`` (family ``critic``) and ``qnet_target`` (``critic_target``) modules, whose
``named_parameters()`` are the neutral tensor names; ``torch.optim.AdamW`` keeps, per parameter,
``step`` (the count), ``exp_avg`` and ``exp_avg_sq``; the normaliser keeps ``_mean``/``_var`` (1, d),
``_std`` (their square root) and ``count``; the agent's ``step`` is the update counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

import torch_ref
from jax_td3.adapters.base import NeutralState
from jax_td3.adapters.fasttd3_jax import fasttd3_quantities
from jax_td3.adapters.torch_ref import load_modules, modules_state, torch_dtype
from jax_td3.config import FastTD3Config
from jax_td3.convert import make_fasttd3_agent
from jax_td3.dtypes import dtype_named
from jax_td3.errors import ConversionError

# neutral family -> the agent's module
MODULES = {"actor": "actor", "critic": "qnet", "critic_target": "qnet_target"}


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().copy()


def _layout(agent: Any) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.optim.Optimizer]]:
    """``modules_state``'s layout of a FastTD3 agent (its networks under the neutral family names; the
    TD3 families it lacks, ``actor_target``, left empty)."""
    params = {fam: dict(getattr(agent, module).named_parameters()) for fam, module in MODULES.items()}
    params["actor_target"] = {}
    return params, {"actor": agent.actor_optimizer, "critic": agent.q_optimizer}


def agent_state(agent: Any) -> NeutralState:
    """The neutral state of a ``torch_ref.FastTD3`` (copies)."""
    state = modules_state(*_layout(agent), agent.step, library="torch_ref.fasttd3")
    normalizer = agent.obs_normalizer
    state["obs_normalizer.mean"] = _numpy(normalizer.mean)
    state["obs_normalizer.var"] = _numpy(normalizer.var)
    state["obs_normalizer.count"] = int(normalizer.count)
    return state


def load_agent(agent: Any, state: NeutralState, source: str = "from the neutral state") -> None:
    """Make a ``torch_ref.FastTD3`` hold a neutral state: weights, target, AdamW states, normaliser, counter."""
    load_modules(*_layout(agent), state, source, library="torch_ref.fasttd3")
    normalizer = agent.obs_normalizer
    buffers = {}
    for entry, buffer in (("obs_normalizer.mean", "_mean"), ("obs_normalizer.var", "_var")):
        value = np.asarray(state[entry])
        if value.shape != tuple(normalizer.mean.shape):
            raise ConversionError(f"{entry}: shape {value.shape} ({source}) does not match "
                                  f"torch_ref.fasttd3 {tuple(normalizer.mean.shape)}")
        buffers[buffer] = torch.as_tensor(np.array(value), dtype=agent.dtype, device=normalizer.mean.device)[None]
    # _std is what its update would store: sqrt(var), one correctly rounded operation.
    normalizer.load_state_dict({**buffers, "_std": buffers["_var"].sqrt(),
                                "count": torch.tensor(int(state["obs_normalizer.count"]))})
    agent.step = int(state["step"])


class FastTD3TorchRefAdapter:
    """A ``torch_ref.FastTD3`` behind the adapter interface of ``adapters.base``.

    ``agent`` may be any object with its interface (e.g. a modified reference); by default it is
    ``convert.make_fasttd3_agent(config, dtype, device)``. ``update(batch, noise)`` takes the seven arrays
    of the FastTD3 batch: ``normalizer_update`` on the collected observations, then ``train``.
    """

    name = "torch_ref"

    def __init__(self, config: FastTD3Config, dtype: DTypeLike = "float64", *, agent: Any = None,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.dtype = dtype_named(dtype)
        self.torch_dtype = torch_dtype(self.dtype)
        self.device = device
        self.agent = agent if agent is not None else make_fasttd3_agent(config, self.torch_dtype, device)
        self.quantities = fasttd3_quantities([n for n, _ in self.agent.actor.named_parameters()],
                                             [n for n, _ in self.agent.qnet.named_parameters()])

    def load(self, state: NeutralState) -> None:
        load_agent(self.agent, state)

    def state(self) -> NeutralState:
        return agent_state(self.agent)

    def _tensor(self, x: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.torch_dtype, device=self.device)

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        collected, *fields = (self._tensor(x) for x in batch)
        self.agent.normalizer_update(collected)
        info = self.agent.train(torch_ref.fasttd3.Batch(*fields), self._tensor(target_noise), record=True)
        actor_updated = bool(info["actor_updated"])
        out: dict[str, Any] = {name: _numpy(info[name]) for name in
                               ("target_action", "projected", "cdq_choice", "target_dist", "critic_logits",
                                "critic_loss", "critic_grad_norm")}
        out.update(critic_lr=np.asarray(info["critic_lr"]), actor_lr=np.asarray(info["actor_lr"]))
        out.update({f"critic_grad.{name}": _numpy(g) for name, g in info["critic_grads"].items()})
        if actor_updated:
            out.update(actor_q=_numpy(info["actor_q"]), actor_loss=_numpy(info["actor_loss"]),
                       actor_grad_norm=_numpy(info["actor_grad_norm"]))
            out.update({f"actor_grad.{name}": _numpy(g) for name, g in info["actor_grads"].items()})
        out.update(agent_state(self.agent))
        out["actor_updated"] = actor_updated
        return out


__all__ = ["FastTD3TorchRefAdapter", "MODULES", "agent_state", "load_agent"]
