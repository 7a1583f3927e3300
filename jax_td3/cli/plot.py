"""``jax-td3 plot DIR... [--out FILE]``: overlay the learning curves of several runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from jax_td3.cli.args import UsageError
from jax_td3.run.logger import METRICS_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run directories (each holding metrics.csv)")
    parser.add_argument("--out", default="learning_curves.png", help="output PNG file")
    parser.add_argument("--labels", default=None,
                        help="comma-separated legend labels, one per DIR (default: directory names)")
    parser.add_argument("--title", default=None, help="plot title")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=VALUE", type=reference,
                        help="draw a dashed horizontal line at return VALUE labelled NAME (e.g. a published "
                             "result: --reference 'Zoo TD3=2821.6'); repeatable")


def reference(text: str) -> tuple[str, float]:
    import argparse
    import math

    name, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name.strip() or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a finite number, got {text!r}")
    return name.strip(), number


def run(args: argparse.Namespace) -> int:
    from jax_td3.run.plot import plot_runs

    for d in args.dirs:
        if not (Path(d) / METRICS_FILE).is_file():
            raise UsageError(f"{d} holds no {METRICS_FILE} (not a training run directory?)")
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.dirs):
        raise UsageError(f"--labels has {len(labels)} entries for {len(args.dirs)} directories")
    path = plot_runs(args.dirs, args.out, labels=labels, title=args.title, references=dict(args.reference))
    print(f"learning curves: {path}")
    return 0
