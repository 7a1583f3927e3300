"""``jax-td3 eval CHECKPOINT --episodes N``: the noiseless policy of a saved agent, mean/std return.

CHECKPOINT is a checkpoint file, a run directory (its newest valid checkpoint), or a PyTorch
file written by ``jax-td3 export --to torch``. Either backend runs either backend's checkpoint.
The episodes run as a batch of environments in lockstep (one policy forward per step); ``--sequential``
runs them one after another on one environment, with the same returns (for checking).
``--video PATH`` (.mp4 or .gif) also records the episodes, headless; needs ``pip install 'jax-td3[video]'``.
"""

from __future__ import annotations

import argparse

from jax_td3.cli.args import nonnegative_int, positive_int
from jax_td3.settings import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint file, a run directory (its newest valid checkpoint), or a .pt file "
                             "written by 'jax-td3 export --to torch'")
    parser.add_argument("--episodes", type=positive_int, default=10, help="evaluation episodes")
    parser.add_argument("--env", default=None, help="environment id (default: the one it was trained on)")
    parser.add_argument("--seed", type=nonnegative_int, default=None,
                        help="seed of the first reset (default: the run's evaluation seed)")
    parser.add_argument("--backend", choices=BACKENDS, default="jax",
                        help="framework that runs the policy (either loads either backend's checkpoint)")
    parser.add_argument("--agent", type=nonnegative_int, default=0,
                        help="which agent of a compiled multi-seed checkpoint (default 0)")
    parser.add_argument("--video", metavar="PATH", default=None,
                        help="also record the episodes to PATH (.mp4 or .gif), headless; the returns are the "
                             "same as without it (needs pip install 'jax-td3[video]')")
    parser.add_argument("--sequential", action="store_true",
                        help="run the episodes one after another on one environment instead of as a batch of "
                             "environments (the same returns; slower)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from jax_td3.cli.output import stdout_to_stderr
    from jax_td3.compile_cache import enable_compile_cache
    from jax_td3.evaluate import evaluate_checkpoint

    enable_compile_cache()  # the programs of an earlier run of this configuration load instead of compiling
    if args.backend == "torch":
        from jax_td3.cli.process import use_torch_threads

        use_torch_threads(1)   # batched forwards of a small MLP: one thread is fastest (cli.process)

    # With --json, whatever the environment prints (PyBullet's argv[0]= lines) goes to stderr.
    with stdout_to_stderr(args.json) as stdout:
        result = evaluate_checkpoint(args.checkpoint, args.episodes, args.env, args.seed, args.backend, args.agent,
                                     video=args.video, sequential=args.sequential)
        if args.json:
            import json
            print(json.dumps(result), file=stdout)
    if not args.json:
        print(f"{result['env']}: return {result['eval_return_mean']:.2f} +- {result['eval_return_std']:.2f} "
              f"over {result['episodes']} episodes (checkpoint {result['checkpoint']}, step {result['step']}, "
              f"trained with {result['trained_with']}, run by {args.backend})")
        if "video" in result:
            print(f"video: {result['video']} ({result['video_frames']} frames)")
    return 0
