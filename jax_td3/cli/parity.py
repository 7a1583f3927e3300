"""``jax-td3 parity``: run the JAX update and the PyTorch reference in lockstep and compare.

Two modes:
- update level (default): ``--updates`` consecutive updates on synthetic batches, every
  intermediate quantity compared (``jax_td3.parity.update_level``); by default JAX against
  torch_ref, any two of ``jax_td3.adapters.ADAPTERS`` (jax, torch, sb3, sbx) with
  ``--backend-a``/``--backend-b``;
- whole run (``--run``): two training runs on a Gymnasium environment, JAX and PyTorch
  backends, stepped in lockstep; actions, transitions, losses, every parameter and
  evaluations compared at every step (``jax_td3.parity.run_level``); when they separate, a verdict:
  a bug (the separating step's update re-run from one state differs, or the loop does) or chaos.

``--mutant NAME`` compares against the reference with one bug of ``jax_td3.parity.mutants`` put in
(``--mutant list`` lists them). With ``--json`` standard output holds one JSON document and nothing
else (library chatter goes to stderr).

Exit status: 0 when every quantity is within tolerance, 1 when not, 2 on bad arguments,
130 when a whole run is interrupted (the report so far is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Sequence

from jax_td3.adapters import ADAPTERS
from jax_td3.cli.args import (
    CONFIG_FLAGS,
    UsageError,
    add_config_flags,
    flag,
    float_list,
    given,
    nonnegative_float,
    nonnegative_int,
    positive_int,
)
from jax_td3.cli.process import use_dtype
from jax_td3.config import ALGOS, CONFIGS, TD3Config, make_config
from jax_td3.errors import require_torch
from jax_td3.presets import DEFAULTS
from jax_td3.settings import BACKENDS

if TYPE_CHECKING:
    from jax_td3.parity.mutants import Mutant

DEFAULT_UPDATES = 1000
# A short run that still crosses everything a loop does: warm-up, the start of learning, episode ends
# (Pendulum truncates every 200 steps) and evaluations. Loop settings are the library's defaults
# except a shorter run with fewer evaluation episodes.
_RUN_CHANGES = dict(total_steps=5_000, eval_episodes=5)
RUN_DEFAULTS = dict(
    {name: _RUN_CHANGES.get(name, DEFAULTS[name]) for name in (
        "env", "total_steps", "learning_starts", "buffer_size", "expl_noise", "eval_every", "eval_episodes")},
    backend_a="jax", backend_b="torch", params_every=1)
# Flags of one mode that the other does not take (--backend-a/--backend-b apply to both).
UPDATE_ONLY_FLAGS = ("updates", "obs_dim", "act_dim", "max_action", "action_low", "action_high")
RUN_ONLY_FLAGS = tuple(name for name in RUN_DEFAULTS if not name.startswith("backend_")) + ("plot", "perturb")
# Updates a --mutant comparison runs by default: enough to pass the update where each bug first acts.
MUTANT_UPDATES = 10
# The update-level mode compares any two adapters; a whole run needs learner backends.
UPDATE_BACKENDS = tuple(ADAPTERS)
THIRD_PARTY_HELP = ("sb3 and sbx (the thirdparty extra: pip install 'jax-td3[thirdparty]') take the update-level "
                    "mode only, --algo td3 or ourddpg and only the box [-1, 1] (the default box of td3 and "
                    "ourddpg); other settings they cannot express are refused. sbx's update is ours with "
                    "--their-settings")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", choices=ALGOS, default="td3",
                        help="algorithm to compare (fasttd3: update level only, jax against torch)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="float64: tolerance 1e-10; float32: per-update comparison with justified tolerances "
                             "(--run: 1e-9 and 1e-3, see jax_td3.parity.run_level)")
    parser.add_argument("--updates", type=positive_int, default=None,
                        help=f"consecutive updates to compare (default {DEFAULT_UPDATES})")
    parser.add_argument("--max-action", type=float,
                        help="symmetric action box [-max_action, max_action] (default: the algorithm's, "
                             "[-1, 1] except seed-ddpg's [-2, 2])")
    parser.add_argument("--action-low", type=float_list, help="per-dimension lower bounds (asymmetric box)")
    parser.add_argument("--action-high", type=float_list, help="per-dimension upper bounds (asymmetric box)")
    parser.add_argument("--obs-dim", type=positive_int, default=None, help="observation size (default 3)")
    parser.add_argument("--act-dim", type=positive_int, default=None, help="action size (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of the shared draws")
    parser.add_argument("--tol", type=nonnegative_float, help="override every quantity's tolerance")
    parser.add_argument("--resync", choices=("auto", "on", "off"), default="auto",
                        help="copy the first backend's state into the second before each update "
                             "(auto: on for float32 only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--backend-a", choices=UPDATE_BACKENDS, default=None,
                        help="first implementation (default jax); its initial state is loaded into the second. "
                             "torch is the PyTorch reference (torch_ref). " + THIRD_PARTY_HELP)
    parser.add_argument("--backend-b", choices=UPDATE_BACKENDS, default=None,
                        help="second implementation (default torch); --run takes jax and torch only")
    parser.add_argument("--their-settings", action="store_true",
                        help="set the config options under which our update is the third-party backend's (sbx: "
                             "--critic-loss-scale 0.5 --target-update every_update --actor-q min) and say which; "
                             "without it, a comparison with Fujimoto's settings is expected to differ and a note "
                             "on stderr names the options")
    parser.add_argument("--mutant", metavar="NAME", default=None,
                        help="compare against the PyTorch reference with one bug of the catalogue put in "
                             "(jax_td3.parity.mutants), to see what that bug looks like in a report; 'list' "
                             "lists them. TD3 only; a loop bug (truncation-as-done) needs --run. Update level: "
                             f"--updates defaults to {MUTANT_UPDATES} (or the update the bug first acts at)")
    add_config_flags(parser)

    whole = parser.add_argument_group("whole-run mode (--run)")
    whole.add_argument("--run", action="store_true",
                       help="train with both backends in lockstep on --env and compare every step")
    whole.add_argument("--env", default=None, help=f"environment id (default {RUN_DEFAULTS['env']})")
    whole.add_argument("--total-steps", type=positive_int, default=None,
                       help=f"environment steps (default {RUN_DEFAULTS['total_steps']:,})")
    whole.add_argument("--learning-starts", type=nonnegative_int, default=None,
                       help=f"updates start once the buffer holds more than this many transitions "
                            f"(default {RUN_DEFAULTS['learning_starts']:,}); the steps before are uniformly random")
    whole.add_argument("--buffer-size", type=positive_int, default=None,
                       help=f"replay capacity (default {RUN_DEFAULTS['buffer_size']:,})")
    whole.add_argument("--expl-noise", type=float, default=None,
                       help=f"Gaussian exploration std, in units of the action scale "
                            f"(default {RUN_DEFAULTS['expl_noise']})")
    whole.add_argument("--eval-every", type=positive_int, default=None,
                       help=f"evaluate both policies every this many steps (default {RUN_DEFAULTS['eval_every']:,})")
    whole.add_argument("--eval-episodes", type=positive_int, default=None,
                       help=f"episodes per evaluation (default {RUN_DEFAULTS['eval_episodes']})")
    whole.add_argument("--params-every", type=positive_int, default=None,
                       help="compare the whole train state every this many steps (default 1: every step)")
    whole.add_argument("--plot", metavar="FILE", default=None,
                       help="write a PNG of the max relative difference per step (log scale)")
    whole.add_argument("--perturb", metavar="TENSOR", default=None,
                       help="start the second run with the first entry of this weight tensor (e.g. actor.l1.kernel) "
                            "one ulp higher; with --backend-b jax this shows how fast training alone amplifies "
                            "a rounding difference")
    whole.add_argument("--no-verdict", action="store_true",
                       help="when the runs separate, do not decide whether it is chaos or a bug (by default the "
                            "updates of the first separating step are re-run on both learners from one state; "
                            "for chaos, a one-ulp perturbation run of --backend-a measures the chaos horizon)")


def _check_seed_critic(args: argparse.Namespace) -> None:
    if args.critic_hidden and CONFIGS[args.algo].critic_arch == "seed" and len(args.critic_hidden) != 2:
        raise UsageError("seed-ddpg's critic takes two sizes: branch width, width after concatenation")


def config_from_args(args: argparse.Namespace) -> TD3Config:
    if args.max_action is not None and (args.action_low or args.action_high):
        raise UsageError("give either --max-action or --action-low/--action-high, not both")
    if bool(args.action_low) != bool(args.action_high):
        raise UsageError("--action-low and --action-high go together")
    act_dim = args.act_dim
    if args.action_low and act_dim is None:
        act_dim = len(args.action_low)
    if args.max_action is not None and args.max_action <= 0:
        raise UsageError(f"--max-action must be > 0, got {args.max_action}")
    _check_seed_critic(args)
    config = make_config(args.algo, obs_dim=args.obs_dim, act_dim=act_dim, max_action=args.max_action,
                         action_low=args.action_low, action_high=args.action_high, **given(args, CONFIG_FLAGS))
    loop_only = _given_flags(args, ("n_step", "std_min", "std_max")) if config.algo != "fasttd3" else []
    if config.algo != "fasttd3" and config.obs_normalization:   # the statistics live in the loop, not the update
        loop_only.append(flag("obs_normalization"))
    if loop_only:   # the TD3 family's replay, exploration and statistics: what an update-level comparison has none of
        verb = "belongs" if len(loop_only) == 1 else "belong"
        raise UsageError(f"{args.algo}: {', '.join(loop_only)} {verb} to the compiled training loop (jax-td3 "
                         f"train --compiled); an update-level comparison has no replay, exploration or "
                         f"observation statistics")
    return config


def _given_flags(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    return [flag(name) for name in given(args, names)]


def _spelled(settings: dict) -> str:
    return " ".join(f"{flag(name)} {value}" for name, value in settings.items())


def their_settings(args: argparse.Namespace, backends: Sequence[str]) -> dict:
    """The config options the backends' adapters declare (``config_settings``) that the command line
    did not set: ``{field: value}``. A conflict between two backends, or with a flag given, is a
    UsageError naming the option."""
    from jax_td3.adapters import adapter_settings

    wanted: dict = {}
    owner: dict = {}
    for name in backends:
        for field, value in adapter_settings(name).items():
            if field in wanted and wanted[field] != value:
                raise UsageError(f"--their-settings: {owner[field]} and {name} need different {flag(field)} "
                                 f"({wanted[field]} and {value})")
            wanted[field], owner[field] = value, name
    explicit = given(args, CONFIG_FLAGS)
    for field, value in wanted.items():
        if field in explicit and explicit[field] != value:
            raise UsageError(f"{flag(field)} {explicit[field]} contradicts --their-settings ({owner[field]} uses "
                             f"{flag(field)} {value})")
    return {field: value for field, value in wanted.items() if field not in explicit}


def _announce(args: argparse.Namespace, config: TD3Config, backends: Sequence[str], applied: dict) -> None:
    if args.their_settings:
        print(f"--their-settings: {_spelled(applied) or 'nothing to apply'}", file=sys.stderr)
    else:
        _note_differences(config, backends)


def _note_differences(config: TD3Config, backends: Sequence[str]) -> None:
    """One line on stderr per backend whose update is ours only under settings this config does not have."""
    from jax_td3.adapters import settings_differences

    for name in backends:
        if differ := settings_differences(name, config):
            print(f"note: {name}'s update is ours with {_spelled(differ)}; this comparison runs "
                  f"{', '.join(f'{flag(f)} {getattr(config, f)}' for f in differ)}, so it is expected to differ "
                  f"(--their-settings applies them)", file=sys.stderr)


def _one_torch_thread(backends: Sequence[str]) -> None:
    """PyTorch on one thread: the networks compared are small, and one thread is faster and immune to
    oversubscription. A side that is the PyTorch reference needs PyTorch (one-line error when missing);
    the third-party sides say so themselves (their extra installs PyTorch)."""
    if "torch" in backends:
        require_torch("parity against the PyTorch reference")
    try:
        import torch
    except ImportError:
        return   # no side runs PyTorch
    torch.set_num_threads(1)


def list_mutants(args: argparse.Namespace) -> int:
    """``--mutant list``: the catalogue, one bug a line (or one JSON list)."""
    from jax_td3.parity import mutants

    if args.json:
        print(json.dumps([{"name": m.name, "level": m.level, "origin": m.origin, "description": m.description,
                           "quantity": m.quantity, "algo": m.algo,
                           "config_changes": sorted(f for f, _ in m.config_changes)}
                          for m in mutants.CATALOGUE]), file=args.stdout)
        return 0
    width = max(len(m.name) for m in mutants.CATALOGUE)
    for m in mutants.CATALOGUE:
        where = "whole run only" if m.level == "run" else f"first shows as {m.quantity}"
        where = where if m.algo == "td3" else f"--algo {m.algo}; {where}"
        print(f"{m.name:<{width}}  {m.description} [{where}]\n{'':<{width}}  origin: {m.origin}", file=args.stdout)
    return 0


def _mutant(args: argparse.Namespace, mode: str) -> Mutant | None:
    """The catalogue entry of ``--mutant`` (None without it), checked against the other flags."""
    if args.mutant is None:
        return None
    from jax_td3.parity import mutants

    mutant = mutants.get(args.mutant)
    if args.algo != mutant.algo:
        raise UsageError(f"--mutant {mutant.name} is a bug of {mutant.algo}'s reference: give --algo {mutant.algo}")
    if mode == "update" and mutant.level == "run":
        raise UsageError(f"--mutant {mutant.name} is a bug of the training loop: it shows in a whole run (--run)")
    if mode == "update" and (args.backend_a or args.backend_b):
        raise UsageError("--mutant compares our JAX update with the reference carrying the bug: no --backend-a/-b")
    if mode == "run" and (args.backend_b or "torch") != "torch":
        raise UsageError("--mutant puts the bug into the PyTorch reference: --backend-b must be torch")
    return mutant


def run(args: argparse.Namespace) -> int:
    from jax_td3.cli.output import stdout_to_stderr

    # With --json, standard output carries the one JSON document and nothing else: what libraries print
    # meanwhile (PyBullet's argv[0]= lines) goes to stderr; results are printed to ``args.stdout``.
    with stdout_to_stderr(args.json) as stdout:
        args.stdout = stdout
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.mutant == "list":
        return list_mutants(args)
    if args.run:
        if args.algo == "fasttd3":
            raise UsageError("--run: whole-run parity of fasttd3 is not available (its n-step replay and "
                             "per-environment exploration are not in the run-level engine); compare its updates "
                             "without --run")
        return run_whole(args)
    extra = _given_flags(args, RUN_ONLY_FLAGS) + (["--no-verdict"] if args.no_verdict else [])
    if extra:
        raise UsageError(f"{', '.join(extra)} only apply with --run")
    mutant = _mutant(args, "update")
    if mutant is not None:
        return run_mutant(args, mutant)
    backends = (args.backend_a or RUN_DEFAULTS["backend_a"], args.backend_b or RUN_DEFAULTS["backend_b"])
    applied = their_settings(args, backends) if args.their_settings else {}
    for field, value in applied.items():
        setattr(args, field, value)
    config = config_from_args(args)
    _one_torch_thread(backends)
    use_dtype(args.dtype)
    from jax_td3.parity import run_parity

    resync = {"auto": None, "on": True, "off": False}[args.resync]
    options: dict[str, Any] = dict(dtype=args.dtype, updates=args.updates or DEFAULT_UPDATES, seed=args.seed,
                                   tol=args.tol, resync=resync, progress=not args.json and sys.stderr.isatty())
    if backends == ("jax", "torch"):
        _announce(args, config, backends, applied)
        report = run_parity(config, **options)
    else:
        from jax_td3.adapters import make_adapter
        from jax_td3.parity.update_level import compare_adapters

        a, b = (make_adapter(name, config, args.dtype, seed=args.seed) for name in backends)
        _announce(args, config, backends, applied)   # after a refusal could have been raised
        report = compare_adapters(a, b, config, **options)
    if backends == ("jax", "torch"):   # today's output, unchanged
        print(report.to_json() if args.json else report.table(), file=args.stdout)
    elif args.json:
        print(json.dumps(dict(report.to_dict(), backends=list(report.backends))), file=args.stdout)
    else:
        print(report.table() + f" ({' vs '.join(report.backends)})", file=args.stdout)
    return 0 if report.passed else 1


def run_mutant(args: argparse.Namespace, mutant: Mutant) -> int:
    """``--mutant NAME``: our update against the reference with the bug; says where the bug should show."""
    _one_torch_thread(("torch",))
    use_dtype(args.dtype)
    from jax_td3.parity import run_parity

    config = mutant.config(config_from_args(args))
    in_float64 = mutant.expect(config, args.seed, "float64")
    assert in_float64 is not None   # float64 finds every update-level bug of the catalogue
    quantity, update = in_float64
    expected = mutant.expect(config, args.seed, args.dtype)
    resync = {"auto": None, "on": True, "off": False}[args.resync]
    updates = args.updates or max(MUTANT_UPDATES, update)
    changes = "".join(f" {flag(field)} {getattr(config, field)}" for field, _ in mutant.config_changes)
    print(f"mutant {mutant.name}: {mutant.description} (origin: {mutant.origin}){changes}", file=sys.stderr)
    report = run_parity(config, dtype=args.dtype, updates=updates, seed=args.seed, tol=args.tol, resync=resync,
                        agent=mutant.agent(config, args.dtype), progress=not args.json and sys.stderr.isatty())
    report.mutant = mutant.name
    if args.json:
        print(json.dumps(dict(report.to_dict(), expected={"quantity": expected[0], "update": expected[1]}
                              if expected else None)), file=args.stdout)
    else:
        where = (f"{expected[0]} at update {expected[1]}" if expected else
                 f"nothing in {args.dtype} (too small for its tolerances; float64 shows {quantity} at update {update})")
        print(report.table() + f" (against mutant {mutant.name}; the catalogue expects {where})", file=args.stdout)
    return 0 if report.passed else 1


def run_whole(args: argparse.Namespace) -> int:
    """``--run``: both backends train on the environment in lockstep (``jax_td3.parity.run_level``)."""
    if extra := _given_flags(args, UPDATE_ONLY_FLAGS):
        raise UsageError(f"{', '.join(extra)} do not apply with --run (the environment sets the sizes and box)")
    if args.resync != "auto":
        raise UsageError("--resync applies to the update-level mode only (a whole run cannot be re-synchronised)")
    if args.their_settings:
        raise UsageError("--their-settings applies to the update-level mode only (--run takes jax and torch)")
    _check_seed_critic(args)
    for option, backend in (("--backend-a", args.backend_a), ("--backend-b", args.backend_b)):
        if backend is not None and backend not in BACKENDS:
            raise UsageError(f"{option} {backend} applies to the update-level mode only; --run trains with "
                             f"learner backends: {', '.join(BACKENDS)}")
    mutant = _mutant(args, "run")
    opts = {name: getattr(args, name) if getattr(args, name) is not None else default
            for name, default in RUN_DEFAULTS.items()}
    if args.plot:
        _check_writable(args.plot)
    _one_torch_thread((opts["backend_a"], opts["backend_b"]))
    use_dtype(args.dtype)
    from jax_td3.config import config_for_env
    from jax_td3.envs import env_spec, make_env
    from jax_td3.parity import UnknownTensorError, plot_drift, run_whole_parity
    from jax_td3.presets import resolve
    from jax_td3.settings import settings_from_values

    env = make_env(opts["env"])
    try:
        spec = env_spec(env)
    finally:
        env.close()
    config = config_for_env(args.algo, spec, **given(args, CONFIG_FLAGS))
    run_settings = {name: opts[name] for name in ("env", "total_steps", "learning_starts", "buffer_size",
                                                  "expl_noise", "eval_every", "eval_episodes")}
    # The rest (exploration noise by algorithm included) as `jax-td3 train` would set it.
    settings = settings_from_values(resolve(dict(run_settings, algo=args.algo, seed=args.seed, dtype=args.dtype),
                                            None)).validate()
    try:
        report = run_whole_parity(config, settings, backends=(opts["backend_a"], opts["backend_b"]), tol=args.tol,
                                  params_every=opts["params_every"], perturb=args.perturb,
                                  progress=not args.json and sys.stderr.isatty(), verdict=not args.no_verdict,
                                  mutant=mutant.name if mutant else None)
    except UnknownTensorError as err:
        raise UsageError(f"--perturb: {err}") from None
    print(report.to_json() if args.json else report.table(), file=args.stdout)
    if args.plot:
        plot_drift(report, args.plot)
        if not args.json:
            print(f"plot: {args.plot}", file=args.stdout)
    if report.interrupted:
        return 130
    return 0 if report.passed else 1


def _check_writable(path: str) -> None:
    """Fail before a long run, not after it, when the plot cannot be written."""
    from jax_td3.run.checks import ensure_writable_file

    ensure_writable_file(path, "plot")
