"""The process-wide settings a command sets for its own process (the library never sets them).

- JAX's x64 mode, for ``--dtype float64`` (or a float64 run resumed): JAX makes float64 arrays only
  in it, and it is one switch for the whole process.
- torch's intra-op threads, for a run or comparison with the PyTorch reference: one. The loop's
  small MLPs run fastest on one; more threads mostly add synchronisation, and on a busy machine
  they are many times slower.
"""

from __future__ import annotations

from pathlib import Path

from jax_td3.checkpoint_format import list_checkpoints, read_metadata
from jax_td3.errors import CheckpointError


def use_dtype(dtype: str | None) -> None:
    """Switch on JAX's x64 mode when ``dtype`` is float64."""
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def use_torch_threads(threads: int = 1) -> None:
    """torch's intra-op threads, when PyTorch is installed (what needs it and finds it missing says so
    itself, in one line)."""
    try:
        import torch
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        return
    torch.set_num_threads(threads)


def saved_run_settings(out: str | None) -> dict:
    """The header of the newest readable checkpoint in run directory ``out`` (``dtype``, ``backend``), or {}."""
    if out is None:
        return {}
    for path in reversed(list_checkpoints(Path(out))):
        try:
            return read_metadata(path)
        except CheckpointError:
            continue
    return {}
