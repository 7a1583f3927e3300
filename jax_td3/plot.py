"""``jax-td3 plot DIR... [--out FILE]``: overlay the learning curves of several runs.

Each DIR is a run directory holding ``metrics.csv``; the curve is the mean
evaluation return against environment steps, with a +-1 std band.
"""

from __future__ import annotations

import os
from pathlib import Path

from jax_td3.logger import METRICS_FILE, read_metrics


def plot_runs(run_dirs: list[str | os.PathLike], out_file: str | os.PathLike,
              labels: list[str] | None = None, title: str | None = None) -> Path:
    """Draw eval_return_mean vs step of every run into ``out_file`` (PNG); returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name or str(d) for d in run_dirs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir, label in zip(run_dirs, labels):
        rows = read_metrics(Path(run_dir) / METRICS_FILE)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        mean = [r["eval_return_mean"] for r in rows]
        std = [r.get("eval_return_std", 0.0) for r in rows]
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=label)
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title or "learning curve")
    ax.grid(alpha=0.3)
    if len(run_dirs) > 1 or labels:
        ax.legend()
    fig.tight_layout()
    out_file = Path(out_file)
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


def add_arguments(parser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run directories (each holding metrics.csv)")
    parser.add_argument("--out", default="learning_curves.png", help="output PNG file")
    parser.add_argument("--labels", default=None,
                        help="comma-separated legend labels, one per DIR (default: directory names)")
    parser.add_argument("--title", default=None, help="plot title")


def run(args) -> int:
    from jax_td3.cli import UsageError

    for d in args.dirs:
        if not (Path(d) / METRICS_FILE).is_file():
            raise UsageError(f"{d} holds no {METRICS_FILE} (not a training run directory?)")
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.dirs):
        raise UsageError(f"--labels has {len(labels)} entries for {len(args.dirs)} directories")
    path = plot_runs(args.dirs, args.out, labels=labels, title=args.title)
    print(f"learning curves: {path}")
    return 0
