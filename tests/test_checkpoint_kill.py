"""Checkpoint writes survive SIGKILL at any moment.

A writer process saves checkpoints in a loop through ``checkpoint.save_checkpoint``
and is killed with SIGKILL after a random delay (fixed-seed generator), again and
again. After every kill the directory must hold a newest complete checkpoint that
loads, verifies and is exactly one of the states that were written (each save
carries its index and contents derived from that index); no partially written file
may ever be picked, and temporary files left by a killed writer must be ignored.
The next writer continues from the newest checkpoint, as a resumed run does.

Importing ``jax_td3.run.checkpoint`` imports the package (and with it JAX), which takes
seconds; so one server process imports it once and forks a fresh writer for every
kill (a fork costs milliseconds). The server never initialises a JAX backend, so
forking it is safe. Run this file as a script to start the server (the test does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

KEEP = 3                      # save_checkpoint's rotation: the newest KEEP files stay
MIN_KILLS = 24                # the issue asks for at least 20
MIN_KILLS_INSIDE_A_SAVE = 4   # kills inside a save's file operations (a temporary file left, or no rotation)
MAX_KILLS = 200               # give up on reaching MIN_KILLS_INSIDE_A_SAVE after this many

# The train state of TD3 with 256-256 networks on Pendulum (obs 3, action 1), float32:
# actor, twin critic (stacked on a leading axis) -> ~200k parameters; the checkpoint holds
# parameters, targets and both Adam moments of each, ~3.2 MB, like a real one.
_ACTOR = [(3, 256), (256,), (256, 256), (256,), (256, 1), (1,)]
_CRITIC = [(2, 4, 256), (2, 256), (2, 256, 256), (2, 256), (2, 256, 1), (2, 1)]
STATE_SHAPES = (_ACTOR + _CRITIC) * 4


def _base_leaves() -> list[np.ndarray]:
    rng = np.random.default_rng(2024)
    return [rng.standard_normal(shape).astype(np.float32) for shape in STATE_SHAPES]


def contents_for(index: int, base: list[np.ndarray]) -> dict:
    """The checkpoint contents of save number ``index`` (a pure function of it)."""
    explore = np.random.default_rng(index)
    return {
        "config": {"algo": "td3", "fields": {"hidden": [256, 256], "batch_size": 256, "tau": 0.005}},
        "trainer": {
            "train_state": [leaf + np.float32(index) for leaf in base],
            "counters": {"env_steps": index * 1000, "updates": index * 999, "episodes": index * 5},
            "rng": {"explore": explore.bit_generator.state},
            "episode_returns": [float(-index - k / 8) for k in range(index % 7)],
            "buffer": None,
        },
    }


def metadata_for(index: int) -> dict:
    return {"backend": "jax", "dtype": "float32", "algo": "td3", "env": "Pendulum-v1", "save_index": index}


# -- the server (a separate process) -------------------------------------------------------

def _write_forever(run_dir: str, first_index: int, base: list[np.ndarray]) -> None:
    from jax_td3.run.checkpoint import save_checkpoint

    index = first_index
    while True:
        save_checkpoint(run_dir, index, contents_for(index, base), metadata_for(index), keep=KEEP)
        index += 1


def serve(run_dir: str) -> None:
    """Answer each stdin line ``DELAY FIRST_INDEX`` by forking a writer that starts at
    FIRST_INDEX, SIGKILLing it after DELAY seconds, and printing its wait status."""
    import jax_td3.run.checkpoint  # noqa: F401  (imported once, inherited by every forked writer)

    base = _base_leaves()
    print("ready", flush=True)
    for line in sys.stdin:
        delay, first_index = float(line.split()[0]), int(line.split()[1])
        pid = os.fork()
        if pid == 0:
            try:
                _write_forever(run_dir, first_index, base)
            finally:
                os._exit(3)  # a writer must never return into the server's loop
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)


# -- the test ------------------------------------------------------------------------------

def _temporary_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(".tmp")} if directory.is_dir() else set()


def _assert_is_save(checkpoint, base) -> int:
    """The loaded checkpoint is exactly save number ``save_index``; returns that index."""
    index = checkpoint.metadata["save_index"]
    assert checkpoint.metadata["step"] == index
    assert checkpoint.path.name == f"ckpt-{index:010d}.jtd3"
    expected = contents_for(index, base)
    loaded = checkpoint.contents
    assert loaded["config"] == expected["config"]
    assert loaded["trainer"]["counters"] == expected["trainer"]["counters"]
    assert loaded["trainer"]["rng"] == expected["trainer"]["rng"]
    assert loaded["trainer"]["episode_returns"] == expected["trainer"]["episode_returns"]
    assert loaded["trainer"]["buffer"] is None
    assert len(loaded["trainer"]["train_state"]) == len(STATE_SHAPES)
    for have, want in zip(loaded["trainer"]["train_state"], expected["trainer"]["train_state"]):
        assert have.dtype == want.dtype
        np.testing.assert_array_equal(have, want)
    return index


def test_sigkill_at_random_moments_always_leaves_a_loadable_newest_checkpoint(tmp_path):
    from jax_td3.run import checkpoint as ckpt

    base = _base_leaves()
    directory = ckpt.checkpoint_dir(tmp_path)
    ckpt.save_checkpoint(tmp_path, 0, contents_for(0, base), metadata_for(0), keep=KEEP)  # the run's first save
    server = subprocess.Popen([sys.executable, __file__, "serve", str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    delays = np.random.default_rng(7)
    newest, kills, inside_save, saves_seen, files_before = 0, 0, 0, 0, 1
    try:
        assert server.stdout.readline().strip() == "ready"
        while kills < MIN_KILLS or inside_save < MIN_KILLS_INSIDE_A_SAVE:
            assert kills < MAX_KILLS, f"only {inside_save} of {kills} kills landed inside a save"
            temporary_before = _temporary_files(directory)
            # a save takes ~20-40 ms here: delays up to ~5 saves land at every point of one
            server.stdin.write(f"{delays.uniform(0.0, 0.15):.4f} {newest + 1}\n")
            server.stdin.flush()
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            kills += 1

            left_temporary = bool(_temporary_files(directory) - temporary_before)
            named = ckpt.list_checkpoints(tmp_path)
            assert all(p.name.startswith("ckpt-") and p.suffix == ".jtd3" for p in named)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # any skipped (damaged) named file fails the test
                indices = [_assert_is_save(ckpt.load_checkpoint(path), base) for path in named]
                latest = ckpt.latest_valid_checkpoint(tmp_path)
            assert latest is not None and latest.path == named[-1]
            index = _assert_is_save(latest, base)
            assert index >= newest, "the newest checkpoint went back in time"
            # rotation drops the oldest, so the files are the newest saves without a gap; more
            # than KEEP only when a writer died between its rename and its rotation (each such
            # death adds one, until a writer completes a save and rotates)
            assert indices == list(range(index - len(indices) + 1, index + 1))
            assert len(named) <= (KEEP + 1 if index - newest >= 2 else max(files_before, KEEP) + 1)
            if left_temporary or (index > newest and len(named) > KEEP):  # died writing, or renamed unrotated
                inside_save += 1
            saves_seen += index - newest
            newest, files_before = index, len(named)
    finally:
        server.stdin.close()
        server.wait(timeout=30)

    assert server.returncode == 0
    assert inside_save >= MIN_KILLS_INSIDE_A_SAVE
    assert saves_seen >= kills // 2, f"writers completed only {saves_seen} saves in {kills} kills"
    listed = {p.name for p in ckpt.list_checkpoints(tmp_path)}
    assert not listed & _temporary_files(directory)  # what killed writers left is never listed


def test_a_torn_newest_file_at_any_byte_offset_is_skipped_for_the_previous_one(tmp_path):
    """What a non-atomic write or a torn disk write would leave: the newest file cut at a
    random byte offset. The previous checkpoint must be found, with a warning."""
    from jax_td3.run import checkpoint as ckpt

    base = _base_leaves()
    ckpt.save_checkpoint(tmp_path, 1, contents_for(1, base), metadata_for(1), keep=None)
    whole = ckpt.encode(contents_for(2, base), dict(metadata_for(2), step=2))
    torn_path = ckpt.checkpoint_dir(tmp_path) / ckpt.checkpoint_name(2)
    offsets = np.random.default_rng(11).integers(0, len(whole), size=20)
    for offset in [0, len(ckpt.MAGIC), len(whole) - 1, *offsets]:
        torn_path.write_bytes(whole[:offset])
        with pytest.warns(UserWarning, match="skipping checkpoint"):
            found = ckpt.latest_valid_checkpoint(tmp_path)
        assert _assert_is_save(found, base) == 1


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2])
