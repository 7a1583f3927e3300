"""Argument types and the flag groups commands share; the only place flags are spelled.

A flag's destination is the name of the setting it sets (``--batch-size`` -> ``batch_size``),
and every flag defaults to None, meaning "not given": the library fills in presets and
defaults, and a resumed run can tell what the command line asked for.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class UsageError(ValueError):
    """Bad command-line input that only the command layer can see (e.g. flags that do not go together)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_list(text: str) -> tuple[int, ...]:
    """'256,256' -> (256, 256); every entry a positive integer."""
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _checked(parse: Callable[[str], T], ok: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse type: ``parse`` the text, then require ``ok(value)``; one message for both failures."""
    def convert(text: str) -> T:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return convert


positive_int = _checked(int, lambda value: value > 0, "a positive integer")
nonnegative_int = _checked(int, lambda value: value >= 0, "a non-negative integer")
nonnegative_float = _checked(float, lambda value: value >= 0 and math.isfinite(value), "a finite non-negative number")
updates_per_episode = _checked(lambda text: text if text == "steps" else int(text),
                               lambda value: isinstance(value, str) or value > 0, "a positive integer or 'steps'")


def flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """``{name: value}`` of the flags among ``names`` that the command line set."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


# Every field of an algorithm config that a command line may set (the environment, or the
# update-level parity command's own flags, give the sizes and the action box).
# The type is a parser, a tuple of choices, or ``bool`` (a ``--name``/``--no-name`` pair).
CONFIG_FLAGS: dict[str, tuple[Callable[[str], Any] | tuple[str, ...] | type[bool], str]] = {
    "hidden": (int_list, "actor hidden sizes, e.g. 256,256"),
    "critic_hidden": (int_list, "critic hidden sizes (default: same as --hidden; seed-ddpg: 64,32)"),
    "batch_size": (positive_int, "minibatch size"),
    "gamma": (float, "discount factor in [0, 1]"),
    "tau": (float, "Polyak rate of the target networks, in (0, 1]"),
    "actor_lr": (float, "actor Adam learning rate"),
    "critic_lr": (float, "critic Adam learning rate"),
    "policy_noise": (float, "TD3 target-policy noise std, in units of the action scale"),
    "noise_clip": (float, "TD3 target-policy noise clip, in units of the action scale"),
    "policy_freq": (positive_int, "actor and target updates every this many critic updates"),
    "adam_b1": (float, "Adam beta1"),
    "adam_b2": (float, "Adam beta2"),
    "adam_eps": (float, "Adam epsilon"),
    "critic_weight_decay": (float, "L2 weight decay of the critic (PyTorch Adam style: added to the gradient)"),
    "reward_scale": (float, "rewards are multiplied by this in the target"),
    "critic_loss_scale": (float, "the critic loss is multiplied by this (1: Fujimoto's; SBX's TD3: 0.5)"),
    "target_update": (("delayed", "every_update"),
                      ("when Polyak moves the targets: delayed (Fujimoto's: with the actor, after its step) or "
                       "every_update (SBX's: every update, after the critic step, before the actor step)")),
    "actor_q": (("q1", "min"), "what the actor ascends: q1 (Fujimoto's) or min, the minimum over the critics (SBX's)"),
    "init": (("torch", "flax"), "parameter initialisation"),
    # FastTD3 only (--algo fasttd3); another algorithm refuses them in one line.
    "num_atoms": (positive_int, "fasttd3: atoms of each critic's categorical distribution (>= 2; default 101)"),
    "v_min": (float, "fasttd3: lowest value of the critics' support (default -250)"),
    "v_max": (float, "fasttd3: highest value of the critics' support (default 250)"),
    "use_cdq": (bool, "fasttd3: clipped double Q, both critics learn the lower target and the actor ascends "
                      "the minimum (default); --no-use-cdq: each critic its own target, the actor their mean"),
    "n_step": (positive_int, "rewards summed into each transition's return (default 1); td3, ddpg ...: "
                             "--compiled only, with the per-environment replay (--replay-layout)"),
    "init_scale": (nonnegative_float, "fasttd3: std of the actor's output layer weights at init (default 0.01)"),
    "weight_decay": (nonnegative_float, "fasttd3: AdamW's decoupled weight decay of both networks (default 0.1)"),
    "actor_lr_end": (float, "fasttd3: actor learning rate at the end of a cosine schedule over the run's "
                            "updates (default: constant)"),
    "critic_lr_end": (float, "fasttd3: critic learning rate at the end of a cosine schedule over the run's "
                             "updates (default: constant)"),
    "lr_schedule_updates": (nonnegative_int, "fasttd3: updates the cosine schedule runs over (default: the run's "
                                             "updates, when --actor-lr-end or --critic-lr-end is given)"),
    "max_grad_norm": (nonnegative_float, "fasttd3: clip each network's gradient to this global norm "
                                         "(default 0: no clipping)"),
    "obs_normalization": (bool, "normalise the networks' observations with running statistics (fasttd3: "
                                "default on; td3, ddpg ...: default off, --compiled only)"),
    "critic_layer_norm": (bool, "fasttd3: LayerNorm after each critic hidden layer (default: off)"),
    "bfloat16_matmuls": (bool, "fasttd3: the networks' matrix products in bfloat16 (default: off)"),
    "std_min": (nonnegative_float, "lowest per-environment exploration noise std, in units of the action scale, "
                                   "redrawn when that environment's episode ends (fasttd3: default 0.001; td3, "
                                   "ddpg ...: with --std-max, --compiled only, instead of --expl-noise)"),
    "std_max": (nonnegative_float, "highest per-environment exploration noise std, in units of the action scale "
                                   "(fasttd3: default 0.4; td3, ddpg ...: with --std-min, --compiled only)"),
}


def add_config_flags(parser: argparse.ArgumentParser, title: str = "networks and updates (defaults: the algorithm's, "
                     "docs/algorithms.md)") -> argparse._ArgumentGroup:
    """One flag per algorithm config field in ``CONFIG_FLAGS`` (a tuple of strings as the type: choices; ``bool``:
    a ``--name``/``--no-name`` pair)."""
    group = parser.add_argument_group(title)
    for name, (kind, help_text) in CONFIG_FLAGS.items():
        if kind is bool:
            group.add_argument(flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(kind, tuple):
            group.add_argument(flag(name), choices=kind, default=None, help=help_text)
        else:
            group.add_argument(flag(name), type=kind, default=None, help=help_text)
    return group
