"""The ``jax-td3`` command: the only part of jax_td3 that knows argparse, prints, and picks exit codes.

Each subcommand is a module here with ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen one is imported, so ``jax-td3 parity`` or ``jax-td3 bench`` never imports
Gymnasium, and ``jax-td3 --help`` imports no JAX. A command turns its flags into the
library's dataclasses and calls the library; the library's errors (``jax_td3.errors``)
and the command layer's own ``UsageError`` become one line on stderr and exit status 2
(1 for a numerical fault that stopped a run).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from jax_td3.cli.args import ArgumentParser, UsageError, flag

COMMANDS = {
    "parity": ("jax_td3.cli.parity", "compare implementations update by update, or whole training runs (--run)"),
    "train": ("jax_td3.cli.train", "train an agent on a Gymnasium/PyBullet environment (either backend), or "
                                   "compiled (--compiled)"),
    "eval": ("jax_td3.cli.eval", "evaluate a saved checkpoint with the noiseless policy"),
    "plot": ("jax_td3.cli.plot", "overlay the learning curves of several runs"),
    "bench": ("jax_td3.cli.bench", "time the update (JAX vs PyTorch) against the compute floor; tables, plots"),
    "export": ("jax_td3.cli.export", "write a checkpoint's networks as plain PyTorch state_dicts (torch_ref modules)"),
}


def _top_level_help() -> str:
    lines = ["usage: jax-td3 COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'jax-td3 COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def as_flags(err: Exception) -> str:
    """The error's message with each `setting` named in backticks shown as its flag."""
    return re.sub(r"`(\w+)`", lambda match: flag(match.group(1)), str(err))


@contextlib.contextmanager
def _warnings_on_one_line(name: str) -> Iterator[None]:
    """A library warning (an optional package missing, say) printed as one line, not with its source line."""
    def one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
        return f"jax-td3 {name}: warning: {message}\n"

    saved = warnings.formatwarning
    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = saved


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
    from jax_td3.errors import JaxTD3Error, NonFiniteError

    try:
        with _warnings_on_one_line(name):
            return int(module.run(args) or 0)
    except NonFiniteError as err:
        kept = err.last_good_checkpoint or "none written yet"
        print(f"jax-td3 {name}: error: {as_flags(err)}; training stopped, last good checkpoint: {kept}",
              file=sys.stderr)
        return 1
    except (UsageError, JaxTD3Error) as err:
        print(f"jax-td3 {name}: error: {as_flags(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jax-td3 {name}: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "UsageError", "main"]


if __name__ == "__main__":
    sys.exit(main())
