"""``jax-td3 train``: flags -> ``jax_td3.run.training.train``, and what the run wrote, printed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from jax_td3.cli.args import add_config_flags, given, nonnegative_int, positive_int, updates_per_episode
from jax_td3.envs.brax import BACKENDS as BRAX_BACKENDS
from jax_td3.envs.playground import IMPLS as PLAYGROUND_IMPLS
from jax_td3.presets import DEFAULTS, PRESETS
from jax_td3.settings import BACKENDS, DTYPES, EXPLORATIONS, REPLAY_LAYOUTS, SCHEDULES, VECTOR_MODES

# Flags that are not settings of the run: how the command runs it.
COMMAND_FLAGS = ("preset", "resume", "compiled", "num_seeds", "no_progress", "out", "algo", "coordinator",
                 "num_processes", "process_id")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jax_td3.config import ALGOS

    d = DEFAULTS
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=tuple(PRESETS), default=None,
                     help=f"start from a named setup ({', '.join(PRESETS)}); explicit flags override it")
    run.add_argument("--algo", choices=ALGOS, default=None, help=f"algorithm (default {d['algo']})")
    run.add_argument("--backend", choices=BACKENDS, default=None, help=f"learner framework (default {d['backend']})")
    run.add_argument("--env", default=None, help=f"Gymnasium or PyBullet env id with a Box action space "
                                                 f"(default {d['env']})")
    run.add_argument("--total-steps", type=positive_int, default=None,
                     help=f"environment steps to train for (default {d['total_steps']:,})")
    run.add_argument("--seed", type=nonnegative_int, default=None, help=f"seed of everything (default {d['seed']})")
    run.add_argument("--out", default=None, help="output directory (default runs/ENV-ALGO-BACKEND-seedS)")
    run.add_argument("--dtype", choices=DTYPES, default=None, help=f"float precision (default {d['dtype']})")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--compiled", action="store_true",
                     help="run the whole loop compiled on the device (JAX-native environments only)")
    run.add_argument("--num-seeds", type=positive_int, default=None,
                     help="with --compiled: train this many seeds at once (vmapped)")
    run.add_argument("--brax-backend", choices=BRAX_BACKENDS, default=None,
                     help=f"Brax's physics for --env brax:NAME (the brax extra; default {d['brax_backend']}, the "
                          f"fastest measured on a CPU)")
    run.add_argument("--playground-impl", choices=PLAYGROUND_IMPLS, default=None,
                     help=f"MuJoCo Playground's physics for --env playground:NAME (the playground extra): jax "
                          f"(MJX), warp (MuJoCo Warp, NVIDIA GPUs) or auto (default {d['playground_impl']}: jax "
                          f"without an NVIDIA GPU, else the task's own)")
    run.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                     help="with --compiled: run over several processes (jax.distributed); every process gets the "
                          "same flags and its own --process-id, and the agents are sharded over all their devices")
    run.add_argument("--num-processes", type=positive_int, default=None, help="with --coordinator: processes in all")
    run.add_argument("--process-id", type=nonnegative_int, default=None,
                     help="with --coordinator: this process's index (0 runs the coordinator and writes the outputs)")

    add_config_flags(parser)

    loop = parser.add_argument_group("training loop")
    loop.add_argument("--buffer-size", type=positive_int, default=None,
                      help=f"replay capacity (default {d['buffer_size']:,})")
    loop.add_argument("--learning-starts", type=nonnegative_int, default=None,
                      help=f"updates start once the buffer holds more than this many transitions "
                           f"(default {d['learning_starts']:,})")
    loop.add_argument("--random-steps", type=nonnegative_int, default=None,
                      help="uniformly random actions for this many first steps (default: --learning-starts)")
    loop.add_argument("--update-schedule", choices=SCHEDULES, default=None,
                      help="'step': one update per env step; 'episode': --updates-per-episode after each "
                           "episode (the DDPG notebook's)")
    loop.add_argument("--updates-per-episode", type=updates_per_episode, default=None,
                      help=f"updates after each episode with --update-schedule episode: a number, or 'steps' "
                           f"for as many as the episode had steps (default {d['updates_per_episode']})")
    loop.add_argument("--updates-per-call", type=positive_int, default=None,
                      help="JAX backend: collect K steps, then K updates in one compiled call (statistically, "
                           "not bitwise, equal to K=1; K <= 100 measured to learn like K=1 and to be as fast as "
                           "larger K: benchmarks/results/compiled.md)")
    loop.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                      help="with --updates-per-call K > 1 (JAX backend): step the environment while the device "
                           "runs the last K updates, acting with the actor from before them (one block stale); "
                           "their losses are collected at the next block or evaluation (default: off)")
    loop.add_argument("--exploration", choices=EXPLORATIONS, default=None,
                      help="exploration noise (default: ou for seed-ddpg, gaussian otherwise)")
    loop.add_argument("--expl-noise", type=float, default=None,
                      help=f"Gaussian exploration std, in units of the action scale (default {d['expl_noise']})")
    loop.add_argument("--ou-theta", type=float, default=None, help=f"OU mean reversion (default {d['ou_theta']})")
    loop.add_argument("--ou-sigma", type=float, default=None,
                      help=f"OU volatility, in action units (default {d['ou_sigma']})")
    loop.add_argument("--ou-mu", type=float, default=None, help=f"OU mean (default {d['ou_mu']})")
    loop.add_argument("--ou-dt", type=float, default=None, help=f"OU time step (default {d['ou_dt']})")
    loop.add_argument("--bootstrap-truncation", action=argparse.BooleanOptionalAction, default=None,
                      help="bootstrap through a time-limit truncation (default); --no-bootstrap-truncation treats "
                           "it as terminal (the DDPG notebook's bug, and right with --time-feature)")
    loop.add_argument("--time-feature", action=argparse.BooleanOptionalAction, default=None,
                      help="append the fraction of the episode's time limit left to each observation (the "
                           "RL Baselines3 Zoo's TimeFeatureWrapper; used by --preset zoo-pybullet)")
    loop.add_argument("--num-envs", type=positive_int, default=None,
                      help=f"environments stepped together, one batched action per step (Gymnasium loop: a "
                           f"Gymnasium vector env, see --vector-mode; --compiled: per agent); --total-steps, "
                           f"--eval-every and --learning-starts count transitions over all of them "
                           f"(default {d['num_envs']})")
    loop.add_argument("--updates-per-step", type=float, default=None,
                      help="updates per vector step of --num-envs transitions; fractional values are spread "
                           "evenly (0.25: one update every 4th step; 1.5: 1, 2, 1, 2 ...) "
                           f"(default {d['updates_per_step']:g})")
    loop.add_argument("--vector-mode", choices=VECTOR_MODES, default=None,
                      help="Gymnasium loop with --num-envs > 1: sync steps the environments one after another in "
                           "this process, async each in its own subprocess, in parallel "
                           f"(default {d['vector_mode']})")
    loop.add_argument("--replay-layout", choices=REPLAY_LAYOUTS, default=None,
                      help="with --compiled: flat (one ring over all environments) or per_env (one ring of "
                           "--buffer-size / --num-envs one-step transitions per environment, n-step returns "
                           "assembled at sampling, each environment's share of a batch from its own ring) "
                           "(default: per_env for fasttd3 or --n-step > 1, else flat)")
    loop.add_argument("--chunk-steps", type=positive_int, default=None,
                      help="with --compiled: env steps per compiled call, where Ctrl-C stops and checkpoints "
                           "are written; must divide --eval-every (default: --eval-every)")
    loop.add_argument("--eval-every", type=positive_int, default=None,
                      help=f"evaluate every this many env steps (default {d['eval_every']:,})")
    loop.add_argument("--eval-episodes", type=positive_int, default=None,
                      help=f"episodes per evaluation (default {d['eval_episodes']})")

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument("--checkpoint-every", type=positive_int, default=None,
                      help="checkpoint every this many env steps (default: at every evaluation); always at the end")
    ckpt.add_argument("--keep-checkpoints", type=positive_int, default=None,
                      help=f"keep the newest this many checkpoints (default {d['keep_checkpoints']})")
    ckpt.add_argument("--save-buffer", action=argparse.BooleanOptionalAction, default=None,
                      help="include the replay buffer in checkpoints (default: yes; exact --resume needs it; "
                           "it can be large: capacity x transition size)")
    ckpt.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its newest complete checkpoint (settings come from the "
                           "run; --total-steps may extend it)")
    loop.add_argument("--skip-nonfinite", action="store_const", const=True, default=None,
                      help="drop transitions with a NaN/inf observation or reward (counted in summary.json) "
                           "instead of stopping; non-finite losses or parameters always stop the run")


def run(args: argparse.Namespace) -> int:
    if args.process_id in (None, 0):   # the process that writes the outputs draws the learning curve
        from jax_td3.run.plot import start_painter

        start_painter()   # matplotlib imports in a helper process while this one starts (before JAX)
    from jax_td3.compile_cache import enable_compile_cache
    from jax_td3.run.training import train

    enable_compile_cache()  # the programs of an earlier run of this configuration load instead of compiling
    _set_process_settings(args)

    values = given(args, [k for k in vars(args) if k not in COMMAND_FLAGS])
    progress = not args.no_progress
    stream = sys.stderr if args.compiled else sys.stdout
    summary = train(args.algo, args.out, preset=args.preset, resume=args.resume, compiled=args.compiled,
                    num_seeds=args.num_seeds, progress=progress, coordinator=args.coordinator,
                    num_processes=args.num_processes, process_id=args.process_id,
                    announce=lambda message: print(message, file=stream, flush=True), **values)
    if summary.get("already_finished"):
        return 0
    if args.compiled:
        return _print_compiled(summary)
    if summary["interrupted"]:
        print(f"interrupted at step {summary['env_steps']:,}; checkpoint saved: {summary['last_checkpoint']}")
    final, best = summary["final_eval_return"], summary.get("best_eval_return")
    if best is not None:   # the best agent is kept as best.jtd3; a late dip does not lose it
        kept = f" (agent: {summary['best_agent']})" if summary.get("best_agent") else ""
        print(f"best eval return {best:.1f}{kept}")
    print(f"final eval return {final:.1f} after {summary['env_steps']:,} steps, {summary['updates']:,} updates, "
          f"{summary['wall_seconds']:.0f} s" if final is not None else "no evaluation ran")
    _print_outputs(summary["out"])
    print(f"checkpoint:     {summary['last_checkpoint']}")
    if summary["interrupted"]:
        return 128 + int(summary["signal"])
    return 0


def _set_process_settings(args: argparse.Namespace) -> None:
    """JAX's x64 mode for a float64 run and one torch thread for a torch run (``cli.process``); a resumed
    run's own dtype and backend win, as they do in the run driver."""
    from jax_td3.cli.process import saved_run_settings, use_dtype, use_torch_threads
    from jax_td3.presets import resolve

    wanted = resolve({"algo": args.algo, "dtype": args.dtype, "backend": args.backend}, args.preset)
    saved = saved_run_settings(args.out) if args.resume else {}
    use_dtype(saved.get("dtype", wanted["dtype"]))
    if saved.get("backend", wanted["backend"]) == "torch" and not args.compiled:
        use_torch_threads(1)


def _print_outputs(out: str | os.PathLike[str]) -> None:
    from pathlib import Path

    out = Path(out)
    if (out / "learning_curve.png").exists():   # not drawn without matplotlib (the logging extra)
        print(f"learning curve: {out / 'learning_curve.png'}")
    print(f"metrics:        {out / 'metrics.csv'}")
    print(f"summary:        {out / 'summary.json'}")


def _print_compiled(summary: dict[str, Any]) -> int:
    if summary.get("interrupted"):
        print(f"interrupted at step {summary['env_steps']:,}; checkpoint saved: {summary['last_checkpoint']} "
              f"(--resume continues it)")
    final = summary["final_eval_return"]
    spread = f" (per seed: {', '.join(f'{x:.1f}' for x in final)})" if len(final) > 1 else ""
    print(f"final eval return {summary['final_eval_return_mean']:.1f}{spread} after {summary['env_steps']:,} steps, "
          f"{summary['updates']:,} updates per seed; compile {summary['compile_seconds']:.1f} s, "
          f"run {summary['run_seconds']:.1f} s")
    _print_outputs(summary["out"])
    if summary["last_checkpoint"]:
        print(f"checkpoint:     {summary['last_checkpoint']}")
    if summary.get("interrupted"):
        return 128 + int(summary["signal"])
    return 0
