"""Results on disk: one JSON per run (every benchmark), the update suite's Markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADLINE: dict[str, Any] = {"hidden": [256, 256], "batch": 256}
FASTTD3_HEADLINE: dict[str, Any] = {"hidden": [1024, 512, 256]}   # at the largest batch measured


def write_json(results: dict, path: Path) -> Path:
    """Written to a temporary name and renamed, so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)
    return path


def _hidden(row: dict) -> str:
    return "-".join(str(h) for h in row["hidden"])


def _find(rows: list[dict], algo: str, impl: str, hidden: list[int], batch: int) -> dict | None:
    for row in rows:
        if (row["algo"], row["impl"], row["hidden"], row["batch"]) == (algo, impl, hidden, batch) \
                and row["status"] == "ok":
            return row
    return None


def headline_ratios(results: dict) -> list[str]:
    """JAX scan-fused against each PyTorch path at 256-256 / batch 256, per algorithm."""
    lines = []
    rows = results["rows"]
    for algo in results["settings"]["algos"]:
        scan = _find(rows, algo, "jax_scan", HEADLINE["hidden"], HEADLINE["batch"])
        if scan is None:
            continue
        parts = []
        for other in ("torch_ref", "torch_tuned", "torch_compile", "torch_cudagraph", "jax_jit"):
            row = _find(rows, algo, other, HEADLINE["hidden"], HEADLINE["batch"])
            if row is not None:
                parts.append(f"{scan['updates_per_s'] / row['updates_per_s']:.2f}x {other}")
        floor = f"{100 * scan['floor_fraction']:.0f}% of the compute floor"
        lines.append(f"- {algo}, 256-256 / batch 256: jax_scan {scan['updates_per_s']:.0f} updates/s "
                     f"({floor}); " + ", ".join(parts))
    if "fasttd3" in results["settings"]["algos"]:
        lines += _fasttd3_headline(rows)
    return lines


def _fasttd3_headline(rows: list[dict]) -> list[str]:
    """JAX (jit, else scan) against the fast PyTorch paths at FastTD3's sizes and the largest batch measured."""
    hidden = FASTTD3_HEADLINE["hidden"]
    batches = [r["batch"] for r in rows if r["algo"] == "fasttd3" and r["hidden"] == hidden and r["status"] == "ok"]
    if not batches:
        return []
    batch = max(batches)
    jax_row = next((row for impl in ("jax_jit", "jax_scan")
                    if (row := _find(rows, "fasttd3", impl, hidden, batch)) is not None), None)
    if jax_row is None:
        return []
    parts = []
    for other in ("torch_tuned", "torch_compile", "torch_cudagraph"):
        row = _find(rows, "fasttd3", other, hidden, batch)
        if row is not None:
            parts.append(f"{jax_row['updates_per_s'] / row['updates_per_s']:.2f}x {other}")
    return [f"- fasttd3, 1024-512-256 / batch {batch}: {jax_row['impl']} {_rate(jax_row['updates_per_s'])} updates/s "
            f"({100 * jax_row['floor_fraction']:.0f}% of the compute floor); " + ", ".join(parts)]


def _rate(updates_per_s: float) -> str:
    """Whole updates/s, or three significant digits below 100 (FastTD3's big cells run below 1 on a CPU)."""
    return f"{updates_per_s:.0f}" if updates_per_s >= 100 else f"{updates_per_s:.3g}"


def markdown(results: dict) -> str:
    machine = results["machine"]
    settings = results["settings"]
    out = [f"# jax-td3 bench: {results['run_name']}", "",
           f"{machine['cpu_model']} ({machine['cpu_count']} cores, torch threads {machine['torch_threads']}), "
           f"JAX backend {machine['jax_backend']}, torch device {machine['torch_device']}"
           + (f", GPU {machine['gpu']['name']}" if machine.get("gpu") else "") + ".",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v) + ".",
           f"Load average before/after: {results['loadavg_before']} / {results['loadavg_after']}. "
           f"float32; obs_dim {settings['obs_dim']}, act_dim {settings['act_dim']}"
           + (f" (fasttd3: obs_dim {settings.get('fasttd3_obs_dim')}, act_dim {settings.get('fasttd3_act_dim')}, "
              f"101 atoms, hidden = the critic's sizes, the actor's half of each)"
              if "fasttd3" in settings["algos"] else "") + "; "
           f"{settings['repetitions']} repetitions of >= {settings['min_rep_s']} s each; "
           f"jax_scan K <= {settings['scan_updates']} updates per call, jax_vmap N <= {settings['vmap_agents']} "
           f"agents (fewer in big cells: about one second per call; column 'per call').", ""]
    if not results["rows"]:  # an end-to-end-only run
        return "\n".join(out)
    ratios = headline_ratios(results)
    if ratios:
        out += ["Headline (jax_scan vs the others, higher is faster for jax_scan):", "", *ratios, ""]
    out += ["ms/update is the median over repetitions with [min, max]; for jax_vmap it is per agent-update. "
            "floor = the update's matmuls at this machine's best measured speed for each shape "
            "(benchmarks/README.md); for fasttd3 plus its counted element-wise FLOPs at the same rate.", "",
            "| algo | hidden | batch | implementation | per call | ms/update [min, max] | updates/s | compile s "
            "| GFLOP/s | % of floor |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        head = f"| {row['algo']} | {_hidden(row)} | {row['batch']} | {row['impl']} |"
        if row["status"] != "ok":
            out.append(f"{head} | {row['status']}: {row['reason']} | | | | |")
            continue
        t = row["per_update_s"]
        out.append(f"{head} {row['updates_per_call']} | "
                   f"{1e3 * t['median']:.3f} [{1e3 * t['min']:.3f}, {1e3 * t['max']:.3f}] | "
                   f"{_rate(row['updates_per_s'])} | {row['compile_s']:.2f} | "
                   f"{row['achieved_flops_per_s'] / 1e9:.1f} | {100 * row['floor_fraction']:.1f} |")
    out.append("")
    return "\n".join(out)


def plot(results: dict, stem: Path) -> list[Path]:
    """Two PNGs: updates/s vs batch size, and fraction of the compute floor vs batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["status"] == "ok"]
    algos = results["settings"]["algos"]
    hiddens = [list(h) for h in results["settings"]["hidden"]]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    paths = []
    for key, label, suffix, log in (("updates_per_s", "updates / s", "updates", True),
                                    ("floor_fraction", "fraction of compute floor", "floor", False)):
        fig, axes = plt.subplots(len(algos), len(hiddens), figsize=(4 * len(hiddens), 3.4 * len(algos)),
                                 squeeze=False, sharex=True)
        for i, algo in enumerate(algos):
            for j, hidden in enumerate(hiddens):
                ax = axes[i][j]
                for impl in impls:
                    points = sorted((r["batch"], r[key]) for r in rows
                                    if r["algo"] == algo and r["impl"] == impl and r["hidden"] == hidden)
                    if points:
                        ax.plot(*zip(*points), marker="o", label=impl)
                ax.set_xscale("log")
                batches = sorted({r["batch"] for r in rows})
                ax.set_xticks(batches, [str(b) for b in batches])
                ax.minorticks_off()
                if log:
                    ax.set_yscale("log")
                ax.set_title(f"{algo} {'-'.join(map(str, hidden))}", fontsize=9)
                ax.set_xlabel("batch size")
                ax.set_ylabel(label)
                ax.grid(alpha=0.3)
        if axes[0][0].get_legend_handles_labels()[0]:   # a legend only where a line was drawn
            axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{results['run_name']}: {label}", fontsize=10)
        fig.tight_layout()
        path = stem.parent / f"{stem.name}-{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
