"""W1 end to end against SBX: the whole process of one Pendulum-v1 TD3 run, ours and SBX's, timed alternately.

W1 is TD3 on Pendulum-v1 with 256-256 networks, batch 256, 12,000 environment steps of which the first
2,000 are uniformly random (learning starts after 2,000 transitions), so exactly 10,000 updates, one per
step from step 2,001 (ours: ``--updates-per-call 100``, the same updates in calls of 100). Each side runs
as a fresh process, and its wall time is everything: interpreter start, imports, JAX start-up,
compilation, the environment, training, evaluation, writing outputs and exit.

- ours: ``jax-td3 train --env Pendulum-v1 --algo td3 --hidden 256,256 --batch-size 256 --total-steps
  12000 --learning-starts 2000 --updates-per-call 100 --no-progress --out DIR`` with the default
  evaluation (10 noiseless episodes at step 0 and every 1,000 steps: 13 evaluations) and every output a
  run writes (metrics.csv, episodes.csv, TensorBoard events, checkpoints at every evaluation with the
  replay buffer, summary.json, learning_curve.png). ``--no-progress`` because SBX shows none by default.
- SBX: ``sbx.TD3("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=2000,
  batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, policy_delay=2,
  target_policy_noise=0.2, target_noise_clip=0.5, action_noise=NormalActionNoise(0, 0.1),
  policy_kwargs={"net_arch": [256, 256]}, seed=0, device="cpu")``: our TD3 defaults where SBX has
  the setting (Gaussian exploration 0.1 of the action scale: SBX acts in [-1, 1]). The same evaluation:
  ``evaluate_policy`` (10 deterministic episodes) before ``learn`` and an ``EvalCallback`` every 1,000
  steps, 10 episodes each (13 evaluations, 26,000 evaluation steps, as ours). SBX writes nothing.

Rounds alternate (ours, SBX, ours, SBX, ...), ``--rounds`` of each; the result is the best (minimum)
of each side and their ratio, SBX / ours (above 1: ours is faster). The background trainings of this
machine are not paused by this script: pause them around it (benchmarks/README.md, W1).

    python benchmarks/w1_sbx.py [--rounds 3] [--cache cold|warm|defaults] [--out FILE]

``--cache``: whether compiled programs are kept on disk between processes (``jax-td3 train`` keeps them
by default: ``jax_td3/compile_cache.py``; SBX does not unless told through JAX's own settings). ``cold``
(the default, and the figures before that cache existed): every process of both sides compiles. ``warm``:
both sides keep them, with the same JAX settings, filled by one untimed run of each first. ``defaults``:
each side as it comes, ours warm and SBX cold.

Writes the JSON (every round's time, the commands, the machine and the date) after every round. Each
round also records the child's CPU time and the CPU time the rest of the machine used while it ran
(``other_cpu_seconds``): a round with much of it was slowed down by other work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, LEARNING_STARTS, EVAL_EVERY, EVAL_EPISODES = 12_000, 2_000, 1_000, 10

OURS_FLAGS = ["--env", "Pendulum-v1", "--algo", "td3", "--hidden", "256,256", "--batch-size", "256",
              "--total-steps", str(STEPS), "--learning-starts", str(LEARNING_STARTS), "--updates-per-call", "100",
              "--no-progress"]

# SBX's run, as a user would write it; prints one JSON line (updates done, final evaluation).
SBX_PROGRAM = f"""
import json
import gymnasium as gym
import numpy as np
from sbx import TD3
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise

env = gym.make("Pendulum-v1")
eval_env = Monitor(gym.make("Pendulum-v1"))
n = env.action_space.shape[0]
model = TD3("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts={LEARNING_STARTS},
            batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, policy_delay=2,
            target_policy_noise=0.2, target_noise_clip=0.5,
            action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
            policy_kwargs=dict(net_arch=[256, 256]), seed=0, device="cpu", verbose=0)
first = evaluate_policy(model, eval_env, n_eval_episodes={EVAL_EPISODES}, deterministic=True)   # step 0, as ours
callback = EvalCallback(eval_env, eval_freq={EVAL_EVERY}, n_eval_episodes={EVAL_EPISODES}, deterministic=True,
                        verbose=0)
model.learn(total_timesteps={STEPS}, callback=callback)
print(json.dumps({{"updates": int(model._n_updates), "evaluations": 1 + callback.n_calls // callback.eval_freq,
                  "final_eval_return": float(callback.last_mean_reward)}}))
"""


def jax_td3_exe() -> str:
    exe = Path(sys.executable).with_name("jax-td3")
    return str(exe) if exe.exists() else "jax-td3"


CACHE_MODES = {
    # mode: (ours cached, SBX cached)
    "cold": (False, False),
    "warm": (True, True),
    "defaults": (True, False),
}


def cache_env(side: str, cached: bool, work: Path) -> dict:
    """The child's environment: compiled programs kept on disk in ``work`` (same JAX settings for both
    sides: every program cached, whatever its compile time), or not at all."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_TD3_COMPILE_CACHE")}
    if side == "ours":
        env["JAX_TD3_COMPILE_CACHE"] = str(work / "xla-ours") if cached else "off"
    elif cached:
        env.update(JAX_COMPILATION_CACHE_DIR=str(work / "xla-sbx"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def run_ours(work: Path, index: int, env: dict) -> dict:
    out = work / f"ours-{index}"
    command = [jax_td3_exe(), "train", *OURS_FLAGS, "--out", str(out)]
    with Timed() as timed:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=env)
    summary = json.loads((out / "summary.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {**timed.result, "updates": summary["updates"],
            "final_eval_return": summary["final_eval_return"], "run_wall_seconds": summary["wall_seconds"]}


def run_sbx(work: Path, index: int, env: dict) -> dict:
    command = [sys.executable, "-c", SBX_PROGRAM]
    with Timed() as timed:
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=work, env=env)
    return {**timed.result, **json.loads(done.stdout.strip().splitlines()[-1])}


def _busy_cpu_seconds() -> float:
    """CPU seconds all processors spent on anything but idle and I/O wait since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Timed:
    """Wall time of a child process, its CPU time (user + system, its waited-for children included),
    and the CPU time the rest of the machine used meanwhile (``other_cpu_seconds``: other jobs
    competing for the cores; near 0 on a quiet machine)."""

    def __enter__(self):
        self._usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._busy = _busy_cpu_seconds() if Path("/proc/stat").exists() else None
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self._start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (usage.ru_utime - self._usage.ru_utime) + (usage.ru_stime - self._usage.ru_stime)
        self.result = {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3)}
        if self._busy is not None:
            self.result["other_cpu_seconds"] = round(max(0.0, _busy_cpu_seconds() - self._busy - cpu), 2)
        return False


def machine() -> dict:
    """What the times were measured on (no JAX or PyTorch imported here: the parent stays light)."""
    from jax_td3.bench.machine import cpu_model, load_average

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_average_at_start": load_average(),
            "versions": {n: version(n) for n in ("jax", "jaxlib", "flax", "optax", "numpy", "gymnasium",
                                                 "sbx-rl", "stable-baselines3", "torch", "tensorboardX",
                                                 "matplotlib", "jax-td3")}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side, alternating (default 3)")
    parser.add_argument("--cache", choices=list(CACHE_MODES), default="cold",
                        help="compiled programs on disk: cold (no side keeps any: every process compiles; the "
                             "default), warm (both sides keep them, filled by one untimed run each first), "
                             "defaults (each side as installed: ours keeps them, SBX does not)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/w1_sbx.json (cold) or w1_sbx-MODE.json")
    args = parser.parse_args(argv)
    if args.out is None:
        name = "w1_sbx.json" if args.cache == "cold" else f"w1_sbx-{args.cache}.json"
        args.out = ROOT / "benchmarks" / "results" / name
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    from jax_td3.bench.machine import load_average

    result = {
        "workload": "W1: TD3 on Pendulum-v1, 256-256, batch 256, 12,000 env steps, learning_starts 2,000 "
                    "(10,000 updates), 13 evaluations of 10 episodes; whole process",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commands": {"ours": " ".join(["jax-td3", "train", *OURS_FLAGS, "--out", "DIR"]),
                     "sbx": f"{Path(sys.executable).name} -c SBX_PROGRAM (benchmarks/w1_sbx.py)"},
        "sbx_program": SBX_PROGRAM,
        "cache": args.cache,
        "machine": machine(),
        "rounds": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="w1-sbx-") as tmp:
        work = Path(tmp)
        cached = dict(zip(("ours", "sbx"), CACHE_MODES[args.cache]))
        envs = {side: cache_env(side, cached[side], work) for side in cached}
        for side, runner in (("ours", run_ours), ("sbx", run_sbx)):
            if cached[side]:  # fill the cache, untimed
                runner(work, -1, envs[side])
                print(f"{side}: compiled programs cached", flush=True)
        for index in range(args.rounds):
            for side, runner in (("ours", run_ours), ("sbx", run_sbx)):
                load = load_average()
                measured = runner(work, index, envs[side])
                result["rounds"].append({"round": index, "side": side, "load_average_before": load, **measured})
                print(f"round {index} {side:4s} {measured['seconds']:7.2f} s  {measured}", flush=True)
                summarize(result)
                args.out.write_text(json.dumps(result, indent=1) + "\n")
    best = result["best"]
    print(f"best of {args.rounds}: ours {best['ours_seconds']:.2f} s, SBX {best['sbx_seconds']:.2f} s, "
          f"SBX / ours = {best['ratio_sbx_over_ours']:.2f}x")
    return 0


def summarize(result: dict) -> None:
    times = {side: [r["seconds"] for r in result["rounds"] if r["side"] == side] for side in ("ours", "sbx")}
    best = {f"{side}_seconds": min(t) for side, t in times.items() if t}
    cpu = {side: [r["cpu_seconds"] for r in result["rounds"] if r["side"] == side] for side in ("ours", "sbx")}
    best.update({f"{side}_cpu_seconds": min(t) for side, t in cpu.items() if t})
    if "ours_seconds" in best and "sbx_seconds" in best:
        best["ratio_sbx_over_ours"] = round(best["sbx_seconds"] / best["ours_seconds"], 3)
    result["best"] = best


if __name__ == "__main__":
    sys.exit(main())
