"""Does each of SBX's TD3 differences matter for learning? Our TD3 with and without each setting.

Trains ``jax-td3 train --algo td3 --env Pendulum-v1 --total-steps 15000 --seed S --no-progress`` for
seeds 0-3 under each variant below, one run after another, and reports the final evaluation return
(the mean over the evaluation episodes at step 15000) and the mean of all evaluations of the run (every
1000 steps from step 0: the area under the learning curve, which also sees learning speed) per
variant: mean +- std over seeds (ddof 1) and Welch's t-test against Fujimoto's settings.
``critic_loss_scale`` alone is not trained: with Adam a constant loss scale changes the step only
through ``adam_eps`` (docs/cross-checking.md); it is part of the "all three" variant.

    python benchmarks/sbx_settings_learning.py [--out-dir DIR] [--seeds 0 1 2 3] [--steps 15000]
    python benchmarks/sbx_settings_learning.py --report DIR     # the table again, from DIR/runs

Writes ``DIR/sbx_settings_learning.json`` (every run's final return and wall time) after each run,
and prints the table. Runs go to ``DIR/runs/`` (default DIR: a temporary directory).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "fujimoto (defaults)": [],
    "target_update=every_update": ["--target-update", "every_update"],
    "actor_q=min": ["--actor-q", "min"],
    "all three (SBX's update)": ["--critic-loss-scale", "0.5", "--target-update", "every_update",
                                 "--actor-q", "min"],
}


def returns(run_dir: Path) -> dict:
    """The final evaluation return and the mean over all evaluations of one run, and its last step."""
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval_return_mean")]
    evals = [float(r["eval_return_mean"]) for r in rows]
    return {"final_return": evals[-1], "mean_return": sum(evals) / len(evals), "last_step": int(rows[-1]["step"])}


def final_return(run_dir: Path) -> float:
    return returns(run_dir)["final_return"]


def from_runs(out_dir: Path, steps: int) -> dict[str, list[dict]]:
    """Every finished run (evaluated at ``steps``) under ``out_dir/runs``, grouped by variant."""
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for name in VARIANTS:
        tag = name.split()[0].replace("=", "-")
        for run in sorted((out_dir / "runs").glob(f"*-{tag}-seed*")):
            if (run / "metrics.csv").exists():
                found = returns(run)
                if found["last_step"] >= steps:
                    results[name].append({"seed": int(run.name.rsplit("seed", 1)[1]), **found})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=15000)
    parser.add_argument("--report", type=Path, default=None, help="print the table of the runs under DIR/runs")
    args = parser.parse_args(argv)
    if args.report:
        print(table(from_runs(args.report, args.steps)))
        return 0
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="sbx-settings-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    exe = Path(sys.executable).with_name("jax-td3")
    for seed in args.seeds:               # seeds outer: an interrupted run still has every variant
        for name, flags in VARIANTS.items():
            run = out_dir / "runs" / f"{len(results[name])}-{name.split()[0].replace('=', '-')}-seed{seed}"
            start = time.time()
            subprocess.run([str(exe), "train", "--algo", "td3", "--env", "Pendulum-v1", "--total-steps",
                            str(args.steps), "--seed", str(seed), "--no-progress", "--out", str(run), *flags],
                           check=True, stdout=subprocess.DEVNULL)
            results[name].append({"seed": seed, **returns(run), "wall_s": round(time.time() - start, 1)})
            print(name, results[name][-1], flush=True)
            (out_dir / "sbx_settings_learning.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: dict[str, list[dict]]) -> str:
    import numpy as np
    from scipy import stats

    base = results["fujimoto (defaults)"]
    lines = ["| variant | seeds | final return | Welch p | mean of all evaluations | Welch p |",
             "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [name, str(len(runs))]
        for key in ("final_return", "mean_return"):
            x, b = [r[key] for r in runs], [r[key] for r in base]
            cells.append(f"{np.mean(x):.0f} ± {np.std(x, ddof=1):.0f}")
            cells.append("" if runs is base else f"{stats.ttest_ind(x, b, equal_var=False).pvalue:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
