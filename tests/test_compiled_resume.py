"""A compiled run stopped by SIGINT or killed by SIGKILL resumes exactly.

``jax-td3 train --compiled`` runs one compiled call per chunk and checkpoints at chunk ends. One run
is stopped with SIGINT (it must checkpoint at the next chunk end and exit 130), resumed, killed with
SIGKILL mid-run, and resumed again to the end; in float64 its metrics and summary must equal those
of the same run done in one go (the same compiled programs on the same inputs: bit for bit).
Each command runs in its own process, as a user runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jax_td3.run.logger import read_metrics

FLAGS = ["--compiled", "--dtype", "float64", "--total-steps", "40000", "--learning-starts", "400",
         "--eval-every", "4000", "--chunk-steps", "800", "--eval-episodes", "2", "--hidden", "8,8",
         "--batch-size", "16", "--num-envs", "2", "--updates-per-step", "0.5", "--no-progress"]


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jax_td3.cli", "train", *FLAGS, "--out", str(out), *extra]


def checkpoint_steps(out: Path) -> list[int]:
    directory = out / "checkpoints"
    return sorted(int(p.name[5:15]) for p in directory.glob("ckpt-*.jtd3")) if directory.is_dir() else []


def start_and_signal(args: list[str], out: Path, signum: int, after_step: int) -> subprocess.Popen:
    """Start ``args`` and send ``signum`` once a checkpoint past ``after_step`` exists."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(step > after_step for step in checkpoint_steps(out)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    os.kill(process.pid, signum)
    return process


def test_sigint_then_sigkill_then_resume_equals_one_uninterrupted_run(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "run"
    done = subprocess.run(command(reference), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr

    stopped = start_and_signal(command(out), out, signal.SIGINT, 0)
    stdout, stderr = stopped.communicate(timeout=300)
    assert stopped.returncode == 128 + signal.SIGINT, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["signal"] == signal.SIGINT
    assert summary["env_steps"] < 40_000 and checkpoint_steps(out)[-1] == summary["env_steps"]
    assert "interrupted at step" in stdout

    killed = start_and_signal(command(out, "--resume"), out, signal.SIGKILL, summary["env_steps"])
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL

    resumed = subprocess.run(command(out, "--resume"), capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr
    want = json.loads((reference / "summary.json").read_text())
    have = json.loads((out / "summary.json").read_text())
    assert have["resumed_from_step"] > summary["env_steps"]   # the SIGKILL came after a later checkpoint
    for key in ("final_eval_return", "eval_steps", "eval_return_curve", "env_steps", "updates"):
        assert have[key] == want[key], key
    assert want["updates"] == (20_000 - 200) // 2
    columns = ("step", "eval_return_mean", "eval_return_std", "critic_loss", "actor_loss", "updates")
    rows = lambda run: [tuple(row[c] for c in columns) for row in read_metrics(run / "metrics.csv")]
    assert rows(out) == rows(reference) and len(rows(out)) == 11
