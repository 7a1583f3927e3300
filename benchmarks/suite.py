"""``jax-td3 bench`` / ``python -m benchmarks``: options, the grid loop, and writing the results."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALGOS = ("td3", "ourddpg")           # OurDDPG is the DDPG the suite times (TD3's networks, one critic)
FULL_HIDDEN = ((64, 64), (256, 256), (400, 300), (1024, 1024))
FULL_BATCH = (100, 256, 1024, 4096)
DEFAULT_HIDDEN = ((256, 256),)    # the default and --quick grids
DEFAULT_BATCH = (100, 256)
# HalfCheetahBulletEnv-v0's observation and action sizes.
OBS_DIM, ACT_DIM = 26, 6
CALL_BUDGET_S = 1.0


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.replace("-", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hidden sizes like 256-256, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected hidden sizes like 256-256, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jax_td3.cli.args import positive_int
    from benchmarks.implementations import IMPLEMENTATIONS

    grid = parser.add_argument_group("grid (default: td3 and ourddpg, 256-256 x batch 100, 256, 5 repetitions)")
    size = grid.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="td3 only, 256-256 x batch 100, 256, 3 short repetitions (about 2 min on 2 CPU cores)")
    size.add_argument("--full", action="store_true",
                      help="hidden 64-64, 256-256, 400-300, 1024-1024 x batch 100, 256, 1024, 4096 (long on a CPU)")
    grid.add_argument("--algos", nargs="+", choices=ALGOS,
                      help="algorithms (ourddpg is the DDPG variant timed; default both, --quick td3)")
    grid.add_argument("--hidden", nargs="+", type=_hidden, help="hidden sizes to time, e.g. 256-256 400-300")
    grid.add_argument("--batch", nargs="+", type=positive_int, help="batch sizes to time, e.g. 100 256")
    grid.add_argument("--impls", nargs="+", choices=list(IMPLEMENTATIONS), default=list(IMPLEMENTATIONS),
                      help="implementations to time (default all; unavailable ones are recorded with the reason)")

    timing = parser.add_argument_group("timing")
    timing.add_argument("--repetitions", type=positive_int, help="timed repetitions per cell (default 5, quick 3)")
    timing.add_argument("--min-rep-time", type=float, help="seconds each repetition lasts at least "
                        "(default 0.3, quick 0.1)")
    timing.add_argument("--scan-updates", type=positive_int, default=100, help="K of jax_scan (default 100)")
    timing.add_argument("--vmap-agents", type=positive_int, default=8, help="N of jax_vmap (default 8)")
    timing.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="PyTorch device (auto: cuda when available); JAX uses its default backend")
    timing.add_argument("--torch-threads", type=positive_int,
                        help="PyTorch intra-op threads (default: PyTorch's, one per core; XLA uses every core)")
    timing.add_argument("--seed", type=int, default=0, help="seed of the random replay data and networks")

    out = parser.add_argument_group("output and end-to-end")
    out.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go (default benchmarks/results)")
    out.add_argument("--name", help="run name (default DEVICE-GRID-TIMESTAMP)")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    out.add_argument("--e2e", action="store_true",
                     help="also time end-to-end training (jax-td3 train in subprocesses; needs the envs extra)")
    out.add_argument("--e2e-only", action="store_true", help="only the end-to-end part")
    out.add_argument("--e2e-steps", type=positive_int, default=5000,
                     help="environment steps per end-to-end run (default 5,000; updates start after 1,000)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--report-only", type=Path, metavar="JSON",
                     help="measure nothing: rewrite the Markdown table and plots of an earlier run's JSON")


def _settings(args) -> dict:
    quick = args.quick
    torch_device = args.device
    if torch_device == "auto":
        import torch
        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "grid": "full" if args.full else "quick" if quick else "default",
        "algos": list(args.algos or (("td3",) if quick else ALGOS)),
        "hidden": [list(h) for h in (args.hidden or (FULL_HIDDEN if args.full else DEFAULT_HIDDEN))],
        "batch": list(args.batch or (FULL_BATCH if args.full else DEFAULT_BATCH)),
        "impls": list(args.impls),
        "repetitions": args.repetitions or (3 if quick else 5),
        "min_rep_s": args.min_rep_time or (0.1 if quick else 0.3),
        "scan_updates": args.scan_updates,
        "vmap_agents": args.vmap_agents,
        "torch_device": torch_device,
        "obs_dim": OBS_DIM,
        "act_dim": ACT_DIM,
        "dtype": "float32",
        "seed": args.seed,
    }


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def run_grid(settings: dict, progress: bool, on_row=None) -> tuple[list[dict], list[dict], float]:
    """Time every (algo, hidden, batch, impl); returns (rows, matmul table, square-1024 matmul FLOP/s)."""
    import jax
    import torch
    from tqdm import tqdm

    from benchmarks import flops
    from benchmarks.implementations import Setup, Unavailable, build, random_transitions
    from benchmarks.matmul_rate import MatmulRates, peak_rate
    from benchmarks.timing import time_calls
    from jax_td3.config import make_config

    # float32 rows and floors are true float32 (NVIDIA GPUs would otherwise use TF32 in both frameworks);
    # bf16 rows override this locally.
    jax.config.update("jax_default_matmul_precision", "float32")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rates = MatmulRates(settings["torch_device"], target_s=min(0.02, settings["min_rep_s"] / 5))
    peak = peak_rate()
    on_gpu = settings["torch_device"] == "cuda" or jax.default_backend() == "gpu"
    variants = [False, True] if on_gpu else [False]   # bf16 matmul rows only on GPU
    cells = [(algo, tuple(hidden), batch, impl, bf16)
             for algo in settings["algos"] for hidden in settings["hidden"] for batch in settings["batch"]
             for impl in settings["impls"] for bf16 in variants
             if not (bf16 and impl == "torch_ref")]
    rows = []
    data_cache = {}
    bar = tqdm(cells, desc="bench", disable=not progress, dynamic_ncols=True)
    for algo, hidden, batch, impl, bf16 in bar:
        bar.set_postfix_str(f"{algo} {'-'.join(map(str, hidden))} b{batch} {impl}{' bf16' if bf16 else ''}")
        config = make_config(algo, obs_dim=OBS_DIM, act_dim=ACT_DIM, max_action=1.0, hidden=hidden,
                             batch_size=batch)
        # K and N shrink for big cells so that one call stays around CALL_BUDGET_S at the peak rate.
        updates_in_budget = int(CALL_BUDGET_S * peak / flops.update_flops(config, batch))
        setup = Setup(torch_device=settings["torch_device"],
                      scan_updates=max(2, min(settings["scan_updates"], updates_in_budget)),
                      vmap_agents=max(2, min(settings["vmap_agents"], updates_in_budget)),
                      bf16=bf16, seed=settings["seed"])
        if algo not in data_cache:
            data_cache[algo] = random_transitions(config, setup.replay_size, settings["seed"])
        row = {"algo": algo, "hidden": list(hidden), "batch": batch, "impl": impl,
               "matmul_dtype": "bfloat16" if bf16 else "float32"}
        try:
            runner = build(impl, config, setup, data_cache[algo])
            timing = time_calls(runner.call, runner.sync, runner.updates_per_call,
                                settings["repetitions"], settings["min_rep_s"])
        except Unavailable as err:
            row.update(status="skipped", reason=str(err))
        except Exception as err:  # noqa: BLE001 - a path that fails here is reported, not fatal
            row.update(status="failed", reason=_one_line(err))
        else:
            update_flops = flops.update_flops(config, batch)
            # The floor of the products as this runner batches them (N vmapped agents: stacked).
            floor = rates.floor(flops.update_gemms(config, batch, runner.agents))
            floor["floor_s"] /= runner.agents
            median = timing.median_s
            row.update(status="ok", notes=runner.notes, agents=runner.agents,
                       updates_per_call=timing.updates_per_call, calls_per_rep=timing.calls_per_rep,
                       per_update_s=timing.summary(), updates_per_s=1.0 / median,
                       first_call_s=timing.first_call_s, compile_s=timing.compile_s,
                       flops_per_update=update_flops, achieved_flops_per_s=update_flops / median,
                       floor_s_per_update=floor["floor_s"],
                       floor_rate_flops_per_s=floor["matmul_rate_flops_per_s"],
                       floor_fraction=floor["floor_s"] / median)
        rows.append(row)
        if on_row is not None:
            on_row(rows, rates.table(), peak)
    return rows, rates.table(), peak


def write_report(results: dict, stem: Path, plots: bool = True) -> list[Path]:
    """STEM.md (update table, end-to-end table) and, with ``plots``, the two PNGs."""
    from benchmarks import e2e, report

    text = report.markdown(results)
    if results.get("e2e"):
        text += "\n" + e2e.markdown(results["e2e"])
    stem.with_suffix(".md").write_text(text)
    written = [stem.with_suffix(".md")]
    if plots and results["rows"]:
        try:
            written += report.plot(results, stem)
        except ImportError:
            print("no plots: matplotlib is not installed (pip install 'jax-td3[logging]')", file=sys.stderr)
    return written


def run(args) -> int:
    from jax_td3.cli.args import UsageError

    if args.min_rep_time is not None and args.min_rep_time <= 0:
        raise UsageError("--min-rep-time must be > 0")
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    settings = _settings(args)
    if settings["torch_device"] == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--device cuda but PyTorch sees no CUDA device")
    from benchmarks import report
    from benchmarks.implementations import IMPLEMENTATIONS
    from benchmarks.machine import machine_info

    if args.report_only:
        try:
            results = json.loads(args.report_only.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read {args.report_only}: {err}") from None
        print("wrote " + ", ".join(str(p) for p in write_report(results, args.report_only.with_suffix(""),
                                                                   plots=not args.no_plots)))
        return 0

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    device_name = "gpu" if settings["torch_device"] == "cuda" else "cpu"
    name = args.name or f"{device_name}-{settings['grid']}-{stamp}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / name
    results = {
        "run_name": name,
        "created_utc": stamp,
        "command": " ".join(sys.argv),
        "machine": machine_info(settings["torch_device"]),
        "settings": settings,
        "implementations": {name: IMPLEMENTATIONS[name] for name in settings["impls"]},
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "loadavg_after": None,
        "rows": [],
        "matmul_shapes": [],
        "peak_matmul_flops_per_s": None,
        "e2e": [],
    }
    start = time.perf_counter()

    def save(rows, matmul_table, peak):
        # Saved after every cell: an interrupted run keeps everything measured so far.
        results["rows"], results["matmul_shapes"] = rows, matmul_table
        results["peak_matmul_flops_per_s"] = peak  # square 1024 float32, for reference
        results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        results["wall_s"] = round(time.perf_counter() - start, 1)
        report.write_json(results, stem.with_suffix(".json"))

    interrupted = False
    try:
        if not args.e2e_only:
            run_grid(settings, not args.no_progress, on_row=save)
        if args.e2e or args.e2e_only:
            from benchmarks import e2e

            def save_e2e(e2e_rows):
                results["e2e"] = e2e_rows
                save(results["rows"], results["matmul_shapes"], results["peak_matmul_flops_per_s"])
            e2e.run_all(args.e2e_steps, args.seed, progress=not args.no_progress, on_row=save_e2e)
    except KeyboardInterrupt:
        interrupted = True  # write the table and plots of what was measured, then exit 130
    results["interrupted"] = interrupted
    save(results["rows"], results["matmul_shapes"], results["peak_matmul_flops_per_s"])
    written = [stem.with_suffix(".json"), *write_report(results, stem, plots=not args.no_plots)]
    print("\n".join(report.headline_ratios(results)))
    print("wrote " + ", ".join(str(p) for p in written))
    if interrupted:
        print("jax-td3 bench: interrupted; the files hold every cell measured so far", file=sys.stderr)
        return 130
    return 0
