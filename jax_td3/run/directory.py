"""What a run directory is: the files that mark one, the lock a run holds on it, the default name of
a new one, and the rules both run drivers (``run.training``, ``run.compiled``) follow in it: a new run
never writes over another, a resumed one drops the log rows after its checkpoint and may change only
``RESUME_MAY_CHANGE``, and a finished one is left alone."""

from __future__ import annotations

import contextlib
import csv
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_td3.errors import CheckpointError, ConfigError, RunDirectoryInUse
from jax_td3.run.checkpoint import CHECKPOINT_DIR
from jax_td3.run.logger import CONFIG_FILE, METRICS_FILE
from jax_td3.settings import TrainSettings, settings_from_values

if TYPE_CHECKING:
    from jax_td3.run.checkpoint import Checkpoint

PathLike = str | os.PathLike[str]

EPISODES_FILE = "episodes.csv"
RUN_MARKERS = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR)
# Held (flock) by the run writing the directory; not a run marker: a directory holding only
# this file holds no run. It names the holder (pid and command line) for the refusal message.
LOCK_FILE = ".lock"


# Settings a resumed run may change: its length (``total_steps`` may grow), how it is chunked (compiled
# runs), and whether non-finite transitions are dropped. Any other setting or config field given on resume
# must agree with the run's.
RESUME_MAY_CHANGE = frozenset({"total_steps", "chunk_steps", "skip_nonfinite"})


def holds_run(out_dir: PathLike) -> bool:
    """True if ``out_dir`` already holds (part of) a run: a new run must not write over it."""
    return any((Path(out_dir) / name).exists() for name in RUN_MARKERS)


def refuse_if_holds_run(out_dir: PathLike) -> None:
    """ConfigError when a new run would write over the run in ``out_dir``."""
    if holds_run(out_dir):
        raise ConfigError(f"{out_dir} already holds a run; pass `resume` to continue it, or choose another `out`")


def latest_checkpoint(out_dir: PathLike) -> Checkpoint:
    """The newest complete checkpoint in ``out_dir`` (warning about and skipping broken ones); CheckpointError
    when there is none."""
    from jax_td3.run.checkpoint import latest_valid_checkpoint

    checkpoint = latest_valid_checkpoint(out_dir)
    if checkpoint is None:
        raise CheckpointError(f"`resume`: no complete checkpoint in {Path(out_dir) / CHECKPOINT_DIR}")
    return checkpoint


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return a is not None and b is not None and list(a) == list(b)
    return a == b


def resumed_settings(out_dir: PathLike, saved: dict, saved_config: dict, wanted: dict, requested: set[str],
                     done_steps: int) -> TrainSettings:
    """The settings to continue a run with: the run's own (``saved``; its config as a checkpoint records it,
    ``{"algo": ..., "fields": {...}}``), with the settings of ``RESUME_MAY_CHANGE`` that ``requested`` names
    taken from ``wanted`` (settings, config fields and ``algo``: ``RunPlan.values()``).

    ``requested`` names what the caller set (explicitly or through a preset); any other setting or config
    field among them that contradicts the run is a ConfigError, and so is a ``total_steps`` below the
    ``done_steps`` already done.
    """
    saved_config = {**saved_config["fields"], "algo": saved_config["algo"]}
    for key in sorted(requested & set(wanted) - RESUME_MAY_CHANGE):
        if key in saved or key in saved_config:
            have = saved[key] if key in saved else saved_config[key]
            if not _same(have, wanted[key]):
                raise ConfigError(f"`resume`: the run in {out_dir} has {key}={have}, but {wanted[key]} was asked "
                                  f"for; drop `{key}` or start a new run")
    settings = settings_from_values({**saved, **{k: wanted[k] for k in RESUME_MAY_CHANGE & requested}})
    if settings.total_steps < done_steps:
        raise ConfigError(f"`resume`: `total_steps` {settings.total_steps:,} is below the {done_steps:,} steps "
                          f"already done")
    return settings.validate()


def already_finished(checkpoint: Checkpoint, total_steps: int, out_dir: PathLike,
                     announce: Callable[[str], None]) -> dict | None:
    """The summary of a resumed run that has nothing left to do (None when it has): its ``checkpoint`` is at
    ``total_steps`` or beyond. Says so through ``announce``."""
    done = int(checkpoint.metadata["env_steps"])
    if done < total_steps:
        return None
    announce(f"{out_dir} already finished: its checkpoint {checkpoint.path.name} is at step {done:,} of "
             f"{total_steps:,}; nothing to do (a larger total_steps extends it)")
    return {"already_finished": True, "env_steps": done, "last_checkpoint": str(checkpoint.path)}


def truncate_log(path: Path, last_step: int, step_column: str = "step") -> None:
    """Drop the rows of the CSV log at ``path`` logged after ``last_step`` (written after the checkpoint a
    run resumes from), so that the resumed run appends its own."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    column = rows[0].index(step_column)
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[column])) <= last_step]
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)


def _command_line() -> str:
    """This process's command line, short enough for a one-line message."""
    argv = list(sys.argv) or ["python"]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m PACKAGE ...
        name = spec.name.removesuffix(".__main__")
        head = ["jax-td3"] if name == "jax_td3.cli" else ["python", "-m", name]
    else:
        head = [os.path.basename(argv[0]) or "python"]
    line = shlex.join(head + argv[1:]).replace("\n", " ")
    return line if len(line) <= 200 else line[:197] + "..."


def _holder(fd: int) -> str:
    """'pid 1234: jax-td3 train ...' as the holder wrote it into the lock file (read via ``fd``)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    pid, _, command = text.partition("\n")
    if not pid.strip().isdigit():
        return "pid unknown"
    command = command.strip().replace("\n", " ")
    return f"pid {pid.strip()}: {command}" if command else f"pid {pid.strip()}"


@contextlib.contextmanager
def hold(out_dir: PathLike) -> Iterator[Path]:
    """Hold ``out_dir`` (created if missing) for one run: an exclusive ``flock`` on ``out_dir/.lock``,
    released on exit, and by the kernel when the process dies (even by SIGKILL).

    Raises ``RunDirectoryInUse`` at once, naming the holder, when another open lock (another
    process, or another ``hold`` of the same directory) has it. Take it before reading
    anything in the directory to resume from, and before writing into it. A directory this
    call created and nothing else wrote into is removed again on exit.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir / LOCK_FILE
    fd = _lock(lock_path, out_dir)
    try:
        before = os.fstat(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_command_line()}\n".encode(), 0)
        try:
            yield out_dir
        finally:
            # No stale holder once released, and the file's times as they were: a hold that
            # wrote nothing else leaves the directory as it found it.
            os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
            if created and [p.name for p in out_dir.iterdir()] == [LOCK_FILE]:
                with contextlib.suppress(OSError):
                    lock_path.unlink()  # still locked: a waiter on this file re-checks in _lock
                    out_dir.rmdir()
    finally:
        os.close(fd)  # releases the lock


def _lock(lock_path: Path, out_dir: Path) -> int:
    """An fd holding the exclusive flock of ``lock_path``, the file now at that path."""
    import fcntl

    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirectoryInUse(f"{out_dir} is in use by another jax-td3 run ({holder}); wait for it "
                                    f"or choose another `out`") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            mine, there = os.fstat(fd), os.stat(lock_path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was removed by a holder that released it: lock the new one


def default_out(algo: str, env: str, seed: int, backend: str, compiled: bool = False, num_seeds: int = 1) -> str:
    """``runs/ENV-ALGO-BACKEND-seedS``, or ``runs/ENV-ALGO-compiled-seedS[-xK]`` for a compiled run."""
    if compiled:
        return f"runs/{env}-{algo}-compiled-seed{seed}" + (f"-x{num_seeds}" if num_seeds > 1 else "")
    return f"runs/{env}-{algo}-{backend}-seed{seed}"
