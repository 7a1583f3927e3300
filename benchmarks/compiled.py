"""Benchmarks of the compiled and scan-fused paths (run each under the shared heavy-job lock).

    python benchmarks/compiled.py native [--rejax-python REJAX_VENV/bin/python]
        TD3 on the JAX-native Pendulum, hidden 64-64, batch 100, 10,000 steps, one seed,
        the whole run compiled: seconds after compilation (median of --repeats runs of the
        compiled program), compile seconds, final evaluation return; with --rejax-python,
        Rejax's TD3 on the same settings in the same session (benchmarks/compiled_rejax.py).
    python benchmarks/compiled.py seeds --num-seeds 1,8,64
        The same run with K seeds vmapped in one program: wall time and updates/s per K.
    python benchmarks/compiled.py update-speed
        The 256-256, batch-256 TD3 update alone: 10,000 updates in one ``multi_update``
        scan, per XLA flag setting (each in a subprocess), as GFLOP/s against 0.39 GFLOP/update.
    python benchmarks/compiled.py gymnasium --updates-per-call 1,100 [--rounds 2 --baseline-command CMD]
        TD3 on Gymnasium Pendulum-v1 through the training loop (``jax_td3.loops.host``): 256-256,
        batch 256, 12,000 steps, 10,000 updates (learning_starts 2,000), per-step and with K
        updates per compiled call; with --baseline-command, an outside implementation of the
        same work (e.g. CleanRL's TD3 JAX script) alternating with ours in the same job.

Each writes ``benchmarks/results/compiled_<name>.json`` (with the machine load) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
UPDATE_GFLOP = 0.39  # one 256-256 batch-256 TD3 update (issue #4's count), for the GFLOP/s figures


def machine() -> dict:
    import jax

    return {"load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS", "")}


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"compiled_{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"written: {path}")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


# -- native: the whole run compiled -----------------------------------------------------

def native_settings(args):
    from jax_td3.loops.compiled import LoopSettings
    from jax_td3.config import make_config

    config = make_config("td3", hidden=(64, 64), batch_size=100, max_action=2.0,
                         actor_lr=args.learning_rate, critic_lr=args.learning_rate)
    settings = LoopSettings(total_steps=args.total_steps, learning_starts=args.learning_starts,
                            eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                            buffer_size=args.total_steps, expl_noise=0.1)
    return config, settings


def time_compiled_run(config, settings, seeds, repeats: int) -> dict:
    """Compile once, then run the compiled program ``repeats`` times (same inputs, same results)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jax_td3 import xla_options
    from jax_td3.envs.pendulum import PendulumEnv
    from jax_td3.loops import compiled
    from jax_td3.loops.agents import agent_mesh

    seeds = np.asarray(seeds, np.int32)
    mesh = agent_mesh(len(seeds))
    hparams = compiled.batch_hyperparameters(config, settings, len(seeds), np.float32)
    program = compiled.make_program(config, settings, PendulumEnv(), jnp.float32, mesh)
    start = time.perf_counter()
    executable = program.lower(hparams, seeds).compile(xla_options.compiler_options())
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        agents, returns = jax.block_until_ready(executable(hparams, seeds))
        times.append(time.perf_counter() - start)
    returns = np.asarray(returns)
    return {"compile_seconds": round(compile_seconds, 3), "run_seconds": round(float(np.median(times)), 3),
            "run_seconds_all": [round(t, 3) for t in times],
            "eval_steps": compiled.eval_steps(settings).tolist(),
            "eval_return_curve": returns.mean(axis=2).mean(axis=0).tolist(),
            "final_eval_return_per_seed": returns[:, -1].mean(axis=1).tolist(),
            "final_eval_return_mean": float(returns[:, -1].mean()),
            "updates_per_second": round(len(seeds) * settings.updates / float(np.median(times)), 1)}


def run_native(args) -> None:
    config, settings = native_settings(args)
    ours = time_compiled_run(config, settings, [args.seed], args.repeats)
    result = {"benchmark": "TD3, JAX-native Pendulum-v1, 64-64, batch 100, 1 seed, whole run compiled",
              "settings": {"total_steps": settings.total_steps, "learning_starts": settings.learning_starts,
                           "eval_every": settings.eval_every, "eval_episodes": settings.eval_episodes,
                           "learning_rate": args.learning_rate, "expl_noise": settings.expl_noise,
                           "seed": args.seed, "repeats": args.repeats},
              "jax_td3": ours, "machine": machine()}
    if args.rejax_python:
        command = [args.rejax_python, str(Path(__file__).with_name("compiled_rejax.py")),
                   "--total-steps", str(settings.total_steps), "--learning-starts", str(settings.learning_starts),
                   "--eval-every", str(settings.eval_every), "--eval-episodes", str(settings.eval_episodes),
                   "--learning-rate", str(args.learning_rate), "--seed", str(args.seed),
                   "--repeats", str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            result["rejax"] = {"error": done.stderr[-2000:]}
        else:
            rejax = json.loads(done.stdout.strip().splitlines()[-1])
            result["rejax"] = rejax
            result["speedup_vs_rejax"] = round(rejax["run_seconds"] / ours["run_seconds"], 2)
    result["machine_after"] = {"load_average": os.getloadavg()}
    save("native", result)


def run_seeds(args) -> None:
    config, settings = native_settings(args)
    rows = {}
    for k in args.num_seeds:
        rows[str(k)] = time_compiled_run(config, settings, list(range(args.seed, args.seed + k)), args.repeats)
    base = rows[str(args.num_seeds[0])]["run_seconds"]
    for row in rows.values():
        row["time_ratio_to_first"] = round(row["run_seconds"] / base, 2)
    save("seeds", {"benchmark": "K seeds vmapped in one compiled program (settings of `native`)",
                   "by_num_seeds": rows, "machine": machine()})


# -- update-speed: the 256-256 update alone, per XLA flag setting ------------------------

UPDATE_FLAG_SETS = {
    "default": "",
    "no_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    # Library fusions of this XLA version (jaxlib's flag list): dots (and elementwise ops)
    # handed to XNNPACK, YNNPACK or oneDNN instead of XLA's own Eigen-based matmul.
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "xnn_dot_eltwise": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "onednn_fusion_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
}


def time_updates(num_updates: int, repeats: int, donate: bool) -> dict:
    """Seconds for ``num_updates`` (sample, update) steps of 256-256 TD3 in one compiled scan."""
    import jax
    import numpy as np

    from jax_td3 import xla_options
    from jax_td3.config import make_config
    from jax_td3.replay import Batch, multi_update, replay_add, replay_init
    from jax_td3.update import init_train_state

    config = make_config("td3", hidden=(256, 256), batch_size=256, max_action=2.0)
    state = init_train_state(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    n = 12_000
    replay = replay_add(replay_init(n, 3, 1), Batch(
        rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        rng.normal(size=(n, 3)).astype(np.float32), -rng.uniform(0, 16, (n, 1)).astype(np.float32),
        np.ones((n, 1), np.float32)))
    step = jax.jit(lambda s, r, k: multi_update(config, s, r, k, num_updates)[0],
                   donate_argnums=(0,) if donate else ())
    start = time.perf_counter()
    step = step.lower(state, replay, jax.random.key(1)).compile(xla_options.compiler_options())
    compile_seconds = time.perf_counter() - start
    times = []
    for i in range(repeats):
        fresh = jax.tree_util.tree_map(lambda x: x.copy(), state)
        start = time.perf_counter()
        jax.block_until_ready(step(fresh, replay, jax.random.key(i)))
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {"num_updates": num_updates, "seconds": round(seconds, 3), "seconds_all": [round(t, 3) for t in times],
            "updates_per_second": round(num_updates / seconds, 1),
            "gflop_per_second": round(num_updates * UPDATE_GFLOP / seconds, 1),
            "compile_seconds": round(compile_seconds, 2)}


def run_update_speed(args) -> None:
    if args.worker:
        print(json.dumps(time_updates(args.num_updates, args.repeats, args.donate)))
        return
    rows = []  # flag sets alternate (A, B, A, B ...) so that a change of machine load hits all of them
    for _ in range(args.rounds):
        for name in args.flag_sets:
            env = dict(os.environ, XLA_FLAGS=UPDATE_FLAG_SETS[name])
            command = [sys.executable, __file__, "update-speed", "--worker", "--num-updates", str(args.num_updates),
                       "--repeats", str(args.repeats)] + (["--donate"] if args.donate else [])
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                   else {"error": done.stderr[-1500:]})
            row.update(flag_set=name, xla_flags=UPDATE_FLAG_SETS[name], load_average=os.getloadavg())
            rows.append(row)
            print(row, flush=True)
    best = {name: min(r["seconds"] for r in rows if r["flag_set"] == name and "seconds" in r)
            for name in args.flag_sets}
    floor = args.num_updates * UPDATE_GFLOP / 150.0
    save("update_speed", {"benchmark": "TD3 256-256 batch 256: updates in one multi_update scan (sample + update)",
                          "compute_floor_seconds_at_150_gflops": round(floor, 1),
                          "best_seconds_by_flag_set": best, "runs": rows, "machine": machine()})


# -- gymnasium: the training loop on Gymnasium's Pendulum --------------------------------

def _gymnasium_run(args, k: int) -> dict:
    from jax_td3.envs import env_spec, make_env
    from jax_td3.config import config_for_env
    from jax_td3.loops.host import Trainer
    from jax_td3.settings import TrainSettings

    settings = TrainSettings(env="Pendulum-v1", total_steps=args.total_steps, learning_starts=args.learning_starts,
                             eval_every=args.total_steps, eval_episodes=1, updates_per_call=k,
                             seed=args.seed).validate()
    env = make_env(settings.env)
    config = config_for_env("td3", env_spec(env), hidden=(256, 256), batch_size=256)
    trainer = Trainer(config, settings, env=env)
    start = time.perf_counter()
    while not trainer.done:
        trainer.step()
    seconds = time.perf_counter() - start
    final = trainer.evaluate(10)
    trainer.close()
    return {"seconds": round(seconds, 2), "updates": trainer.updates, "env_steps": trainer.env_steps,
            "final_eval_return": final["eval_return_mean"], "load_average": os.getloadavg()}


def _baseline_run(command: str) -> dict:
    """Run an outside script (e.g. CleanRL's TD3 JAX script); its last stdout line is a JSON object
    with ``loop_seconds`` (and whatever else it reports)."""
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load_average"] = os.getloadavg()
    return row


def run_gymnasium(args) -> None:
    runs = {str(k): [] for k in args.updates_per_call}
    baseline = []
    for _ in range(args.rounds):  # ours and the baseline alternate, so load changes hit both
        for k in args.updates_per_call:
            runs[str(k)].append(_gymnasium_run(args, k))
            print(k, runs[str(k)][-1], flush=True)
        if args.baseline_command:
            baseline.append(_baseline_run(args.baseline_command))
            print("baseline", baseline[-1], flush=True)
    reference = None
    if baseline and all("loop_seconds" in row for row in baseline):
        reference = min(row["loop_seconds"] for row in baseline)
    rows = {}
    for k, done in runs.items():
        best = min(row["seconds"] for row in done)
        rows[k] = {"seconds": best, "seconds_all": [row["seconds"] for row in done],
                   "updates": done[0]["updates"], "env_steps": done[0]["env_steps"],
                   "final_eval_return": done[0]["final_eval_return"],
                   "speedup_vs_cleanrl_67s": round(67.0 / best, 2)}
        if reference is not None:
            rows[k]["speedup_vs_baseline_same_job"] = round(reference / best, 2)
    result = {"benchmark": "TD3 on Gymnasium Pendulum-v1, 256-256, batch 256, 12,000 steps, 10,000 updates",
              "note": "wall seconds of Trainer.step() over the run (includes compilation of the update), "
                      "final evaluation (10 episodes) excluded; best of --rounds; CleanRL's "
                      "td3_continuous_action_jax took 67 s in issue #4",
              "by_updates_per_call": rows, "runs": runs, "machine": machine(), "machine_after": os.getloadavg()}
    if args.baseline_command:
        result["baseline"] = {"command": args.baseline_label or "(outside script)", "runs": baseline,
                              "loop_seconds_best": reference}
    save("gymnasium" + (f"_{args.label}" if args.label else ""), result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("native", "seeds"):
        p = sub.add_parser(name)
        p.add_argument("--total-steps", type=int, default=10_000)
        p.add_argument("--learning-starts", type=int, default=1_000)
        p.add_argument("--eval-every", type=int, default=5_000)
        p.add_argument("--eval-episodes", type=int, default=10)
        p.add_argument("--learning-rate", type=float, default=1e-3, help="actor and critic Adam learning rate")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--repeats", type=int, default=3)
    sub.choices["native"].add_argument("--rejax-python", default=None,
                                       help="python of a virtualenv with rejax installed, to compare in this session")
    sub.choices["seeds"].add_argument("--num-seeds", type=int_list, default=[1, 8, 64])
    p = sub.add_parser("update-speed")
    p.add_argument("--num-updates", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--donate", action="store_true", help="donate the train state to the jitted call")
    p.add_argument("--flag-sets", type=lambda s: s.split(","), default=list(UPDATE_FLAG_SETS))
    p.add_argument("--rounds", type=int, default=2, help="times to go through the flag sets, alternating")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("gymnasium")
    p.add_argument("--total-steps", type=int, default=12_000)
    p.add_argument("--learning-starts", type=int, default=2_000)
    p.add_argument("--updates-per-call", type=int_list, default=[1, 1000])
    p.add_argument("--label", default="", help="suffix of the results file (e.g. the XLA flags used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="runs of each setting (and of the baseline), alternating")
    p.add_argument("--baseline-command", default=None,
                   help="shell command of an outside implementation doing the same work, run after each round; "
                        "its last stdout line must be a JSON object with loop_seconds")
    p.add_argument("--baseline-label", default=None, help="how the results file names the baseline command")
    args = parser.parse_args()
    {"native": run_native, "seeds": run_seeds, "update-speed": run_update_speed,
     "gymnasium": run_gymnasium}[args.command](args)


if __name__ == "__main__":
    main()
