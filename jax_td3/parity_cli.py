"""``jax-td3 parity``: run the JAX update and the PyTorch reference in lockstep and compare.

Exit status: 0 when every quantity is within tolerance, 1 when not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from jax_td3.cli import UsageError, int_list, positive_int
from jax_td3.config import ALGOS, CONFIGS, make_config


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", choices=ALGOS, default="td3", help="algorithm to compare")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="float64: tolerance 1e-10; float32: per-update comparison with justified tolerances")
    parser.add_argument("--updates", type=positive_int, default=1000, help="consecutive updates to compare")
    parser.add_argument("--hidden", type=int_list, help="actor (and critic) hidden sizes, e.g. 256,256")
    parser.add_argument("--critic-hidden", type=int_list, help="critic hidden sizes if different from --hidden")
    parser.add_argument("--batch-size", type=positive_int, help="batch size of each update")
    parser.add_argument("--gamma", type=float, help="discount")
    parser.add_argument("--tau", type=float, help="Polyak rate of the target networks")
    parser.add_argument("--policy-freq", type=positive_int, help="actor and targets update every N-th update")
    parser.add_argument("--policy-noise", type=float, help="target-policy noise std, in units of the action scale")
    parser.add_argument("--noise-clip", type=float, help="target-policy noise clip, in units of the action scale")
    parser.add_argument("--actor-lr", type=float, help="actor Adam learning rate")
    parser.add_argument("--critic-lr", type=float, help="critic Adam learning rate")
    parser.add_argument("--max-action", type=float, help="symmetric action box [-max_action, max_action]")
    parser.add_argument("--action-low", type=float_list, help="per-dimension lower bounds (asymmetric box)")
    parser.add_argument("--action-high", type=float_list, help="per-dimension upper bounds (asymmetric box)")
    parser.add_argument("--obs-dim", type=positive_int, default=None, help="observation size (default 3)")
    parser.add_argument("--act-dim", type=positive_int, default=None, help="action size (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of the shared draws")
    parser.add_argument("--tol", type=float, help="override every quantity's tolerance")
    parser.add_argument("--resync", choices=("auto", "on", "off"), default="auto",
                        help="copy the JAX state into torch before each update (auto: on for float32 only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def config_from_args(args):
    if args.max_action is not None and (args.action_low or args.action_high):
        raise UsageError("give either --max-action or --action-low/--action-high, not both")
    if bool(args.action_low) != bool(args.action_high):
        raise UsageError("--action-low and --action-high go together")
    act_dim = args.act_dim
    if args.action_low and act_dim is None:
        act_dim = len(args.action_low)
    if args.max_action is not None and args.max_action <= 0:
        raise UsageError(f"--max-action must be > 0, got {args.max_action}")
    if args.critic_hidden and CONFIGS[args.algo].critic_arch == "seed" and len(args.critic_hidden) != 2:
        raise UsageError("seed-ddpg's critic takes two sizes: branch width, width after concatenation")
    return make_config(
        args.algo, obs_dim=args.obs_dim, act_dim=act_dim, hidden=args.hidden, critic_hidden=args.critic_hidden,
        batch_size=args.batch_size, gamma=args.gamma, tau=args.tau, policy_freq=args.policy_freq,
        policy_noise=args.policy_noise, noise_clip=args.noise_clip, actor_lr=args.actor_lr,
        critic_lr=args.critic_lr, max_action=args.max_action, action_low=args.action_low,
        action_high=args.action_high)


def run(args) -> int:
    config = config_from_args(args)
    import torch

    # The networks compared here are small: one thread is faster and immune to oversubscription.
    torch.set_num_threads(1)
    from jax_td3.parity import run_parity

    resync = {"auto": None, "on": True, "off": False}[args.resync]
    report = run_parity(config, dtype=args.dtype, updates=args.updates, seed=args.seed, tol=args.tol,
                        resync=resync, progress=not args.json and sys.stderr.isatty())
    print(report.to_json() if args.json else report.table())
    return 0 if report.passed else 1
