"""Learning curves: the mean evaluation return of one or several runs against environment steps.

Each run directory holds ``metrics.csv``; a curve is its mean evaluation return with a
+-1 std band. ``jax-td3 plot`` overlays several runs; every run draws its own
``learning_curve.png`` when it finishes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from jax_td3.errors import ConfigError, JaxTD3Error
from jax_td3.run.logger import CURVE_FILE, METRICS_FILE, read_metrics

REQUIRED_COLUMNS = ("step", "eval_return_mean")   # eval_return_std is optional (no band without it)


def plot_runs(run_dirs: list[str | os.PathLike], out_file: str | os.PathLike,
              labels: list[str] | None = None, title: str | None = None,
              references: dict[str, float] | None = None) -> Path:
    """Draw eval_return_mean vs step of every run into ``out_file`` (PNG); returns its path.

    ``references`` maps a label to a return drawn as a dashed horizontal line (e.g. a published
    final result to compare the curves with).

    Raises ConfigError naming the file when a run's metrics.csv lacks ``step`` or
    ``eval_return_mean``, or holds no rows; nothing is drawn then.
    """
    from jax_td3.run.checks import ensure_writable_file

    ensure_writable_file(out_file, "out")
    # Every file is read before matplotlib starts, so a bad one writes no half-empty plot.
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir) / METRICS_FILE
        rows = read_metrics(path, required=REQUIRED_COLUMNS)
        if not rows:
            raise ConfigError(f"{path} holds no evaluation rows (only a header line)")
        runs.append(rows)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name or str(d) for d in run_dirs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rows, label in zip(runs, labels):
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
    for (name, value), style in zip((references or {}).items(), _REFERENCE_STYLES * 10):
        ax.axhline(value, color="0.3", linestyle=style, linewidth=1.2, label=f"{name} ({value:g})")
    if len(run_dirs) > 1 or labels or references:
        ax.legend()
    fig.tight_layout()
    out_file = Path(out_file)
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


_REFERENCE_STYLES = ["--", ":", "-.", (0, (5, 1))]


def draw_learning_curve(run_dir: str | os.PathLike) -> Path | None:
    """``learning_curve.png`` of one run directory; None (with a warning) without matplotlib or usable metrics."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).exists():
        return None
    try:
        return plot_runs([run_dir], run_dir / CURVE_FILE)
    except (ImportError, JaxTD3Error) as err:  # a finished run is not failed for want of its picture
        warnings.warn(f"learning curve not drawn ({err})", stacklevel=2)
        return None
