"""Run outputs: ``config.json``, ``metrics.csv``, TensorBoard events, ``summary.json`` and a learning curve.

One ``RunLogger`` per run directory. Every evaluation row is appended to
``metrics.csv`` and flushed at once, so an interrupted run keeps every row it
reached. TensorBoard (tensorboardX) and matplotlib are optional and imported
lazily: without them the CSV and JSON files are still written. tensorboardX is imported without
PyTorch (``summary_writer_class``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CURVE_FILE = "learning_curve.png"

# The first columns of metrics.csv, always present and in this order; other keys follow, sorted.
LEADING_COLUMNS = ("step", "wall_time", "eval_return_mean", "eval_return_std")


def _jsonable(value: Any) -> Any:
    """Config/summary values as plain JSON (tuples -> lists, numpy scalars -> Python, NaN -> null)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON through a temporary file so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(data), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_metrics(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats (empty cells become NaN).

    Raises ConfigError naming the file when it has no header line, lacks a column of
    ``required``, or holds a cell that is not a number.
    """
    from jax_td3.errors import ConfigError

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames
        if not columns:
            expected = ", ".join(required or LEADING_COLUMNS)
            raise ConfigError(f"{path} is empty (no header line; expected the columns {expected})")
        missing = [c for c in required if c not in columns]
        if missing:
            raise ConfigError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                              f"(it has {', '.join(c for c in columns if c) or 'none'})")
        rows = []
        for row in reader:
            values = {}
            for k, v in row.items():
                if k is None:  # cells beyond the header
                    continue
                try:
                    values[k] = float(v) if v not in ("", None) else math.nan
                except ValueError:
                    raise ConfigError(f"{path} line {reader.line_num}: {k} is not a number ({v!r})") from None
            rows.append(values)
        return rows


def summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without importing PyTorch when PyTorch is not loaded yet.

    ``tensorboardX.writer`` (2.6) imports torch, when it is installed, only to name ``torch.Tensor`` in
    type hints; on a run of the JAX backend that import was most of a second of start-up (the whole of
    PyTorch), for scalars that are Python floats. So torch is made unimportable for the duration of
    that one import (tensorboardX then falls back to numpy, as without torch) and importable again at
    once. If torch is already loaded (the torch backend) the import is the ordinary one, and if a
    tensorboardX ever needs torch to import, it gets it (second, ordinary try). ImportError without
    tensorboardX.
    """
    import sys

    if "tensorboardX.writer" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    # `import torch` raises ImportError while this is there (None in sys.modules: Python's documented way)
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        SummaryWriter = None
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    if SummaryWriter is None:   # a tensorboardX that needs torch, or none at all: the ordinary import
        for name in [m for m in sys.modules if m == "tensorboardX" or m.startswith("tensorboardX.")]:
            del sys.modules[name]
        from tensorboardX import SummaryWriter
    return SummaryWriter


class RunLogger:
    """Writes a run's outputs into ``out_dir`` (created if needed).

    ``log_eval(row)`` appends one row to metrics.csv (and TensorBoard);
    ``log_scalars(step, scalars)`` sends training scalars to TensorBoard only;
    ``finish(summary)`` writes summary.json and returns its path (the learning curve is
    drawn by ``plot.draw_learning_curve``).
    """

    def __init__(self, out_dir: str | os.PathLike, config: dict, *, append: bool = False,
                 tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / METRICS_FILE
        self.config_path = self.out_dir / CONFIG_FILE
        self.summary_path = self.out_dir / SUMMARY_FILE
        self.curve_path = self.out_dir / CURVE_FILE
        write_json(self.config_path, config)
        self._columns: list[str] | None = None
        if append and self.metrics_path.exists():
            with open(self.metrics_path, newline="") as f:
                header = next(csv.reader(f), None)
            self._columns = header or None
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        self._tb = self._open_tensorboard() if tensorboard else None

    def _open_tensorboard(self) -> Any:
        try:
            SummaryWriter = summary_writer_class()
        except ImportError:
            warnings.warn("tensorboardX is not installed; TensorBoard event files are skipped "
                          "(pip install 'jax-td3[logging]')", stacklevel=3)
            return None
        return SummaryWriter(logdir=str(self.out_dir / "tensorboard"))

    def log_eval(self, row: dict) -> None:
        """Append one evaluation row to metrics.csv (flushed) and mirror it to TensorBoard."""
        row = {k: _jsonable(v) for k, v in row.items()}
        if self._columns is None:
            rest = sorted(k for k in row if k not in LEADING_COLUMNS)
            self._columns = [c for c in LEADING_COLUMNS if c in row] + rest
            with open(self.metrics_path, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)
        unknown = set(row) - set(self._columns)
        if unknown:
            raise ValueError(f"metrics row has columns not in {self.metrics_path.name}: {sorted(unknown)}")
        with open(self.metrics_path, "a", newline="") as f:
            csv.writer(f).writerow(["" if row.get(c) is None else row[c] for c in self._columns])
            f.flush()
            os.fsync(f.fileno())
        step = int(row["step"])
        self.log_scalars(step, {f"eval/{k}": v for k, v in row.items() if k != "step"})

    def log_scalars(self, step: int, scalars: dict) -> None:
        """Send numeric scalars to TensorBoard (no-op without tensorboardX)."""
        if self._tb is None:
            return
        for name, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._tb.add_scalar(name, value, step)
        self._tb.flush()

    def write_summary(self, summary: dict) -> Path:
        write_json(self.summary_path, summary)
        return self.summary_path

    def finish(self, summary: dict) -> Path:
        """Write summary.json and close TensorBoard. Returns summary.json's path."""
        write_json(self.summary_path, summary)
        self.close()
        return self.summary_path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
