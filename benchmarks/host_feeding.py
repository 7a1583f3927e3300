"""Feeding the learner from CPU environments: one environment against `--num-envs 2 --vector-mode async`,
with and without `--overlap`, at the same number of updates per environment step (issue target: the
vector run with overlap at least 1.15x the one-environment loop's steps/s).

    python benchmarks/host_feeding.py [--rounds 2] [--steps 7000] [--out benchmarks/results/host_feeding.json]

Every variant is a whole `jax-td3 train` process on HalfCheetahBulletEnv-v0: TD3 400-300, batch 256,
1,000 uniformly random steps, then one update per transition in fused calls of 100
(`--updates-per-call 100`; with two environments `--updates-per-step 2`, two updates per vector step
of two transitions), one 1-episode evaluation at the end. The rounds alternate the variants; the table
gives each variant's best `steps_per_second` from its summary.json (the training loop's wall time,
compilation included: every process compiles, the on-disk compile cache is off) and the ratio to the
one-environment loop. Overlap needs no second device: the JAX backend acts with a NumPy copy of the
actor on the host while the device runs the block (until 2026-11-28 it acted with XLA, and these
variants ran with `XLA_FLAGS=--xla_force_host_platform_device_count=2` to give acting a device of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "1 env": [],
    "1 env, overlap": ["--overlap"],
    "2 envs async": ["--num-envs", "2", "--vector-mode", "async", "--updates-per-step", "2"],
    "2 envs async, overlap": ["--num-envs", "2", "--vector-mode", "async", "--updates-per-step", "2", "--overlap"],
}


def command(steps: int, extra: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "jax_td3.cli", "train", "--env", "HalfCheetahBulletEnv-v0", "--hidden", "400,300",
            "--batch-size", "256", "--learning-starts", "1000", "--total-steps", str(steps), "--eval-every",
            str(steps), "--eval-episodes", "1", "--checkpoint-every", "1000000", "--updates-per-call", "100",
            "--no-progress", *extra, "--out", str(out)]


def run(name: str, steps: int, workdir: Path, round_index: int) -> dict:
    extra = VARIANTS[name]
    out = workdir / f"{name.replace(' ', '_').replace(',', '')}-{round_index}"
    env = {**os.environ, "JAX_TD3_COMPILE_CACHE": "off"}  # each process compiles, as in the earlier figures
    cmd = command(steps, extra, out)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    process_s = time.perf_counter() - start
    if done.returncode != 0:
        return {"variant": name, "status": "failed", "reason": (done.stderr or done.stdout).strip()[-300:]}
    summary = json.loads((out / "summary.json").read_text())
    return {"variant": name, "round": round_index, "steps_per_second": summary["steps_per_second"],
            "updates": summary["updates"], "env_steps": summary["env_steps"], "process_s": round(process_s, 2),
            "command": " ".join(["jax-td3", *cmd[3:-2]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/host_feeding.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in args.variants:
                row = run(name, args.steps, Path(tmp), r)
                rows.append(row)
                print(json.dumps(row), flush=True)
    best = {}
    for row in rows:
        if row.get("status") != "failed":
            best[row["variant"]] = max(best.get(row["variant"], 0.0), row["steps_per_second"])
    base = best.get("1 env")
    print("\n| variant | best steps/s | vs 1 env |\n|---|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f}x |" if base else f"| {name} | {value:.1f} | |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
                                    "rounds": rows, "best_steps_per_second": best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
