"""End-to-end throughput: environment steps per second of ``jax-td3 train``, run in subprocesses.

Each run is a real training run (environment, exploration, replay, updates, one
evaluation at the end) in a fresh process, so the numbers include everything a
user waits for. Gymnasium and PyBullet are only imported by those subprocesses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

MANY_SEEDS = 16
DEFAULT_STEPS = 5_000   # environment steps per run; updates start after jax-td3 train's learning_starts (1,000)


def runs(steps: int, seed: int) -> list[dict]:
    """(label, extra flags) of every end-to-end run."""
    common = ["--total-steps", str(steps), "--seed", str(seed), "--eval-every", str(steps), "--eval-episodes", "1",
              "--no-progress"]
    out = []
    for env in ("Pendulum-v1", "HalfCheetahBulletEnv-v0"):
        for backend in ("jax", "torch"):
            out.append({"name": f"{env} {backend}", "env": env, "backend": backend, "seeds": 1,
                        "flags": ["--env", env, "--backend", backend, *common]})
    for seeds in (1, MANY_SEEDS):
        out.append({"name": f"Pendulum-v1 compiled x{seeds}", "env": "Pendulum-v1", "backend": "jax-compiled",
                    "seeds": seeds,
                    "flags": ["--env", "Pendulum-v1", "--compiled", "--num-seeds", str(seeds), *common]})
    return out


def run_one(spec: dict, out_dir: Path, timeout_s: float = 1800) -> dict:
    """One ``jax-td3 train`` subprocess; its summary.json gives the throughput."""
    row = {key: spec[key] for key in ("name", "env", "backend", "seeds")}
    if spec["backend"] == "torch" and importlib.util.find_spec("torch") is None:
        return {**row, "status": "skipped", "reason": "PyTorch is not installed: pip install 'jax-td3[torch]'"}
    command = [sys.executable, "-m", "jax_td3.cli", "train", *spec["flags"], "--out", str(out_dir)]
    row["command"] = " ".join(["jax-td3", "train", *spec["flags"]])
    try:
        # Every run compiles (the on-disk compile cache off), so the figures include compilation as before.
        env = {**os.environ, "JAX_TD3_COMPILE_CACHE": "off"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {**row, "status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
    summary_path = out_dir / "summary.json"
    if done.returncode != 0 or not summary_path.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {**row, "status": "failed", "reason": lines[-1][:300] if lines else f"exit {done.returncode}"}
    summary = json.loads(summary_path.read_text())
    if spec["backend"] == "jax-compiled":
        # Throughput over all seeds, compile excluded; compile reported beside it.
        return {**row, "status": "ok", "env_steps_per_s": summary["env_steps_per_second"],
                "compile_s": summary["compile_seconds"], "wall_s": summary["wall_seconds"],
                "env_steps": summary["env_steps"] * spec["seeds"], "updates": summary["updates"] * spec["seeds"]}
    # The Gymnasium loop's rate is over its whole wall time (JIT compilation included).
    return {**row, "status": "ok", "env_steps_per_s": summary["steps_per_second"], "compile_s": None,
            "wall_s": summary["wall_seconds"], "env_steps": summary["env_steps"], "updates": summary["updates"]}


def run_all(steps: int, seed: int, progress: bool = True,
            on_row: Callable[[list[dict]], None] | None = None) -> list[dict]:
    from tqdm import tqdm

    rows = []
    specs = runs(steps, seed)
    with tempfile.TemporaryDirectory(prefix="jax-td3-e2e-") as tmp:
        bar = tqdm(specs, desc="e2e", disable=not progress, dynamic_ncols=True)
        for i, spec in enumerate(bar):
            bar.set_postfix_str(spec["name"])
            rows.append(run_one(spec, Path(tmp) / f"run{i}"))
            if on_row is not None:
                on_row(rows)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["## End to end (jax-td3 train)", "",
             "Gymnasium-loop rates are over the whole run (JIT compilation and the random warm-up steps "
             "included); compiled-loop rates count all seeds and exclude compilation (shown beside).", "",
             "| run | env steps/s | compile s | wall s | env steps | updates |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']}: {row['reason']} | | | | |")
            continue
        compile_s = "" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        lines.append(f"| {row['name']} | {row['env_steps_per_s']:.0f} | {compile_s} | {row['wall_s']:.1f} | "
                     f"{row['env_steps']:,} | {row['updates']:,} |")
    lines.append("")
    return "\n".join(lines)
