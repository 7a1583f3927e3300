"""The ``jax-td3`` command.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; only the chosen one is imported, so ``jax-td3 parity`` or
``jax-td3 bench`` never imports Gymnasium. Any ``UsageError`` or ``ConfigError``
raised by a command becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys


COMMANDS = {
    "parity": ("jax_td3.parity_cli", "compare JAX with the PyTorch reference: update by update, or whole training runs (--run)"),
    "train": ("jax_td3.train", "train an agent on a Gymnasium/PyBullet environment (either backend)"),
    "eval": ("jax_td3.evaluate", "evaluate a saved checkpoint with the noiseless policy"),
    "plot": ("jax_td3.plot", "overlay the learning curves of several runs"),
    "bench": ("jax_td3.bench_cli", "time the update (JAX vs PyTorch) against the compute floor; tables, plots"),
    "export": ("jax_td3.export", "write a checkpoint's networks as plain PyTorch state_dicts (torch_ref modules)"),
}


class UsageError(ValueError):
    """Bad command-line input; reported as one line with exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage dump) and exits 2."""

    def error(self, message):
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _top_level_help() -> str:
    lines = ["usage: jax-td3 COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'jax-td3 COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0 if argv else 2
    if argv[0] == "--version":
        from jax_td3 import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jax-td3: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = ArgumentParser(prog=f"jax-td3 {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from jax_td3.config import ConfigError  # here, not at the top: importing the CLI should not import JAX

    try:
        return int(module.run(args) or 0)
    except (UsageError, ConfigError) as err:
        print(f"jax-td3 {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jax-td3 {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
