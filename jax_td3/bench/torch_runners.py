"""The PyTorch runners of the update suite (``implementations.IMPLEMENTATIONS``): ``torch_ref`` as
written, and the tuned update (``torch_tuned``) eager, under ``torch.compile`` and in a CUDA graph;
for FastTD3 (``FASTTD3_BUILDERS``) the fast update of ``torch_fasttd3`` eager, under ``torch.compile``
and under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).

Imported by ``implementations.build`` only when a PyTorch row runs (PyTorch is the torch extra).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import numpy as np
import torch

import torch_ref
from jax_td3.bench.replay_data import FIELDS, NSTEP_FIELDS
from jax_td3.bench.runner import Runner, Setup, Unavailable
from jax_td3.bench.torch_fasttd3 import FastAgent
from jax_td3.bench.torch_tuned import CudaGraphUpdate, TunedAgent
from jax_td3.config import FastTD3Config, TD3Config
from jax_td3.convert import make_torch_agent

Data = dict[str, np.ndarray]   # random_transitions: {field: (count, width)}


def _torch_sync(device: str) -> Callable[[object], None]:
    if torch.device(device).type == "cuda":
        return lambda _: torch.cuda.synchronize()
    return lambda _: None


def _torch_ref(config: TD3Config, setup: Setup, data: Data) -> Runner:
    if setup.bf16:
        raise Unavailable("torch_ref is timed in float32 only")
    torch.manual_seed(setup.seed)
    agent = make_torch_agent(config, torch.float32, setup.torch_device)
    rng = np.random.default_rng(setup.seed)
    device = setup.torch_device

    def call() -> object:
        # Fujimoto's ReplayBuffer.sample: numpy indices, then one host->device tensor per field.
        index = rng.integers(0, setup.replay_size, size=config.batch_size)
        batch = torch_ref.Batch(*(torch.FloatTensor(data[name][index]).to(device) for name in FIELDS))
        return agent.train(batch)
    return Runner(call, _torch_sync(device), 1)


def _tuned_agent(config: TD3Config, setup: Setup, data: Data) -> TunedAgent:
    torch.manual_seed(setup.seed)
    agent = TunedAgent(config, setup.torch_device, torch.float32, replay_capacity=setup.replay_size)
    agent.add(*(data[name] for name in FIELDS))
    return agent


def _autocast(setup: Setup) -> ContextManager[object]:
    if setup.bf16:
        return torch.autocast(torch.device(setup.torch_device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _torch_tuned(config: TD3Config, setup: Setup, data: Data, compiled: bool = False) -> Runner:
    agent = _tuned_agent(config, setup, data)
    if compiled:
        # Fresh compiler caches per cell: dynamo's per-function recompile limit would otherwise turn
        # later cells of a long grid back into eager code. Inductor's on-disk cache stays on.
        torch._dynamo.reset()
        agent.compile()

    def call() -> None:
        with _autocast(setup):
            batch, noise = agent.sample()
            agent.update(batch, noise)
    return Runner(call, _torch_sync(setup.torch_device), 1)


def _torch_cudagraph(config: TD3Config, setup: Setup, data: Data) -> Runner:
    if not (torch.cuda.is_available() and torch.device(setup.torch_device).type == "cuda"):
        raise Unavailable("CUDA graphs need a CUDA device; this run has none")
    agent = _tuned_agent(config, setup, data)
    with _autocast(setup):
        graph = CudaGraphUpdate(agent)
    return Runner(graph.replay, _torch_sync(setup.torch_device), graph.updates_per_replay)


BUILDERS = {
    "torch_ref": _torch_ref,
    "torch_tuned": _torch_tuned,
    "torch_compile": lambda config, setup, data: _torch_tuned(config, setup, data, compiled=True),
    "torch_cudagraph": _torch_cudagraph,
}


def _torch_fasttd3(config: FastTD3Config, setup: Setup, data: Data, compile_mode: str | None = None) -> Runner:
    """FastTD3's fast update: eager (``compile_mode`` None) or both losses under torch.compile."""
    if compile_mode == "reduce-overhead" and not (torch.cuda.is_available()
                                                  and torch.device(setup.torch_device).type == "cuda"):
        raise Unavailable("CUDA graphs need a CUDA device; this run has none")
    torch.manual_seed(setup.seed)
    agent = FastAgent(config, setup.torch_device, torch.float32, replay_capacity=setup.replay_size)
    agent.add(*(data[name] for name in NSTEP_FIELDS))
    if compile_mode is not None:
        torch._dynamo.reset()   # fresh compiler caches per cell, as for the tuned TD3 update
        agent.compile(**({} if compile_mode == "default" else {"mode": compile_mode}))

    def call() -> None:
        with _autocast(setup):
            batch, noise = agent.sample()
            agent.update(batch, noise)
    notes = "" if compile_mode is None else f"torch.compile mode {compile_mode}"
    return Runner(call, _torch_sync(setup.torch_device), 1, notes=notes)


FASTTD3_BUILDERS = {
    "torch_tuned": _torch_fasttd3,
    "torch_compile": lambda config, setup, data: _torch_fasttd3(config, setup, data, "default"),
    "torch_cudagraph": lambda config, setup, data: _torch_fasttd3(config, setup, data, "reduce-overhead"),
}
