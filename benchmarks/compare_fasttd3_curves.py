"""Our compiled FastTD3 run's evaluation curve beside FastTD3's published MuJoCo Playground curves.

FastTD3 (commit 229ed59) publishes data/playground_result.json: per task, per method ("FastTD3", "PPO"),
arrays "time" (seconds of training), "env_step" and "return" (with "return_min", "return_max"). Ours:
the run's metrics.csv (a row per evaluation: "step" in transitions over all environments, "wall_time"
in seconds after compilation, "eval_return_mean"). For each of their points the table gives their return
and ours at the last evaluation at or before the same wall-clock time and the same environment step.
Prints a Markdown table; with --out also writes it as JSON.

    python benchmarks/compare_fasttd3_curves.py RUN/metrics.csv playground_result.json T1JoystickFlatTerrain
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def load_ours(metrics_csv: Path) -> list[tuple[float, float, float]]:
    """(wall seconds, transitions, mean evaluation return) per evaluation, in order."""
    with open(metrics_csv, newline="") as f:
        return [(float(r["wall_time"]), float(r["step"]), float(r["eval_return_mean"])) for r in csv.DictReader(f)
                if r.get("eval_return_mean") not in (None, "")]


def last_at_or_before(points: list[tuple[float, float]], x: float) -> float | None:
    """The value of the last (x, value) point with x at or before ``x``; None if there is none."""
    values = [value for at, value in points if at <= x]
    return values[-1] if values else None


def compare(ours: list[tuple[float, float, float]], theirs: dict) -> list[dict]:
    by_time = [(t, r) for t, _, r in ours]
    by_step = [(s, r) for _, s, r in ours]
    return [{"time": t, "env_step": s, "their_return": r, "our_return_at_time": last_at_or_before(by_time, t),
             "our_return_at_env_step": last_at_or_before(by_step, s)}
            for t, s, r in zip(theirs["time"], theirs["env_step"], theirs["return"], strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_csv", type=Path)
    parser.add_argument("result_json", type=Path, help="FastTD3's data/playground_result.json")
    parser.add_argument("task", help="a task of the JSON, e.g. T1JoystickFlatTerrain")
    parser.add_argument("--method", default="FastTD3")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    published = json.loads(args.result_json.read_text())
    if args.task not in published:
        raise SystemExit(f"{args.task} is not in {args.result_json} (it has {', '.join(published)})")
    rows = compare(load_ours(args.metrics_csv), published[args.task][args.method])

    def cell(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"{args.task}: ours ({args.metrics_csv}) against {args.method} ({args.result_json.name})\n")
    print("| time (s) | env steps | theirs | ours at that time | ours at those env steps |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['time']:.0f} | {row['env_step']:,.0f} | {row['their_return']:.2f} | "
              f"{cell(row['our_return_at_time'])} | {cell(row['our_return_at_env_step'])} |")
    if args.out:
        args.out.write_text(json.dumps({"task": args.task, "method": args.method, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
