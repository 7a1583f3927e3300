"""A checkpoint's networks as plain PyTorch state_dicts (``jax-td3 export CHECKPOINT --to torch OUT.pt``).

The file is one ``torch.save``d dict (loadable with ``torch.load(path, weights_only=True)``)::

    {
      "format": "jax-td3-torch-export", "format_version": 1,
      "actor": state_dict, "actor_target": state_dict,
      "critic": state_dict, "critic_target": state_dict,
      "config": {"algo", "obs_dim", "act_dim", "action_low", "action_high", "hidden", "critic_hidden",
                 "actor_class", "critic_class", "dtype", "step", "env", "time_feature", "eval_seed",
                 and every field of the algorithm's config},
    }

The state_dicts are those of ``torch_ref.networks`` modules (``actor_class`` is
``Actor``; ``critic_class`` is ``Critic`` for TD3's twin critic, ``SingleCritic``,
``DDPGCritic`` or ``SeedCritic``), so they load with ``load_state_dict`` (strict)
into modules built from the config, with no JAX installed::

    import torch
    from torch_ref.networks import Actor

    blob = torch.load("agent.pt", weights_only=True)
    c = blob["config"]
    dtype = getattr(torch, c["dtype"])
    actor = Actor(c["obs_dim"], c["act_dim"], c["action_low"], c["action_high"], c["hidden"]).to(dtype)
    actor.load_state_dict(blob["actor"])
    action = actor(torch.as_tensor(obs, dtype=dtype)[None])[0]

A fasttd3 checkpoint exports ``torch_ref.fasttd3`` modules instead (``module`` is "torch_ref.fasttd3"):
"actor" (``Actor``), "critic" and "critic_target" (``Critic``, the twin distributional critics) and
"obs_normalizer" (``EmpiricalNormalization``: the running statistics the actor's observations are
normalised with, ``(obs - mean) / (std + 0.01)``); the config then holds FastTD3's fields too::

    from torch_ref.fasttd3 import Actor, EmpiricalNormalization

    actor = Actor(c["obs_dim"], c["act_dim"], c["action_low"], c["action_high"], c["hidden"], c["init_scale"],
                  dtype=dtype)
    actor.load_state_dict(blob["actor"])
    normalizer = EmpiricalNormalization(c["obs_dim"], dtype=dtype)
    normalizer.load_state_dict(blob["obs_normalizer"])
    x = torch.as_tensor(obs, dtype=dtype)[None]
    action = actor(normalizer(x, update=False) if c["obs_normalization"] else x)[0]

A compiled run of the TD3 family with ``obs_normalization`` (its statistics kept by the loop beside the train
state) exports its ``torch_ref.networks`` modules as above plus "obs_normalizer", the same
``EmpiricalNormalization`` state_dict; its actor acts on ``normalizer(x, update=False)``.

The weights keep the checkpoint's dtype unless ``--dtype`` casts them. Move the
modules to that dtype before ``load_state_dict``: loading copies into the module's
existing tensors, so float64 weights loaded into a float32 module are rounded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_td3.dtypes import dtype_named, x64_scope
from jax_td3.errors import CheckpointError, ConfigError, require_torch
from jax_td3.loops.exploration import evaluation_seed

if TYPE_CHECKING:  # for annotations only: this module imports JAX and torch when it needs them
    from jax_td3.checkpoint_format import Checkpoint
    from jax_td3.config import TD3Config
    from jax_td3.fasttd3.state import NormalizerState
    from jax_td3.update import TrainState

FORMAT = "jax-td3-torch-export"
FORMAT_VERSION = 1
TARGETS = ("torch",)
NETWORKS = ("actor", "actor_target", "critic", "critic_target")
# fasttd3: export key -> the torch_ref.FastTD3 attribute holding that module.
FASTTD3_MODULES = {"actor": "actor", "critic": "qnet", "critic_target": "qnet_target",
                   "obs_normalizer": "obs_normalizer"}


def train_state_from_checkpoint(path: str | os.PathLike[str],
                                agent: int = 0) -> tuple[TD3Config, str, TrainState, Checkpoint]:
    """(config, dtype, JAX-layout train state with numpy leaves, Checkpoint) of a saved run.

    ``agent`` picks one agent of a compiled multi-seed checkpoint.
    """
    from jax_td3.backends.base import unpack_train_state
    from jax_td3.checkpoint_format import config_from_checkpoint, load_checkpoint

    checkpoint = load_checkpoint(path)
    contents = checkpoint.contents
    try:
        config = config_from_checkpoint(contents)
        if "train_states" in contents:  # a compiled run: one train state per seed
            if not 0 <= agent < len(contents["train_states"]):
                raise CheckpointError(f"`agent` {agent} is out of range: the checkpoint holds "
                                      f"{len(contents['train_states'])} agents")
            dtype, leaves = checkpoint.metadata["dtype"], contents["train_states"][agent]
        else:
            dtype, leaves = contents["settings"]["dtype"], contents["trainer"]["train_state"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path} lacks the contents of a training run ({err})") from None
    return config, dtype, unpack_train_state(config, dtype, leaves), checkpoint


def keeps_statistics_apart(config: TD3Config) -> bool:
    """Whether the observation statistics of an agent of ``config`` live beside its train state: the TD3
    family with ``obs_normalization`` (the compiled loop's ``AgentState.obs_normalizer``; fasttd3 keeps them
    in its own train state)."""
    return config.algo != "fasttd3" and config.obs_normalization


def obs_normalizer_from_checkpoint(config: TD3Config, checkpoint: Checkpoint, agent: int = 0) -> NormalizerState | None:
    """One agent's observation statistics (numpy leaves) where they live beside the train state
    (``keeps_statistics_apart``): the compiled run's saved agents, ``obs_normalizer/...``; else None."""
    if not keeps_statistics_apart(config):
        return None
    import numpy as np

    from jax_td3.fasttd3.state import NormalizerState

    try:
        arrays = checkpoint.contents["agents"]
        leaves: dict[str, Any] = {name: np.asarray(arrays[f"obs_normalizer/{name}"][agent])   # numpy leaves
                                  for name in NormalizerState._fields}
        return NormalizerState(**leaves)
    except (KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{checkpoint.path}: {config.algo} with `obs_normalization` but no saved observation "
                              f"statistics ({err})") from None


def run_settings_of(checkpoint: Checkpoint, agent: int = 0) -> dict[str, Any]:
    """The settings one agent of a checkpoint's run was trained and evaluated with (``env``, ``seed`` and,
    for the Gymnasium loop, every other ``TrainSettings`` field); a compiled run's agent ``i`` has its own seed."""
    contents = checkpoint.contents
    try:
        if "train_states" in contents:  # a compiled run: one train state per seed
            return {"env": checkpoint.metadata["env"], "seed": contents["compiled"]["seeds"][agent]}
        return contents["settings"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path} lacks the contents of a training run ({err})") from None


def torch_export(config: TD3Config, state: TrainState, dtype: str, step: int | None = None,
                 obs_normalizer: NormalizerState | None = None) -> dict[str, Any]:
    """The export dict (see the module docstring) of a JAX-layout train state; ``obs_normalizer``: the
    statistics of the TD3 family with ``obs_normalization`` (``keeps_statistics_apart``), which it needs."""
    torch = require_torch("exporting to PyTorch")
    from jax_td3.convert import (
        fasttd3_to_torch,
        make_fasttd3_agent,
        make_torch_agent,
        normalizer_to_torch,
        state_to_torch,
    )

    fasttd3 = config.algo == "fasttd3"
    if fasttd3:
        agent = make_fasttd3_agent(config.replace(bfloat16_matmuls=False), dtype)  # type: ignore[call-arg]  # a FastTD3Config
        fasttd3_to_torch(state, agent)
        modules = {name: getattr(agent, attribute) for name, attribute in FASTTD3_MODULES.items()}
    else:
        agent = make_torch_agent(config, dtype)
        state_to_torch(config, state, agent)
        modules = {name: getattr(agent, name) for name in NETWORKS}
        if keeps_statistics_apart(config):
            if obs_normalizer is None:
                raise ConfigError(f"{config.algo} with `obs_normalization` exports its observation statistics: "
                                  f"give `obs_normalizer`")
            from torch_ref.fasttd3 import EmpiricalNormalization

            modules["obs_normalizer"] = EmpiricalNormalization(config.obs_dim, dtype=getattr(torch, dtype))
            normalizer_to_torch(obs_normalizer, modules["obs_normalizer"])
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    description = dict(
        fields, algo=config.algo, obs_dim=config.obs_dim, act_dim=config.act_dim,
        action_low=[float(x) for x in config.action_low], action_high=[float(x) for x in config.action_high],
        hidden=list(config.actor_hidden), critic_hidden=list(config.critic_hidden_sizes),
        actor_class=type(modules["actor"]).__name__, critic_class=type(modules["critic"]).__name__,
        dtype=dtype, step=step)
    if fasttd3:
        description["module"] = "torch_ref.fasttd3"
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": description}
    for name, module in modules.items():
        # Own, contiguous copies: a state_dict shares storage with the agent's modules.
        blob[name] = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    return blob


def train_state_from_torch_export(path: str | os.PathLike[str]) -> tuple[TD3Config, str, TrainState, dict[str, Any]]:
    """(config, dtype, JAX-layout train state, export config dict) of an ``export --to torch`` file.

    Every state_dict must fit the torch_ref module its config describes exactly: missing or
    extra keys and wrong shapes raise a one-line ``CheckpointError``. The export holds no
    optimizer state, so the Adam moments of the returned state are fresh (zero). The observation
    statistics of the TD3 family with ``obs_normalization``: ``agent_from_torch_export``.
    """
    return agent_from_torch_export(path)[:4]


def agent_from_torch_export(path: str | os.PathLike[str]) -> tuple[TD3Config, str, TrainState, dict[str, Any],
                                                                   NormalizerState | None]:
    """``train_state_from_torch_export``'s (config, dtype, train state, export config dict) and the observation
    statistics the actor acts with where they live beside the train state (``keeps_statistics_apart``), else None."""
    import jax
    import numpy as np

    from jax_td3.backends.base import initial_train_state
    from jax_td3.config import CONFIGS, make_config
    from jax_td3.convert import (
        fasttd3_from_torch,
        make_fasttd3_agent,
        make_torch_agent,
        normalizer_from_torch,
        state_from_torch,
    )
    from jax_td3.errors import ConversionError

    torch = require_torch("reading a PyTorch export file")
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"cannot read {path}: no such file") from None
    except Exception as err:  # torch raises several types for files that are not torch.save'd dicts
        raise CheckpointError(f"cannot read {path} as a PyTorch file ({type(err).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a jax-td3 torch export (no format {FORMAT!r} key)")
    description = blob.get("config") or {}
    try:
        fields = {k: description[k] for k in ("obs_dim", "act_dim", "action_low", "action_high", "hidden",
                                              "critic_hidden")}
        fasttd3 = description["algo"] == "fasttd3"
        if fasttd3:   # every field: the networks' shapes and the normalisation depend on several
            own = {f.name for f in dataclasses.fields(CONFIGS["fasttd3"])}
            extra = {k: tuple(v) if isinstance(v, list) else v for k, v in description.items()
                     if k in own and k not in fields}
        else:
            extra = {k: v for k, v in description.items()
                     if k in ("gamma", "tau", "policy_noise", "noise_clip", "policy_freq", "batch_size",
                              "obs_normalization")}
        config = make_config(description["algo"], **fields, **extra)
        dtype = description["dtype"]
    except KeyError as err:
        raise CheckpointError(f"{path}: its config lacks {err}") from None
    dtype_named(dtype)
    if fasttd3:
        agent = make_fasttd3_agent(config.replace(bfloat16_matmuls=False), dtype)  # type: ignore[call-arg]  # a FastTD3Config
        modules = {name: getattr(agent, attribute) for name, attribute in FASTTD3_MODULES.items()}
    else:
        agent = make_torch_agent(config, dtype)
        modules = {name: getattr(agent, name) for name in NETWORKS}
        if keeps_statistics_apart(config):
            from torch_ref.fasttd3 import EmpiricalNormalization

            modules["obs_normalizer"] = EmpiricalNormalization(config.obs_dim, dtype=getattr(torch, dtype))
    for name, module in modules.items():
        if name not in blob:
            raise CheckpointError(f"{path}: no {name!r} state_dict")
        missing = sorted(set(module.state_dict()) - set(blob[name]))
        unexpected = sorted(set(blob[name]) - set(module.state_dict()))
        if missing or unexpected:
            raise CheckpointError(f"{path}: {name} state_dict does not fit {type(module).__name__} {config.hidden}: "
                                  f"missing keys {missing}, unexpected keys {unexpected}")
        try:
            module.load_state_dict(blob[name])
        except RuntimeError as err:
            first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
            raise CheckpointError(f"{path}: {name} state_dict does not fit: {first}") from None
    with x64_scope(dtype):  # float64 for this call only
        template = jax.tree_util.tree_map(np.asarray, initial_train_state(config, jax.random.PRNGKey(0),
                                                                          np.dtype(dtype)))
    try:
        state = fasttd3_from_torch(agent, template) if fasttd3 else state_from_torch(config, agent, template)
    except ConversionError as err:
        raise CheckpointError(f"{path}: {err}") from None
    statistics = normalizer_from_torch(modules["obs_normalizer"]) if keeps_statistics_apart(config) else None
    return config, dtype, state, description, statistics


def export_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], to: str = "torch",
                      dtype: str | None = None, agent: int = 0) -> tuple[dict[str, Any], Checkpoint]:
    """Write the networks of ``checkpoint`` (a file or run directory) to ``out``; returns
    ``(export dict, Checkpoint)``. ``dtype`` casts the weights; ``agent`` picks one agent of a
    compiled multi-seed checkpoint. The file is written next to ``out`` and renamed into place,
    so an interrupted export leaves no partial file."""
    if to not in TARGETS:
        raise ConfigError(f"unknown export format {to!r}; choose from {', '.join(TARGETS)}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory; give a file name such as {out / 'agent.pt'}")
    if not out.resolve().parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {out.resolve().parent} does not exist")
    torch = require_torch("export `to` torch")
    config, saved_dtype, state, saved = train_state_from_checkpoint(checkpoint, agent)
    blob = torch_export(config, state, dtype or saved_dtype, step=saved.metadata.get("step"),
                        obs_normalizer=obs_normalizer_from_checkpoint(config, saved, agent))
    blob["config"]["env"] = saved.metadata.get("env")
    # How the run evaluated, so `jax-td3 eval` of the file reproduces its returns: the observation
    # (with the time feature, the env's plus the fraction of time left) and the evaluation seed.
    settings = run_settings_of(saved, agent)
    blob["config"]["time_feature"] = bool(settings.get("time_feature", False))
    blob["config"]["eval_seed"] = evaluation_seed(int(settings["seed"]))
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        torch.save(blob, tmp)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as err:  # torch.save reports some OS failures as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise ConfigError(f"cannot write {out}: {reason}") from None
    return blob, saved
