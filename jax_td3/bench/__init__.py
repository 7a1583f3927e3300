"""Benchmarks: the TD3/DDPG update (JAX vs PyTorch, against the machine's compute floor), end-to-end
training throughput, the compiled paths, and memory soak runs.

Run them with ``jax-td3 bench`` (the command layer, ``jax_td3.cli.bench``; benchmarks/README.md in
the repository has the commands and the measured numbers). The modules here take plain arguments
and dataclasses and return results; they print nothing. Importing any of them imports neither
Gymnasium nor PyBullet; the runs that need them import them when they start, or run
``jax-td3 train`` in subprocesses.
"""

from __future__ import annotations

from types import ModuleType


def torch_if_installed() -> ModuleType | None:
    """The ``torch`` module, or None when PyTorch (the torch extra) is not installed: the benchmarks
    then time the JAX side and record the PyTorch rows as skipped, with the install command."""
    try:
        import torch
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        return None
    return torch
