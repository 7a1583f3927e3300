"""Soak runs: long `jax-td3 train` runs whose memory must stay flat.

    flock LOCKFILE jax-td3 bench soak [--only compiled|gymnasium]

Two cases, each `jax-td3 train` in a subprocess (TD3, Pendulum-v1, hidden 64-64, batch
100, default buffer of 1,000,000 transitions, evaluation every 5,000 steps with 10
episodes, seed 0, float32, no progress bar):

- ``compiled``: 200,000 steps of ``train --compiled`` (the whole run one XLA program;
  its replay ring is allocated at min(buffer, total steps) = 200,000 slots);
- ``gymnasium``: 50,000 steps of the Gymnasium loop (``--backend jax``, one update per
  step, a checkpoint at every evaluation).

The parent reads ``/proc/PID/status`` (VmRSS, RssAnon, VmHWM) every 0.2 s and watches
metrics.csv, so every evaluation row gets the child's RSS at the moment it appeared.
The parent imports neither JAX nor PyTorch (the child alone holds the accelerator).

Memory bound. The baseline is the RSS at the first evaluation after updates began
(step ``eval_every`` here, past ``learning_starts`` = 1,000): by then the replay buffer
is allocated, every program (environment step, actor, update, evaluation) is compiled
and one checkpoint has been written. From there to the last evaluation the RSS may grow
by at most

    the replay rows written in between (their pages are committed as they are first
    written: numpy's zero-filled buffer is lazily backed by the OS)
    + 10% of the baseline + 64 MiB   (allocator arenas and caches settling: glibc malloc
      arenas, XLA's buffer pools, file-backed pages of libraries touched for the first time)

A leak of 1 KiB per step would add 195 MiB over the compiled run and 49 MiB over the
Gymnasium one; the first exceeds the bound, and both exceed the second check: the
least-squares slope of the RSS over the evaluation rows from the start row on must stay
below 256 KiB per 1,000 steps (single samples stray by a few MiB; one sample 16 MiB off,
even the last one of the Gymnasium run's nine, moves the slope by less than that). The
slope leaves out the last row: its sample is taken while the process is already writing
its final checkpoint and plotting the learning curve (importing matplotlib), which the
end-of-run figures include but which is not growth during training. The JSON records the
RSS at every evaluation.
Results: ``benchmarks/results/soak.json`` (``jax-td3 bench soak``) and ``soak.md`` (the write-up).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from jax_td3.bench.machine import machine_info
from jax_td3.errors import ConfigError

MiB = 1024 * 1024
POLL_SECONDS = 0.2
SLACK_FRACTION = 0.10
SLACK_BYTES = 64 * MiB
SLOPE_LIMIT_KIB_PER_1000_STEPS = 256  # 0.25 KiB per step; a 16 MiB one-off jump mid-run stays below it

COMMON_FLAGS = ["--algo", "td3", "--env", "Pendulum-v1", "--hidden", "64,64", "--batch-size", "100",
                "--eval-every", "5000", "--eval-episodes", "10", "--seed", "0", "--dtype", "float32",
                "--no-progress"]
PENDULUM_ROW_FLOATS = 3 + 1 + 3 + 1 + 1  # obs, action, next_obs, reward, not_done


@dataclasses.dataclass(frozen=True)
class SoakCase:
    name: str
    total_steps: int
    flags: tuple[str, ...]
    eval_every: int = 5_000
    buffer_size: int = 1_000_000   # the default
    itemsize: int = 4              # float32

    def argv(self, out_dir: Path) -> list[str]:
        return [sys.executable, "-m", "jax_td3.cli", "train", *COMMON_FLAGS, *self.flags,
                "--total-steps", str(self.total_steps), "--out", str(out_dir)]

    def replay_bytes_written(self, from_step: int, to_step: int) -> int:
        """Bytes of replay rows first written between two env steps (a ring never rewrites new pages)."""
        capacity = min(self.buffer_size, self.total_steps)  # the compiled ring; the host buffer is larger
        rows = max(0, min(to_step, capacity) - min(from_step, capacity))
        return rows * PENDULUM_ROW_FLOATS * self.itemsize


CASES = {
    "compiled": SoakCase("compiled", 200_000, ("--compiled",)),
    "gymnasium": SoakCase("gymnasium", 50_000, ("--backend", "jax")),
}


def _proc_status(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon, RssFile, VmHWM of a live process, in bytes (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields or None


def _metrics_steps(path: Path) -> list[tuple[int, dict]]:
    try:
        with open(path, newline="") as f:
            return [(int(row["step"]), row) for row in csv.DictReader(f) if row.get("step")]
    except (OSError, ValueError, KeyError):
        return []  # not written yet, or a row half-written at this instant


def _slope_per_1000_steps(points: list[tuple[int, int]]) -> float | None:
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return 1000 * sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def run_case(case: SoakCase, out_dir: Path, log_path: Path | None = None) -> dict:
    """Run one soak case to the end, sampling its memory; returns the measured figures and the verdict."""
    out_dir = Path(out_dir)
    log_path = log_path or out_dir.with_suffix(".log")
    argv = case.argv(out_dir)
    metrics_path = out_dir / "metrics.csv"
    rss_at_step: dict[int, dict] = {}
    samples: list[tuple[float, int]] = []
    last_status: dict[str, int] = {}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        while True:
            finished = child.poll() is not None
            status = None if finished else _proc_status(child.pid)
            if status:
                last_status = status
                samples.append((round(time.perf_counter() - start, 2), status["VmRSS"]))
                for step, _ in _metrics_steps(metrics_path):
                    rss_at_step.setdefault(step, dict(status, seconds=round(time.perf_counter() - start, 2)))
            if finished:
                break
            time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - start
    output_tail = log_path.read_text()[-2000:]
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    final_eval = summary.get("final_eval_return_mean", summary.get("final_eval_return"))

    steps = sorted(rss_at_step)
    baseline_step = case.eval_every
    result = {
        "case": case.name, "command": " ".join(argv[1:]), "returncode": child.returncode,
        "total_steps": case.total_steps, "wall_seconds": round(wall, 1),
        "final_eval_return": final_eval, "summary": summary,
        "evaluation_rows_seen": len(steps), "sample_count": len(samples),
        "peak_rss_process_lifetime_mib": round(last_status.get("VmHWM", 0) / MiB, 1),
        "output_tail": output_tail,
    }
    if baseline_step in rss_at_step and case.total_steps in rss_at_step:
        base = rss_at_step[baseline_step]["VmRSS"]
        end = rss_at_step[case.total_steps]["VmRSS"]
        base_time, end_time = rss_at_step[baseline_step]["seconds"], rss_at_step[case.total_steps]["seconds"]
        during = [rss for t, rss in samples if base_time <= t <= end_time]
        replay_bytes = case.replay_bytes_written(baseline_step, case.total_steps)
        limit = replay_bytes + SLACK_FRACTION * base + SLACK_BYTES
        training_rows = [(s, rss_at_step[s]["VmRSS"]) for s in steps if baseline_step <= s < case.total_steps]
        slope = _slope_per_1000_steps(training_rows)
        result.update({
            "rss_at_step0_mib": round(rss_at_step[0]["VmRSS"] / MiB, 1) if 0 in rss_at_step else None,
            "baseline_step": baseline_step,
            "start_rss_mib": round(base / MiB, 1),
            "end_rss_mib": round(end / MiB, 1),
            "peak_rss_during_training_mib": round(max(during) / MiB, 1),
            "growth_mib": round((end - base) / MiB, 2),
            "peak_growth_mib": round((max(during) - base) / MiB, 2),
            "start_rss_anon_mib": round(rss_at_step[baseline_step]["RssAnon"] / MiB, 1),
            "end_rss_anon_mib": round(rss_at_step[case.total_steps]["RssAnon"] / MiB, 1),
            "replay_bytes_written_after_start_mib": round(replay_bytes / MiB, 2),
            "growth_limit_mib": round(limit / MiB, 1),
            "rss_before_final_row_mib": round(training_rows[-1][1] / MiB, 1),
            "rss_slope_kib_per_1000_steps": None if slope is None else round(slope / 1024, 2),
            "rss_mib_at_each_evaluation": {s: round(rss_at_step[s]["VmRSS"] / MiB, 1) for s in steps},
            "slope_limit_kib_per_1000_steps": SLOPE_LIMIT_KIB_PER_1000_STEPS,
            "within_bound": (end - base <= limit and max(during) - base <= limit
                             and (slope is None or slope / 1024 <= SLOPE_LIMIT_KIB_PER_1000_STEPS)),
        })
    else:
        result["within_bound"] = False
    return result


def run_soak(names: Sequence[str] | None = None, announce: Callable[[str], None] | None = None) -> dict:
    """Run the cases ``names`` (default all) one after the other, in a scratch directory that is removed after.

    ``announce`` gets a line as each case starts and its figures (JSON) as it ends.
    """
    names = list(names or CASES)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise ConfigError(f"unknown soak case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    announce = announce or (lambda message: None)
    results: dict[str, Any] = {"machine_before": machine_info(frameworks=False), "cases": {}}
    with tempfile.TemporaryDirectory(prefix="jax-td3-soak-") as scratch:
        for name in names:
            announce(f"soak {name}: {CASES[name].total_steps:,} steps ...")
            result = run_case(CASES[name], Path(scratch) / name)
            results["cases"][name] = result
            announce(json.dumps({k: v for k, v in result.items()
                                 if k not in ("rss_mib_at_each_evaluation", "summary", "output_tail")}, indent=2))
    results["machine_after"] = machine_info(frameworks=False)
    results["passed"] = all(r["returncode"] == 0 and r["within_bound"] for r in results["cases"].values())
    return results
