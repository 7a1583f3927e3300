"""Collect long learning runs into benchmarks/results/learning/: per run its metrics, summary, curve and
final agent, a re-evaluation of that agent in a fresh process state, one table and one figure with the
published RL Baselines3 Zoo results as reference lines.

    python benchmarks/learning.py runs/zoo/HalfCheetahBulletEnv-v0-td3-jax-seed0 [RUN ...] \
        [--out benchmarks/results/learning] [--episodes 10] [--zoo-episodes 150]

Each RUN is a run directory of `jax-td3 train` (finished or not: an unfinished run is reported at its
newest checkpoint, marked as such). Into OUT/<run name>/ go metrics.csv, summary.json (when the run wrote
one), learning_curve.png, agent.pt (`jax-td3 export --to torch` of the newest checkpoint: networks only,
no replay buffer or optimizer state), best.pt likewise from the run's best agent (best.jtd3, where the
run kept one) and reevaluation.json (`jax-td3 eval agent.pt --episodes N` as run here, and best.pt's).
Then OUT/table.md gets the table and OUT/learning.png the figure, over every run in OUT.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

# Final deterministic evaluation of one agent per environment at 1M steps, from the RL Baselines3 Zoo's
# benchmark table (benchmark.md; mean and std over about 150 evaluation episodes).
ZOO = {
    ("td3", "HalfCheetahBulletEnv-v0"): (2821.6, 19.7),
    ("td3", "AntBulletEnv-v0"): (3300.0, 54.6),
    ("td3", "HopperBulletEnv-v0"): (2681.6, 27.8),
    ("td3", "Walker2DBulletEnv-v0"): (2213.7, 230.6),
    ("ddpg", "HalfCheetahBulletEnv-v0"): (2078.3, 208.4),
}
# Stable-Baselines3's documentation, TD3 over 3 seeds at 1M steps.
SB3_DOCS = {
    "HalfCheetahBulletEnv-v0": (2774, 35),
    "AntBulletEnv-v0": (3305, 43),
    "HopperBulletEnv-v0": (2429, 126),
    "Walker2DBulletEnv-v0": (2063, 185),
}
# The Zoo's DDPG is Stable-Baselines3's: TD3 with one critic, no target smoothing, no actor delay,
# which is our `ourddpg`.
ZOO_ALGO = {"td3": "td3", "ourddpg": "ddpg"}


def collect(run_dir: Path, out: Path, episodes: int, zoo_episodes: int = 0) -> dict:
    from jax_td3.evaluate import evaluate_checkpoint
    from jax_td3.export import export_checkpoint

    target = out / run_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.csv", "summary.json", "learning_curve.png", "config.json"):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, target / name)
    blob, checkpoint = export_checkpoint(run_dir, target / "agent.pt")
    result = evaluate_checkpoint(target / "agent.pt", episodes=episodes)
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    record = {
        "run": run_dir.name, "algo": config["algo"], "env": config["settings"]["env"],
        "backend": config["settings"]["backend"], "seed": config["settings"]["seed"],
        "preset": config.get("preset"), "checkpoint_step": checkpoint.metadata.get("step"),
        "total_steps": config["settings"]["total_steps"],
        "finished": summary.get("env_steps") == config["settings"]["total_steps"],
        "reported_final_eval_return": summary.get("final_eval_return"),
        "reevaluation": {k: result[k] for k in ("episodes", "seed", "eval_return_mean", "eval_return_std",
                                                 "returns")},
        "command": f"jax-td3 eval {target.name}/agent.pt --episodes {episodes}",
    }
    if zoo_episodes:
        # The Zoo's table scores each agent over about 150 episodes; 10 can hinge on one fall.
        long = evaluate_checkpoint(target / "agent.pt", episodes=zoo_episodes)
        record["zoo_protocol"] = {k: long[k] for k in ("episodes", "eval_return_mean", "eval_return_std", "returns")}
        record["zoo_protocol"]["command"] = f"jax-td3 eval {target.name}/agent.pt --episodes {zoo_episodes}"
    else:
        previous = target / "reevaluation.json"   # keep a long evaluation made earlier of the same agent
        if previous.exists():
            earlier = json.loads(previous.read_text())
            if "zoo_protocol" in earlier and earlier.get("checkpoint_step") == record["checkpoint_step"]:
                record["zoo_protocol"] = earlier["zoo_protocol"]
    best_file = run_dir / "best.jtd3"
    if best_file.exists():
        from jax_td3.run.checkpoint import read_metadata

        export_checkpoint(best_file, target / "best.pt")
        best = evaluate_checkpoint(target / "best.pt", episodes=episodes)
        metadata = read_metadata(best_file)
        record["best"] = {"step": metadata["step"], "reported_eval_return": metadata["eval_return_mean"],
                          "reevaluation": {k: best[k] for k in ("eval_return_mean", "eval_return_std", "returns")},
                          "command": f"jax-td3 eval {target.name}/best.pt --episodes {episodes}"}
    (target / "reevaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def long_cell(record: dict, zoo) -> str:
    """The final agent over as many episodes as the Zoo's table used (``--zoo-episodes``), where measured."""
    long = record.get("zoo_protocol")
    if long is None:
        return "-"
    mean = long["eval_return_mean"]
    ratio = f", {mean / zoo[0]:.0%}" if zoo else ""
    return f"{mean:.1f} +- {long['eval_return_std']:.1f} ({long['episodes']} episodes{ratio})"


def best_cell(record: dict, zoo) -> str:
    """The run's best agent re-evaluated, where the run kept one (runs from before best.jtd3 did not)."""
    best = record.get("best")
    if best is None:
        return "-"
    mean = best["reevaluation"]["eval_return_mean"]
    ratio = f", {mean / zoo[0]:.0%}" if zoo else ""
    return f"{mean:.1f} +- {best['reevaluation']['eval_return_std']:.1f} ({best['step']:,}{ratio})"


def table(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/reevaluation.json"))]
    lines = ["| environment | algo | backend | seed | steps | final evaluation (10 episodes) | Zoo | ours / Zoo "
             "| final agent, Zoo protocol | best evaluation (step) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        evaluation = r["reevaluation"]
        zoo = ZOO.get((ZOO_ALGO.get(r["algo"], r["algo"]), r["env"]))
        ratio = f"{evaluation['eval_return_mean'] / zoo[0]:.0%}" if zoo else "-"
        steps = f"{r['checkpoint_step']:,}" + ("" if r["finished"] else f" of {r['total_steps']:,} (running)")
        lines.append(f"| {r['env']} | {r['algo']} | {r['backend']} | {r['seed']} | {steps} | "
                     f"{evaluation['eval_return_mean']:.1f} +- {evaluation['eval_return_std']:.1f} | "
                     f"{f'{zoo[0]:.1f} +- {zoo[1]:.1f}' if zoo else '-'} | {ratio} | {long_cell(r, zoo)} | "
                     f"{best_cell(r, zoo)} |")
    return "\n".join(lines) + "\n"


def figure(out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jax_td3.run.logger import read_metrics

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*/reevaluation.json"))]
    envs = sorted({r["env"] for r in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(4.5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for r in (r for r in runs if r["env"] == env):
            rows = read_metrics(out / r["run"] / "metrics.csv", required=("step", "eval_return_mean"))
            ax.plot([row["step"] for row in rows], [row["eval_return_mean"] for row in rows],
                    label=f"{r['algo']} {r['backend']} seed {r['seed']}")
        for (algo, zoo_env), (mean, _) in ZOO.items():
            if zoo_env == env:
                ax.axhline(mean, color="0.3", linestyle="--" if algo == "td3" else ":", linewidth=1.1,
                           label=f"Zoo {algo.upper()} ({mean:g})")
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("evaluation return (10 episodes)")
    fig.tight_layout()
    path = out / "learning.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories to collect (none: redraw only)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--zoo-episodes", type=int, default=0,
                        help="also evaluate each final agent over this many episodes, as the Zoo's table did "
                             "(about 150); 0: keep an earlier such evaluation of the same agent, if any")
    args = parser.parse_args()
    for run_dir in args.runs:
        record = collect(run_dir, args.out, args.episodes, args.zoo_episodes)
        print(f"{record['run']}: step {record['checkpoint_step']:,}, re-evaluated "
              f"{record['reevaluation']['eval_return_mean']:.1f} (reported {record['reported_final_eval_return']})")
    text = table(args.out)
    (args.out / "table.md").write_text(text)
    print(text)
    print(f"figure: {figure(args.out)}")


if __name__ == "__main__":
    main()
