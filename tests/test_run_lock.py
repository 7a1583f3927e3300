"""A run holds its directory: a second run on it is refused at once, naming the holder; a
SIGKILLed holder leaves nothing locked (the kernel drops its flock)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from jax_td3.cli import main
from jax_td3.errors import JaxTD3Error, RunDirectoryInUse
from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint
from jax_td3.run.directory import LOCK_FILE, hold, holds_run

RUN_FLAGS = ["--env", "Pendulum-v1", "--hidden", "8,8", "--batch-size", "8", "--learning-starts", "50",
             "--eval-every", "1000", "--eval-episodes", "1", "--seed", "0", "--no-progress"]

_HOLD_IN_CHILD = """
import sys, time
from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint
from jax_td3.run.directory import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder_process(out):
    """A child process holding ``out`` (until killed)."""
    child = subprocess.Popen([sys.executable, "-c", _HOLD_IN_CHILD, str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_hold_refuses_a_second_holder_and_releases_on_exit(tmp_path):
    out = tmp_path / "run"
    with hold(out):
        assert (out / LOCK_FILE).exists()
        assert not holds_run(out), "the lock file alone is not a run"
        with pytest.raises(RunDirectoryInUse, match=f"pid {os.getpid()}") as refused:
            with hold(out):  # a second open of the lock file: refused like another process
                pass
        assert isinstance(refused.value, JaxTD3Error) and "`out`" in str(refused.value)
        assert "\n" not in str(refused.value)
        (out / "config.json").write_text("{}")
    with hold(out):  # released on exit
        pass
    assert (out / "config.json").exists()


def test_hold_removes_a_directory_it_created_and_nothing_used(tmp_path):
    out = tmp_path / "unused"
    with hold(out):
        assert out.is_dir()
    assert not out.exists()


def test_hold_of_a_sigkilled_holder_is_released(tmp_path):
    out = tmp_path / "run"
    child = _holder_process(out)
    try:
        with pytest.raises(RunDirectoryInUse, match=f"pid {child.pid}: "):
            with hold(out):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with hold(out):
        pass


def test_second_run_on_a_running_directory_is_refused_and_a_killed_one_can_be_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "jax_td3.cli", "train", *RUN_FLAGS, "--total-steps", "200000",
                              "--checkpoint-every", "100", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints").is_dir() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before the test could use it"
        assert (out / "checkpoints").is_dir(), "the run wrote no checkpoint in time"
        capsys.readouterr()
        for flags in (["--resume"], []):  # a resume, and a new run on the same directory
            assert main(["train", *RUN_FLAGS, "--out", str(out), *flags]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1, err
            assert f"{out} is in use by another jax-td3 run (pid {child.pid}: jax-td3 train " in err[0]
            assert "--out" in err[0] and "`" not in err[0]
        assert child.poll() is None, "the refused runs disturbed the running one"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    done = load_checkpoint(list_checkpoints(out)[-1]).metadata["env_steps"]
    assert main(["train", *RUN_FLAGS, "--out", str(out), "--resume", "--total-steps", str(done + 100)]) == 0
    assert (out / "summary.json").exists()


def test_compiled_run_on_a_held_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    child = _holder_process(out)
    try:
        assert main(["train", "--compiled", "--total-steps", "300", "--learning-starts", "100", "--out", str(out),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by another jax-td3 run (pid {child.pid}: " in err[0], err
        assert not holds_run(out)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
