"""Learning curves: the mean evaluation return of one or several runs against environment steps.

Each run directory holds ``metrics.csv``; a curve is its mean evaluation return with a
+-1 std band. ``jax-td3 plot`` overlays several runs; every run draws its own
``learning_curve.png`` when it finishes.

Importing matplotlib takes most of a second, more than drawing the curve. ``start_painter()``
(``jax-td3 train`` calls it first thing) starts a helper process that imports it while the run
starts up, on a core the single-threaded start-up leaves idle; ``draw_learning_curve`` then hands
the drawing to that process and waits for it. Without a painter (or if it is gone) the curve is
drawn in this process, as before; the picture is the same either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    """``learning_curve.png`` of one run directory; None (with a warning) without matplotlib or usable metrics.

    Drawn by the painter process of ``start_painter`` when one is running, else here.
    """
    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).exists():
        return None
    try:
        drawn = _paint(run_dir)
        return drawn if drawn is not None else plot_runs([run_dir], run_dir / CURVE_FILE)
    except (ImportError, JaxTD3Error) as err:  # a finished run is not failed for want of its picture
        hint = "; pip install 'jax-td3[logging]'" if isinstance(err, ImportError) else ""
        warnings.warn(f"learning curve not drawn ({err}{hint})", stacklevel=2)
        return None


# -- the painter: matplotlib imported ahead of time in a helper process ----------------------

# The helper: imports matplotlib (Agg) and this module, then draws one learning curve per request
# line on stdin (a JSON run directory), answering one JSON line each; it exits at end of input,
# i.e. when the run's process closes the pipe or exits.
_PAINTER_PROGRAM = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from jax_td3.errors import JaxTD3Error
from jax_td3.run.plot import CURVE_FILE, plot_runs
from pathlib import Path
import io
# A throwaway figure like the real one: fonts, text layout and the PNG writer warm up now, not at the end.
fig, ax = plt.subplots(figsize=(7, 4.5))
line, = ax.plot([0, 1], [0, 1], marker="o", markersize=3, label="x")
ax.fill_between([0, 1], [0, 0], [1, 1], color=line.get_color(), alpha=0.2)
ax.set_xlabel("x"); ax.set_ylabel("y"); ax.set_title("t"); ax.grid(alpha=0.3); ax.legend()
fig.tight_layout(); fig.savefig(io.BytesIO(), format="png", dpi=100); plt.close(fig)
for line in sys.stdin:
    run_dir = Path(json.loads(line))
    try:
        answer = {"path": str(plot_runs([run_dir], run_dir / CURVE_FILE))}
    except JaxTD3Error as err:
        answer = {"error": str(err)}
    print(json.dumps(answer), flush=True)
"""

_painter: subprocess.Popen | None = None


def start_painter() -> bool:
    """Start the painter process (see the module docstring) unless one runs; False if it cannot start
    (then ``draw_learning_curve`` draws in this process). Call it before anything starts threads
    (JAX does), so the fork is cheap."""
    global _painter
    if _painter is not None and _painter.poll() is None:
        return True
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        _painter = None
        return False
    env = dict(os.environ, MPLBACKEND="Agg")
    try:
        _painter = subprocess.Popen([sys.executable, "-c", _PAINTER_PROGRAM, json.dumps(sys.path)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    except OSError:
        _painter = None
        return False
    return True


_retired: list[subprocess.Popen] = []


def stop_painter(wait: bool = True) -> None:
    """End the painter process, if one runs: it exits at the end of its input. ``wait=False`` does
    not wait for it here (it is reaped when this process exits)."""
    global _painter
    painter, _painter = _painter, None
    if painter is None or painter.stdin is None:   # (it is started with pipes: stdin is never None)
        return
    try:
        painter.stdin.close()
    except OSError:
        pass
    if not wait:
        if not _retired:
            import atexit

            atexit.register(_reap)
        _retired.append(painter)
        return
    _wait_for(painter)


def _wait_for(painter: subprocess.Popen) -> None:
    try:
        painter.wait(timeout=10)
    except subprocess.TimeoutExpired:
        painter.kill()
        painter.wait()
    for stream in (painter.stdin, painter.stdout):
        if stream is None:
            continue
        try:
            stream.close()
        except OSError:
            pass


def _reap() -> None:
    while _retired:
        _wait_for(_retired.pop())


def _paint(run_dir: Path) -> Path | None:
    """The painter's drawing of ``run_dir``'s curve: its path, ConfigError for metrics it cannot draw,
    or None when there is no working painter (it is then stopped, and the caller draws)."""
    global _painter
    painter = _painter
    if painter is None or painter.poll() is not None or painter.stdin is None or painter.stdout is None:
        stop_painter()
        return None
    try:
        painter.stdin.write(json.dumps(str(run_dir)) + "\n")
        painter.stdin.flush()
        line = painter.stdout.readline()
        answer = json.loads(line) if line else None
    except (OSError, ValueError):
        answer = None
    if not isinstance(answer, dict) or not ("path" in answer or "error" in answer):
        stop_painter()   # it died (e.g. a broken matplotlib): draw here, which reports why
        return None
    stop_painter(wait=False)   # one curve per run: it exits while this process finishes
    if "error" in answer:
        raise ConfigError(answer["error"])
    return Path(answer["path"])
