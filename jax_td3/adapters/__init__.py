"""Adapters: each implementation under test behind one small interface (``adapters.base``).

``jax_td3.adapters.jax`` wraps our JAX update and owns the JAX layout; ``jax_td3.adapters.torch_ref``
wraps the PyTorch reference and owns torch_ref's layout; ``jax_td3.adapters.sb3`` (and ``sbx``)
drive third-party implementations. The parity engine (``jax_td3.parity``) and ``jax_td3.convert``
go through them and know neither layout.

``make_adapter(name, config, dtype)`` builds one by its name in ``ADAPTERS``. The adapter modules are
imported only then, so importing this package costs NumPy and nothing else (no JAX, torch or
third-party library).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jax_td3.adapters.base import Adapter, NeutralState
from jax_td3.errors import ConfigError, require_torch

if TYPE_CHECKING:  # for annotations only: importing this package costs NumPy and nothing else
    from numpy.typing import DTypeLike

    from jax_td3.config import TD3Config

# name -> (module, class). "torch" is the PyTorch reference (torch_ref), as in the backends' names.
ADAPTERS: dict[str, tuple[str, str]] = {
    "jax": ("jax_td3.adapters.jax", "JaxAdapter"),
    "torch": ("jax_td3.adapters.torch_ref", "TorchRefAdapter"),
    "sb3": ("jax_td3.adapters.sb3", "SB3Adapter"),
    "sbx": ("jax_td3.adapters.sbx", "SBXAdapter"),
}
# FastTD3's own adapters (its update, train state and batch differ from TD3's), by the same names.
FASTTD3_ADAPTERS: dict[str, tuple[str, str]] = {
    "jax": ("jax_td3.adapters.fasttd3_jax", "FastTD3JaxAdapter"),
    "torch": ("jax_td3.adapters.fasttd3_torch_ref", "FastTD3TorchRefAdapter"),
}
# Adapters of implementations that are not this project's dependencies: the `thirdparty` extra.
THIRD_PARTY = {"sb3": "stable_baselines3", "sbx": "sbx"}
INSTALL_HINT = "pip install 'jax-td3[thirdparty]'"


def _missing(name: str, err: ImportError) -> bool:
    """Whether ``err`` means the third-party library of ``name`` is absent (or PyTorch, which the
    thirdparty extra installs with it), as opposed to a broken import inside code that is there."""
    missing = getattr(err, "name", None) or ""
    library = THIRD_PARTY.get(name)
    if library is None:
        return False
    return any(missing == root or missing.startswith(root + ".") for root in (library, "torch"))


# Config settings under which our update is an adapter's implementation (its class's ``config_settings``),
# for the adapters that have any; kept here so that asking costs no import of the library.
ADAPTER_SETTINGS: dict[str, dict[str, Any]] = {
    "sbx": {"critic_loss_scale": 0.5, "target_update": "every_update", "actor_q": "min"},
}


def adapter_settings(name: str) -> dict[str, Any]:
    """``{config field: value}`` that make our update compute what adapter ``name``'s implementation
    computes (empty: our defaults do, or it refuses what differs). The adapter class declares them as
    ``config_settings``; ``tests/test_sbx_parity.py`` checks the two agree."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown adapter {name!r}; choose from {', '.join(ADAPTERS)}")
    return dict(ADAPTER_SETTINGS.get(name, {}))


def settings_differences(name: str, config: TD3Config) -> dict[str, Any]:
    """The settings of adapter ``name`` that ``config`` does not have: ``{field: the adapter's value}``
    (``actor_q`` does not count with one critic, where "q1" and "min" are the same)."""
    return {field: value for field, value in adapter_settings(name).items()
            if getattr(config, field) != value and not (field == "actor_q" and config.num_critics == 1)}


def make_adapter(name: str, config: TD3Config, dtype: DTypeLike = "float64", *, seed: int = 0) -> Adapter:
    """The adapter called ``name`` (a key of ``ADAPTERS``) for ``config`` in ``dtype``.

    ``seed`` sets the initial weights of the adapters that take one (``jax``: ``PRNGKey(seed)``); the
    others start from their own initialisation (in a comparison only the first adapter's start
    matters: the second is loaded with it). A configuration the implementation cannot express
    raises the adapter's ``ConfigError``; a third-party library that is not installed raises a
    ``ConfigError`` naming the install command.
    """
    if name not in ADAPTERS:
        raise ConfigError(f"unknown adapter {name!r}; choose from {', '.join(ADAPTERS)}")
    if config.algo == "fasttd3" and name not in FASTTD3_ADAPTERS:
        raise ConfigError(f"the {name} adapter has no FastTD3; fasttd3 compares {' and '.join(FASTTD3_ADAPTERS)}")
    module_name, class_name = (FASTTD3_ADAPTERS if config.algo == "fasttd3" else ADAPTERS)[name]
    try:
        if name == "torch":
            require_torch("the torch adapter (the PyTorch reference)")
        cls = getattr(importlib.import_module(module_name), class_name)
        if name == "jax":
            return cls(config, dtype, seed=seed)
        return cls(config, dtype)
    except ImportError as err:
        if not _missing(name, err):
            raise
        what = "PyTorch" if (err.name or "").split(".")[0] == "torch" else THIRD_PARTY[name]
        raise ConfigError(f"the {name} adapter needs the thirdparty extra ({what} is not installed): "
                          f"{INSTALL_HINT}") from None


__all__ = ["ADAPTERS", "ADAPTER_SETTINGS", "Adapter", "FASTTD3_ADAPTERS", "INSTALL_HINT", "NeutralState", "THIRD_PARTY",
           "adapter_settings",
           "make_adapter", "settings_differences"]
