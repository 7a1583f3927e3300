"""What a run directory is: the files that mark one, and the default name of a new one."""

from __future__ import annotations

from pathlib import Path

from jax_td3.run.checkpoint import CHECKPOINT_DIR
from jax_td3.run.logger import CONFIG_FILE, METRICS_FILE

EPISODES_FILE = "episodes.csv"
RUN_MARKERS = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR)


def holds_run(out_dir) -> bool:
    """True if ``out_dir`` already holds (part of) a run: a new run must not write over it."""
    return any((Path(out_dir) / name).exists() for name in RUN_MARKERS)


def default_out(algo: str, env: str, seed: int, backend: str, compiled: bool = False, num_seeds: int = 1) -> str:
    """``runs/ENV-ALGO-BACKEND-seedS``, or ``runs/ENV-ALGO-compiled-seedS[-xK]`` for a compiled run."""
    if compiled:
        return f"runs/{env}-{algo}-compiled-seed{seed}" + (f"-x{num_seeds}" if num_seeds > 1 else "")
    return f"runs/{env}-{algo}-{backend}-seed{seed}"
