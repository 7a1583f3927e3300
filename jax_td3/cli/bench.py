"""``jax-td3 bench``: every benchmark of ``jax_td3.bench`` behind one command (benchmarks/README.md).

    jax-td3 bench [options]                  the update suite: JAX vs PyTorch against the compute floor
    jax-td3 bench e2e [options]              end-to-end training throughput only (= bench --e2e-only)
    jax-td3 bench compiled MODE [options]    the compiled paths: native, seeds, update-speed, gymnasium, brax
    jax-td3 bench soak [options]             long training runs whose memory must stay flat

Results go to ``benchmarks/results`` under the current directory unless ``--out-dir`` says
otherwise, so from the repository root they land beside the committed ones, and an installed
package never writes into its own directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_td3.cli.args import UsageError, flag, given, int_list, nonnegative_int, positive_int

if TYPE_CHECKING:
    from jax_td3.bench.compiled import GymnasiumRun, NativeRun

DEFAULT_OUT_DIR = Path("benchmarks", "results")   # relative: resolved against the working directory
OUT_DIR_HELP = "where results go (default benchmarks/results in the current directory)"
# Flags of the update suite, which no mode takes (given with a mode, they would be ignored).
SUITE_ONLY_FLAGS = ("quick", "full", "algos", "hidden", "batch", "impls", "repetitions", "min_rep_time",
                    "scan_updates", "vmap_agents", "device", "torch_threads", "no_plots", "e2e", "e2e_only",
                    "e2e_steps", "report_only")
# What SuiteSettings takes from the flags of the same name.
SUITE_SETTINGS = ("algos", "hidden", "batch", "impls", "repetitions", "min_rep_time", "scan_updates",
                  "vmap_agents", "device", "torch_threads", "seed")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return int_list(text.replace("-", ","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected hidden sizes like 256-256, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def _shared(parser: argparse.ArgumentParser, *names: str) -> None:
    """Flags the suite also has. In a mode's parser they default to "not given" (SUPPRESS), so the
    value stays the one given before the mode (``bench --out-dir X soak``) or the suite's default."""
    spec: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        "out_dir": (("--out-dir",), dict(type=Path, help=OUT_DIR_HELP)),
        "name": (("--name",), dict(help="run name (file stem)")),
        "seed": (("--seed",), dict(type=int, help="seed (default 0)")),
        "no_progress": (("--no-progress",), dict(action="store_true", help="no progress bar")),
    }
    for name in names:
        flags, options = spec[name]
        parser.add_argument(*flags, default=argparse.SUPPRESS, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jax_td3.bench.implementations import IMPLEMENTATIONS
    from jax_td3.bench.suite import ALGOS, DEVICES

    parser.epilog = ("Without a MODE the update suite runs (the options above). Run 'jax-td3 bench MODE --help' "
                     "and 'jax-td3 bench compiled MODE --help' for the options of a mode. Exit status of the "
                     "suite: 0 when at least one cell was measured (failed cells, if any, are listed at the end "
                     "and in the table), 1 when none was (every cell failed or was skipped), 2 for bad input, "
                     "130 when interrupted; the files are written in every case.")

    grid = parser.add_argument_group("grid (default: td3 and ourddpg, 256-256 x batch 100, 256, 5 repetitions)")
    size = grid.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=None,
                      help="td3 only, 256-256 x batch 100, 256, 3 short repetitions (about 2 min on 2 CPU cores)")
    size.add_argument("--full", action="store_true", default=None,
                      help="hidden 64-64, 256-256, 400-300, 1024-1024 x batch 100, 256, 1024, 4096 (long on a CPU)")
    grid.add_argument("--algos", nargs="+", choices=ALGOS,
                      help="algorithms (ourddpg is the DDPG variant timed; default td3 and ourddpg, --quick td3); "
                           "fasttd3 at a humanoid's sizes (obs 67, act 21, 101 atoms; hidden = the critic's sizes, "
                           "the actor's half of each), alone by default critic 1024-512-256 x batch 4096, 32768")
    grid.add_argument("--hidden", nargs="+", type=_hidden, help="hidden sizes to time, e.g. 256-256 400-300")
    grid.add_argument("--batch", nargs="+", type=positive_int, help="batch sizes to time, e.g. 100 256")
    grid.add_argument("--impls", nargs="+", choices=list(IMPLEMENTATIONS),
                      help="implementations to time (default all; unavailable ones are recorded with the reason)")

    timing = parser.add_argument_group("timing")
    timing.add_argument("--repetitions", type=positive_int, help="timed repetitions per cell (default 5, quick 3)")
    timing.add_argument("--min-rep-time", type=float, help="seconds each repetition lasts at least "
                        "(default 0.3, quick 0.1)")
    timing.add_argument("--scan-updates", type=positive_int, help="K of jax_scan (default 100)")
    timing.add_argument("--vmap-agents", type=positive_int, help="N of jax_vmap (default 8)")
    timing.add_argument("--device", choices=DEVICES,
                        help="PyTorch device (auto: cuda when available); JAX uses its default backend")
    timing.add_argument("--torch-threads", type=positive_int,
                        help="PyTorch intra-op threads (default: PyTorch's, one per core; XLA uses every core)")
    timing.add_argument("--seed", type=int, default=0, help="seed of the random replay data and networks")

    out = parser.add_argument_group("output and end-to-end")
    out.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help=OUT_DIR_HELP)
    out.add_argument("--name", help="run name (default DEVICE-GRID-TIMESTAMP)")
    out.add_argument("--no-plots", action="store_true", default=None, help="skip the PNG plots")
    out.add_argument("--e2e", action="store_true", default=None,
                     help="also time end-to-end training (jax-td3 train in subprocesses; needs the envs extra)")
    out.add_argument("--e2e-only", action="store_true", default=None, help="only the end-to-end part")
    out.add_argument("--e2e-steps", type=positive_int,
                     help="environment steps per end-to-end run (default 5,000; updates start after 1,000)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--report-only", type=Path, metavar="JSON",
                     help="measure nothing: rewrite the Markdown table and plots of an earlier run's JSON")

    modes = parser.add_subparsers(dest="mode", metavar="[MODE]", title="modes (default: the update suite above)")
    _add_e2e(modes.add_parser("e2e", help="end-to-end training throughput only (the same as --e2e-only)",
                              description="Runs jax-td3 train in subprocesses (Pendulum-v1 and "
                                          "HalfCheetahBulletEnv-v0, both backends; the compiled loop with 1 "
                                          "and 16 seeds); writes NAME.json and NAME.md. Needs the envs extra."))
    _add_compiled(modes.add_parser("compiled", help="the compiled paths: native, seeds, update-speed, gymnasium, brax",
                                   description="Benchmarks of the compiled and scan-fused paths; each writes "
                                               "OUT_DIR/compiled_MODE.json and prints it."))
    _add_soak(modes.add_parser("soak", help="memory soak runs (long jax-td3 train runs in subprocesses)",
                               description="200,000 compiled steps and 50,000 Gymnasium-loop steps, RSS "
                                           "sampled from /proc; exit 1 when memory grew beyond the bound "
                                           "(jax_td3/bench/soak.py)."))


def _add_e2e(parser: argparse.ArgumentParser) -> None:
    from jax_td3.bench.e2e import DEFAULT_STEPS

    parser.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                        help=f"environment steps per run (default {DEFAULT_STEPS:,}; updates start after 1,000)")
    _shared(parser, "seed", "out_dir", "name", "no_progress")


def _steps(parser: argparse.ArgumentParser, defaults: type[NativeRun] | type[GymnasiumRun]) -> None:
    """--total-steps and --learning-starts, with the defaults of the dataclass ``defaults``."""
    parser.add_argument("--total-steps", type=positive_int,
                        help=f"environment steps (default {defaults.total_steps:,})")
    parser.add_argument("--learning-starts", type=nonnegative_int,
                        help=f"uniform random steps before updates start (default {defaults.learning_starts:,})")


def _add_compiled(parser: argparse.ArgumentParser) -> None:
    from jax_td3.bench.compiled import (
        SEED_COUNTS,
        UPDATE_FLAG_SETS,
        BraxScalingRun,
        GymnasiumRun,
        NativeRun,
        UpdateSpeedRun,
    )

    modes = parser.add_subparsers(dest="compiled_mode", metavar="MODE", required=True)

    def mode(name: str, summary: str) -> argparse.ArgumentParser:
        return modes.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
    native = mode("native", "TD3 on the JAX-native Pendulum, 64-64, batch 100, one seed, the whole run compiled; "
                            "with --rejax-python, Rejax's TD3 on the same settings in the same session")
    seeds = mode("seeds", "the native run with K seeds vmapped in one program, per K")
    d = NativeRun
    for p in (native, seeds):
        _steps(p, d)
        p.add_argument("--eval-every", type=positive_int, help=f"evaluate every this many steps "
                                                               f"(default {d.eval_every:,})")
        p.add_argument("--eval-episodes", type=positive_int, help=f"episodes per evaluation "
                                                                  f"(default {d.eval_episodes})")
        p.add_argument("--learning-rate", type=float, help=f"actor and critic Adam learning rate "
                                                           f"(default {d.learning_rate})")
        p.add_argument("--repeats", type=positive_int, help=f"timed runs of the compiled program; the median "
                                                            f"is reported (default {d.repeats})")
        _shared(p, "seed", "out_dir")
    native.add_argument("--rejax-python", help="python of a virtualenv with rejax installed, to compare in this "
                                               "session")
    native.add_argument("--rejax-script", type=Path, default=Path("benchmarks", "compiled_rejax.py"),
                        help="the Rejax side (default benchmarks/compiled_rejax.py in the current directory)")
    seeds.add_argument("--num-seeds", type=int_list,
                       help=f"seed counts K, comma-separated (default {','.join(map(str, SEED_COUNTS))})")

    p = mode("update-speed", "the 256-256 batch-256 TD3 update alone: updates in one multi_update scan, per XLA "
                             "flag setting, each in a subprocess")
    speed = UpdateSpeedRun
    p.add_argument("--num-updates", type=positive_int, help=f"updates in one scan (default {speed.num_updates:,})")
    p.add_argument("--repeats", type=positive_int, help=f"timed calls per flag set; the median is reported "
                                                        f"(default {speed.repeats})")
    p.add_argument("--donate", action="store_true", default=None, help="donate the train state to the jitted call")
    p.add_argument("--flag-sets", type=_names, help=f"comma-separated (default all: {','.join(UPDATE_FLAG_SETS)})")
    p.add_argument("--rounds", type=positive_int, help=f"times to go through the flag sets, alternating "
                                                       f"(default {speed.rounds})")
    _shared(p, "out_dir")

    p = mode("gymnasium", "TD3 on Gymnasium Pendulum-v1 (256-256, batch 256) through the host training loop, per "
                          "--updates-per-call; with --baseline-command, an outside implementation of the same "
                          "work alternating with it")
    gym = GymnasiumRun
    _steps(p, gym)
    p.add_argument("--updates-per-call", type=int_list,
                   help=f"K values, comma-separated (default {','.join(map(str, gym.updates_per_call))})")
    p.add_argument("--rounds", type=positive_int, help=f"runs of each setting (and of the baseline), alternating; "
                                                       f"the best is reported (default {gym.rounds})")
    p.add_argument("--label", default="", help="suffix of the results file (e.g. the XLA flags used)")
    p.add_argument("--baseline-command", default=None,
                   help="shell command of an outside implementation doing the same work, run after each round; "
                        "its last stdout line must be a JSON object with loop_seconds")
    p.add_argument("--baseline-label", default=None, help="how the results file names the baseline command")
    _shared(p, "seed", "out_dir")

    p = mode("brax", "the scaling table: TD3 (256-256, batch 256, one update per vector step) on a Brax task with N "
                     "environments per agent and K agents, transitions and updates per second (needs the brax extra)")
    brax = BraxScalingRun
    p.add_argument("--env", help=f"a brax:NAME id (default {brax.env})")
    p.add_argument("--brax-backend", help=f"Brax's physics backend (default {brax.brax_backend})")
    p.add_argument("--num-envs", type=int_list,
                   help=f"environment counts N, comma-separated (default {','.join(map(str, brax.num_envs))})")
    p.add_argument("--num-seeds", type=int_list,
                   help=f"agent counts K, comma-separated (default {','.join(map(str, brax.num_seeds))})")
    p.add_argument("--total-steps", type=positive_int,
                   help="transitions per agent in the timed chunk (default: 500, 200 and 50 vector steps at "
                        "N = 1, 16, 128)")
    _shared(p, "out_dir")


def _add_soak(parser: argparse.ArgumentParser) -> None:
    from jax_td3.bench.soak import CASES

    parser.add_argument("--only", choices=tuple(CASES), action="append", help="run only this case (repeatable)")
    _shared(parser, "out_dir", "name")


# -- run ---------------------------------------------------------------------------------

def _announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from jax_td3.run.checks import ensure_writable_dir

    if not getattr(args, "report_only", None):
        ensure_writable_dir(args.out_dir, "out_dir", "the results directory")
    if args.mode is not None:
        extra = [flag(name) for name in given(args, SUITE_ONLY_FLAGS)]
        if extra:
            raise UsageError(f"{', '.join(extra)} only apply to the update suite, not to 'bench {args.mode}'")
    if args.mode == "compiled":
        return _run_compiled(args)
    if args.mode == "soak":
        return _run_soak(args)
    return _run_suite(args)


def _run_suite(args: argparse.Namespace) -> int:
    from jax_td3.bench import report
    from jax_td3.bench.e2e import DEFAULT_STEPS
    from jax_td3.bench.suite import SuiteSettings, run_suite, write_report

    grid = "full" if args.full else "quick" if args.quick else "default"
    values = given(args, SUITE_SETTINGS)
    overrides: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    settings = SuiteSettings(grid=grid, **overrides)
    if args.report_only:
        settings.record()  # the same checks of the flags as a measuring run
        try:
            results = json.loads(args.report_only.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read {args.report_only}: {err}") from None
        written = write_report(results, args.report_only.with_suffix(""), plots=not args.no_plots,
                               announce=_announce)
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    if args.mode == "e2e":
        updates, e2e_steps = False, args.steps
    else:
        updates = not args.e2e_only
        e2e_steps = (args.e2e_steps or DEFAULT_STEPS) if (args.e2e or args.e2e_only) else None
    results, written = run_suite(settings, args.out_dir, args.name, updates=updates, e2e_steps=e2e_steps,
                                 plots=not args.no_plots, progress=not args.no_progress,
                                 command=" ".join(sys.argv), announce=_announce)
    headline = report.headline_ratios(results)
    if headline:
        print("\n".join(headline))
    print("wrote " + ", ".join(str(p) for p in written))
    if results["interrupted"]:
        print("jax-td3 bench: interrupted; the files hold every cell measured so far", file=sys.stderr)
        return 130
    return _verdict(results, written[0].with_suffix(".md"))


def _verdict(results: dict, table: Path) -> int:
    """Exit status of a finished suite run: 1 when nothing was measured (every cell failed or was
    skipped), else 0; failed cells are listed on one stderr line either way."""
    from jax_td3.bench.suite import cell_name, outcome

    rows = outcome(results)
    failed, skipped = rows["failed"], rows["skipped"]
    names = lambda group: ", ".join(cell_name(r) for r in group)
    if not rows["ok"] and (failed or skipped):
        first = (failed or skipped)[0]
        what = (f"every cell failed ({len(failed)})" if not skipped else
                f"nothing was measured ({len(failed)} failed, {len(skipped)} skipped)")
        print(f"jax-td3 bench: error: {what}: {names(failed + skipped)}; first reason: {first['reason']} "
              f"(all reasons in {table})", file=sys.stderr)
        return 1
    if failed:
        total = len(rows["ok"]) + len(failed) + len(skipped)
        print(f"jax-td3 bench: {len(failed)} of {total} cells failed: {names(failed)} (reasons in {table})",
              file=sys.stderr)
    return 0


def _run_compiled(args: argparse.Namespace) -> int:
    from jax_td3.bench import compiled

    mode = args.compiled_mode
    if args.name:
        raise UsageError("--name does not apply to 'bench compiled': it writes compiled_MODE.json "
                         "(gymnasium: compiled_gymnasium_LABEL.json with --label)")
    if mode in ("native", "seeds"):
        native_run = compiled.NativeRun(**given(args, ("total_steps", "learning_starts", "eval_every", "eval_episodes",
                                                "learning_rate", "seed", "repeats")))
        if mode == "native":
            if args.rejax_python and not args.rejax_script.is_file():
                raise UsageError(f"--rejax-script {args.rejax_script} is not a file (run from the repository root, "
                                 f"or give its path)")
            result = compiled.native(native_run, rejax_python=args.rejax_python,
                                     rejax_script=args.rejax_script.resolve())
        else:
            result = compiled.seeds(native_run, **given(args, ("num_seeds",)))
        name = mode
    elif mode == "update-speed":
        speed_run = compiled.UpdateSpeedRun(**given(args, ("num_updates", "repeats", "donate", "flag_sets",
                                                           "rounds")))
        result = compiled.update_speed(speed_run, announce=_announce)
        name = "update_speed"
    elif mode == "brax":
        brax_run = compiled.BraxScalingRun(**given(args, ("env", "brax_backend", "num_envs", "num_seeds",
                                                        "total_steps")))
        result = compiled.brax_scaling(brax_run, announce=_announce)
        name = "brax_scaling"
    else:
        gym_run = compiled.GymnasiumRun(**given(args, ("total_steps", "learning_starts", "updates_per_call", "seed",
                                                     "rounds")))
        result = compiled.gymnasium(gym_run, args.baseline_command, args.baseline_label, announce=_announce)
        name = "gymnasium" + (f"_{args.label}" if args.label else "")
    _write(result, args.out_dir / f"compiled_{name}.json")
    return 0


def _run_soak(args: argparse.Namespace) -> int:
    from jax_td3.bench.soak import run_soak

    results = run_soak(args.only, announce=_announce)
    _write(results, args.out_dir / f"{args.name or 'soak'}.json", show=False)
    return 0 if results["passed"] else 1


def _write(result: dict, path: Path, show: bool = True) -> None:
    from jax_td3.bench.report import write_json

    if show:
        print(json.dumps(result, indent=2))
    print(f"wrote {write_json(result, path)}")
