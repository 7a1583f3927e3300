"""The library's own errors. Each message is one line and speaks of settings, not of flags.

A setting named in a message is written in backticks (`updates_per_call`); the command layer
shows it as its flag (--updates-per-call), a Python caller reads the keyword.

Everything below the command layer raises these; ``jax_td3.cli`` turns a ``JaxTD3Error``
into one line on stderr and an exit status (2 for bad input, 1 for a numerical fault).
They also subclass the built-in type a Python caller would expect (``ValueError`` for
bad values, ``RuntimeError`` for a run that went wrong).
"""

from __future__ import annotations

from typing import Any


class JaxTD3Error(Exception):
    """Base class of every error jax_td3 raises on purpose."""


class ConfigError(JaxTD3Error, ValueError):
    """An algorithm config or a loop setting is out of its valid range, or two settings conflict."""


class RunDirectoryInUse(JaxTD3Error, RuntimeError):
    """Another jax-td3 run (another process) holds the run directory; the message names that process."""


class EnvError(JaxTD3Error, ValueError):
    """An environment id is unknown, not installed, or the environment does not fit TD3/DDPG."""


class CheckpointError(JaxTD3Error, ValueError):
    """A checkpoint is missing, truncated, corrupted, of another format version or does not fit."""


class ConversionError(JaxTD3Error, ValueError):
    """A train state does not fit another implementation's layout; the message names the parameter."""


class MissingExtraError(JaxTD3Error, ImportError):
    """An optional dependency (an extra of the package, e.g. PyTorch) is not installed; the message says
    which extra to install and what needs it."""


def require_torch(needed_by: str) -> Any:
    """The ``torch`` module; MissingExtraError naming the extra and ``needed_by`` when it is not installed.

    PyTorch is the ``torch`` extra: JAX training, evaluation of a JAX checkpoint and the compiled loop
    run without it; what needs it calls this first, so a missing PyTorch is one line, not a traceback.
    """
    try:
        import torch
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        raise MissingExtraError(f"PyTorch is not installed: pip install 'jax-td3[torch]' (needed by {needed_by})"
                                ) from None
    return torch


class NonFiniteError(JaxTD3Error, RuntimeError):
    """A NaN or infinity appeared in an observation, reward, loss or parameter; the message says where."""

    last_good_checkpoint: str | None = None  # set by the run driver: the newest checkpoint it kept
