"""A run's checkpoints: written atomically, one file per save, the newest few kept.

The file format, and reading files back, is ``jax_td3.checkpoint_format`` (re-exported here for the
run drivers). A checkpoint holds the train state in the JAX layout, keyed by tree path
(``backends.base.pack_train_state``), so a JAX run's checkpoint loads into the PyTorch backend and
the other way round. What else goes in is up to the caller (the training loop stores its config,
counters, RNG states, exploration-noise state and, optionally, the replay buffer).

Saving writes a temporary file in the same directory, fsyncs it, renames it into
place and fsyncs the directory, so a crash leaves either the old set of files or
the new one; then it deletes all but the newest ``keep``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jax_td3.checkpoint_format import (
    BEST_AGENT_FILE,
    CHECKPOINT_DIR,
    FORMAT_VERSION,
    MAGIC,
    SUFFIX,
    Checkpoint,
    checkpoint_dir,
    checkpoint_name,
    config_from_checkpoint,
    decode,
    encode,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metadata,
)
from jax_td3.errors import CheckpointError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds (Windows)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes, prefix: str = ".ckpt-") -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsynced and renamed."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def save_checkpoint(run_dir: str | os.PathLike, step: int, contents: dict, metadata: dict,
                    keep: int | None = 3) -> Path:
    """Write ``DIR/checkpoints/ckpt-<step>.jtd3`` atomically and keep only the newest ``keep``."""
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    _write_atomically(path, encode(contents, _with_step(metadata, step)))
    # Temporary files of writers killed mid-save (one writer per run, so none is in use now).
    for stale in directory.glob(".ckpt-*.tmp"):
        stale.unlink(missing_ok=True)
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def save_best_agent(run_dir: str | os.PathLike, step: int, contents: dict, metadata: dict) -> Path:
    """Write ``DIR/best.jtd3`` atomically: the agent of a run's best evaluation so far (no replay buffer).

    It is a checkpoint file like the others (``jax-td3 eval`` and ``export`` read it); its metadata
    holds the evaluation that made it the best (``eval_return_mean``, ``eval_return_std``, ``step``).
    """
    path = Path(run_dir) / BEST_AGENT_FILE
    _write_atomically(path, encode(contents, _with_step(metadata, step)), prefix=".best-")
    for stale in path.parent.glob(".best-*.tmp"):   # of writers killed mid-save
        stale.unlink(missing_ok=True)
    return path


def _with_step(metadata: dict, step: int) -> dict:
    """``metadata`` with the step (``encode`` adds the version of jax-td3 that wrote the file)."""
    return {**metadata, "step": int(step)}


__all__ = ["BEST_AGENT_FILE", "CHECKPOINT_DIR", "FORMAT_VERSION", "MAGIC", "SUFFIX", "Checkpoint", "CheckpointError",
           "checkpoint_dir", "checkpoint_name", "config_from_checkpoint", "decode", "encode",
           "latest_valid_checkpoint", "list_checkpoints", "load_checkpoint", "read_metadata", "save_best_agent",
           "save_checkpoint"]
