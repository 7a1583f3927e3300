"""``jax-td3 export CHECKPOINT --to torch OUT.pt``: a checkpoint's networks as plain PyTorch state_dicts
(the format is described in ``jax_td3.export``)."""

from __future__ import annotations

import argparse

from jax_td3.cli.args import nonnegative_int
from jax_td3.export import TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint file, or a run directory (its newest valid checkpoint)")
    parser.add_argument("out", metavar="OUT", help="output file, e.g. agent.pt")
    parser.add_argument("--to", default="torch", metavar="FORMAT",
                        help=f"export format: {', '.join(TARGETS)} (a torch.save'd dict of torch_ref state_dicts)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="cast the weights (default: the checkpoint's dtype)")
    parser.add_argument("--agent", type=nonnegative_int, default=0,
                        help="which agent of a compiled multi-seed checkpoint (default 0)")


def run(args: argparse.Namespace) -> int:
    from jax_td3.export import export_checkpoint

    blob, checkpoint = export_checkpoint(args.checkpoint, args.out, to=args.to, dtype=args.dtype, agent=args.agent)
    c = blob["config"]
    print(f"wrote {args.out}: {c['algo']} {c['actor_class']} {tuple(c['hidden'])} and {c['critic_class']} "
          f"{tuple(c['critic_hidden'])}, {c['dtype']}, from {checkpoint.path} (step {c['step']}); "
          f"keys: {', '.join(key for key in blob if key not in ('format', 'format_version', 'config'))}, config")
    return 0
