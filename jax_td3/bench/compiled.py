"""Benchmarks of the compiled and scan-fused paths (run each under the shared heavy-job lock).

- ``native``: TD3 on the JAX-native Pendulum, hidden 64-64, batch 100, 10,000 steps, one
  seed, the whole run compiled (``loops.compiled.ChunkedRun``, one call per evaluation period): seconds
  after compilation (median of ``repeats`` runs of the compiled programs), compile seconds, the
  evaluation curve; optionally Rejax's TD3 on the same settings in the same session
  (``benchmarks/compiled_rejax.py``, run with the Python of a Rejax virtualenv).
- ``seeds``: the same run with K seeds vmapped together: wall time and updates/s per K.
- ``update_speed``: the 256-256, batch-256 TD3 update alone: N updates in one
  ``replay.multi_update`` scan, per XLA flag setting (each in a subprocess), as GFLOP/s
  against 0.39 GFLOP/update.
- ``gymnasium``: TD3 on Gymnasium Pendulum-v1 through the host loop (``loops.host.Trainer``):
  256-256, batch 256, 12,000 steps, 10,000 updates (learning_starts 2,000), per step and
  with K updates per compiled call; optionally an outside implementation of the same work
  (e.g. CleanRL's TD3 JAX script) alternating with ours in the same job.

- ``brax_scaling``: TD3 on a Brax task (default brax:halfcheetah, the brax extra) with N environments per
  agent and K agents vmapped: transitions and updates per second (``BraxScalingRun``); the script
  ``benchmarks/compiled_brax.py`` runs it, with the chunking cost and the comparison with Rejax.

Each returns its results as a dict (with the machine and its load); ``jax-td3 bench compiled``
writes it to ``compiled_<name>.json``. Nothing here imports JAX, Gymnasium or PyBullet at import time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from jax_td3.bench.machine import load_average, machine_info
from jax_td3.errors import ConfigError

if TYPE_CHECKING:
    from jax_td3.config import TD3Config
    from jax_td3.loops.compiled import LoopSettings

UPDATE_GFLOP = 0.39  # one 256-256 batch-256 TD3 update (issue #4's count), for the GFLOP/s figures
CLEANRL_SECONDS = 67.0  # CleanRL's td3_continuous_action_jax on the gymnasium benchmark's work, issue #4


def _last_json_line(done: subprocess.CompletedProcess) -> dict:
    """The JSON object a worker printed last, or its error (the tail of its stderr)."""
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- native, seeds: the whole run compiled ------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NativeRun:
    """TD3 on the JAX-native Pendulum, 64-64, batch 100, one update per step after ``learning_starts``."""

    total_steps: int = 10_000
    learning_starts: int = 1_000
    eval_every: int = 5_000
    eval_episodes: int = 10
    learning_rate: float = 1e-3
    """Adam learning rate of actor and critic."""
    seed: int = 0
    repeats: int = 3
    """Timed runs of the compiled program; the median is reported."""

    def config_and_settings(self) -> tuple[TD3Config, LoopSettings]:
        """The algorithm config and the compiled loop's settings; ConfigError for a bad value."""
        from jax_td3.config import config_for_env
        from jax_td3.envs.pendulum import PendulumEnv
        from jax_td3.loops.compiled import compiled_settings
        from jax_td3.settings import TrainSettings

        if self.repeats <= 0:
            raise ConfigError(f"`repeats` must be positive, got {self.repeats}")
        config = config_for_env("td3", PendulumEnv.spec, hidden=(64, 64), batch_size=100,
                                actor_lr=self.learning_rate, critic_lr=self.learning_rate)
        settings = compiled_settings(TrainSettings(
            env=PendulumEnv.spec.env_id, total_steps=self.total_steps, learning_starts=self.learning_starts,
            eval_every=self.eval_every, eval_episodes=self.eval_episodes, buffer_size=self.total_steps,
            expl_noise=0.1, seed=self.seed).validate())
        return config, settings

    def rejax_flags(self) -> list[str]:
        """The same work as flags of ``benchmarks/compiled_rejax.py``."""
        return ["--total-steps", str(self.total_steps), "--learning-starts", str(self.learning_starts),
                "--eval-every", str(self.eval_every), "--eval-episodes", str(self.eval_episodes),
                "--learning-rate", str(self.learning_rate), "--seed", str(self.seed), "--repeats", str(self.repeats)]


def time_compiled_run(config: TD3Config, settings: LoopSettings, seeds: Sequence[int], repeats: int) -> dict:
    """Compile once, then run the compiled run ``repeats`` times (same inputs, same results)."""
    import numpy as np

    from jax_td3.bench.timing import repeat_timed
    from jax_td3.envs.pendulum import PendulumEnv
    from jax_td3.loops import compiled

    run = compiled.ChunkedRun(config, settings, seeds, env=PendulumEnv())
    run.compile_ahead()
    result, times = repeat_timed(run.run, repeats)   # a last chunk of another size compiles in the first
    returns = result.eval_returns
    seconds = float(np.median(times))
    return {"compile_seconds": round(run.compile_seconds, 3), "run_seconds": round(seconds, 3),
            "run_seconds_all": [round(t, 3) for t in times],
            "eval_steps": result.eval_steps.tolist(),
            "eval_return_curve": returns.mean(axis=2).mean(axis=0).tolist(),
            "final_eval_return_per_seed": returns[:, -1].mean(axis=1).tolist(),
            "final_eval_return_mean": float(returns[:, -1].mean()),
            "updates_per_second": round(len(seeds) * settings.updates / seconds, 1)}


def native(run: NativeRun, rejax_python: str | None = None, rejax_script: Path | None = None) -> dict:
    """One seed, whole run compiled; with ``rejax_python``, Rejax on the same settings right after."""
    config, settings = run.config_and_settings()
    if rejax_python and not rejax_script:
        raise ConfigError("`rejax_python` needs `rejax_script` (benchmarks/compiled_rejax.py)")
    ours = time_compiled_run(config, settings, [run.seed], run.repeats)
    result = {"benchmark": "TD3, JAX-native Pendulum-v1, 64-64, batch 100, 1 seed, whole run compiled",
              "settings": {"total_steps": settings.total_steps, "learning_starts": settings.learning_starts,
                           "eval_every": settings.eval_every, "eval_episodes": settings.eval_episodes,
                           "learning_rate": run.learning_rate, "expl_noise": settings.expl_noise,
                           "seed": run.seed, "repeats": run.repeats},
              "jax_td3": ours, "machine": machine_info()}
    if rejax_python:
        done = subprocess.run([rejax_python, str(rejax_script), *run.rejax_flags()], capture_output=True, text=True)
        rejax = _last_json_line(done)
        result["rejax"] = rejax
        if "run_seconds" in rejax:
            result["speedup_vs_rejax"] = round(rejax["run_seconds"] / ours["run_seconds"], 2)
    result["machine_after"] = {"load_average": load_average()}
    return result


SEED_COUNTS = (1, 8, 64)


def seeds(run: NativeRun, num_seeds: Sequence[int] = SEED_COUNTS) -> dict:
    """The native run with K = each of ``num_seeds`` seeds vmapped together (seeds run.seed ...)."""
    if not num_seeds or min(num_seeds) <= 0:
        raise ConfigError(f"`num_seeds` must be positive counts, got {list(num_seeds)}")
    config, settings = run.config_and_settings()
    rows = {}
    for k in num_seeds:
        rows[str(k)] = time_compiled_run(config, settings, list(range(run.seed, run.seed + k)), run.repeats)
    base = rows[str(num_seeds[0])]["run_seconds"]
    for row in rows.values():
        row["time_ratio_to_first"] = round(row["run_seconds"] / base, 2)
    return {"benchmark": "K seeds vmapped in one compiled program (settings of `native`)",
            "by_num_seeds": rows, "machine": machine_info()}


# -- update_speed: the 256-256 update alone, per XLA flag setting ------------------------

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
    from jax_td3.bench.replay_data import device_replay, random_transitions
    from jax_td3.bench.timing import timed
    from jax_td3.config import make_config
    from jax_td3.replay import multi_update
    from jax_td3.update import init_train_state

    config = make_config("td3", hidden=(256, 256), batch_size=256, max_action=2.0)   # Pendulum's sizes
    state = init_train_state(config, jax.random.key(0))
    replay = device_replay(random_transitions(config, 12_000, seed=0))
    step = jax.jit(lambda s, r, k: multi_update(config, s, r, k, num_updates)[0],
                   donate_argnums=(0,) if donate else ())
    executable, compile_seconds = timed(lambda: step.lower(state, replay, jax.random.key(1))
                                        .compile(xla_options.compiler_options()))
    times = []
    for i in range(repeats):
        fresh = jax.tree_util.tree_map(lambda x: x.copy(), state)   # a donated state is gone after the call
        times.append(timed(lambda: jax.block_until_ready(executable(fresh, replay, jax.random.key(i))))[1])
    seconds = float(np.median(times))
    return {"num_updates": num_updates, "seconds": round(seconds, 3), "seconds_all": [round(t, 3) for t in times],
            "updates_per_second": round(num_updates / seconds, 1),
            "gflop_per_second": round(num_updates * UPDATE_GFLOP / seconds, 1),
            "compile_seconds": round(compile_seconds, 2)}


@dataclasses.dataclass(frozen=True)
class UpdateSpeedRun:
    """The 256-256 batch-256 TD3 update alone: ``num_updates`` in one scan, per XLA flag set."""

    num_updates: int = 10_000
    repeats: int = 2
    """Timed calls per flag set and round; the median is reported."""
    donate: bool = False
    """Donate the train state to the jitted call."""
    flag_sets: tuple[str, ...] = tuple(UPDATE_FLAG_SETS)
    rounds: int = 2
    """Times to go through the flag sets, alternating."""


def update_speed(run: UpdateSpeedRun, announce: Callable[[str], None] | None = None) -> dict:
    """``time_updates`` under each XLA flag set, each in a fresh process (XLA reads its flags once)."""
    unknown = [name for name in run.flag_sets if name not in UPDATE_FLAG_SETS]
    if unknown or not run.flag_sets:
        raise ConfigError(f"unknown `flag_sets` {', '.join(unknown)}; choose from {', '.join(UPDATE_FLAG_SETS)}")
    if min(run.num_updates, run.repeats, run.rounds) <= 0:
        raise ConfigError("`num_updates`, `repeats` and `rounds` must be positive")
    announce = announce or (lambda message: None)
    # Each worker is a fresh interpreter (XLA reads XLA_FLAGS once per process); its last stdout line is the result.
    worker = ("import json; from jax_td3.bench.compiled import time_updates; "
              f"print(json.dumps(time_updates({run.num_updates}, {run.repeats}, {run.donate})))")
    rows = []  # flag sets alternate (A, B, A, B ...) so that a change of machine load hits all of them
    for _ in range(run.rounds):
        for name in run.flag_sets:
            env = dict(os.environ, XLA_FLAGS=UPDATE_FLAG_SETS[name])
            row = _last_json_line(subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True,
                                                 text=True))
            row.update(flag_set=name, xla_flags=UPDATE_FLAG_SETS[name], load_average=load_average())
            rows.append(row)
            announce(json.dumps(row))
    best = {name: min((r["seconds"] for r in rows if r["flag_set"] == name and "seconds" in r), default=None)
            for name in run.flag_sets}
    floor = run.num_updates * UPDATE_GFLOP / 150.0
    return {"benchmark": "TD3 256-256 batch 256: updates in one multi_update scan (sample + update)",
            "compute_floor_seconds_at_150_gflops": round(floor, 1),
            "best_seconds_by_flag_set": best, "runs": rows, "machine": machine_info()}


# -- gymnasium: the training loop on Gymnasium's Pendulum --------------------------------

@dataclasses.dataclass(frozen=True)
class GymnasiumRun:
    """TD3 on Gymnasium Pendulum-v1, 256-256, batch 256, through ``loops.host.Trainer``."""

    total_steps: int = 12_000
    learning_starts: int = 2_000
    updates_per_call: tuple[int, ...] = (1, 1000)
    """Each K is timed: K environment steps, then K updates in one compiled call."""
    seed: int = 0
    rounds: int = 1
    """Runs of each K (and of the baseline), alternating; the best is reported."""


def _gymnasium_once(run: GymnasiumRun, k: int) -> dict:
    from jax_td3.bench.timing import timed
    from jax_td3.config import config_for_env
    from jax_td3.envs import env_spec, make_env
    from jax_td3.loops.host import Trainer
    from jax_td3.settings import TrainSettings

    settings = TrainSettings(env="Pendulum-v1", total_steps=run.total_steps, learning_starts=run.learning_starts,
                             eval_every=run.total_steps, eval_episodes=1, updates_per_call=k,
                             seed=run.seed).validate()
    env = make_env(settings.env)
    config = config_for_env("td3", env_spec(env), hidden=(256, 256), batch_size=256)
    trainer = Trainer(config, settings, env=env)

    def train() -> None:
        while not trainer.done:
            trainer.step()
    _, seconds = timed(train)
    final = trainer.evaluate(10)
    trainer.close()
    return {"seconds": round(seconds, 2), "updates": trainer.updates, "env_steps": trainer.env_steps,
            "final_eval_return": final["eval_return_mean"], "load_average": load_average()}


def _baseline_once(command: str) -> dict:
    """Run an outside script (e.g. CleanRL's TD3 JAX script); its last stdout line is a JSON object
    with ``loop_seconds`` (and whatever else it reports)."""
    row = _last_json_line(subprocess.run(command, shell=True, capture_output=True, text=True))
    row["load_average"] = load_average()
    return row


def gymnasium(run: GymnasiumRun, baseline_command: str | None = None, baseline_label: str | None = None,
              announce: Callable[[str], None] | None = None) -> dict:
    """Each K of ``run.updates_per_call``, ``run.rounds`` times, alternating with ``baseline_command``
    (a shell command whose last stdout line is a JSON object with ``loop_seconds``)."""
    if not run.updates_per_call or min(run.updates_per_call) <= 0 or run.rounds <= 0:
        raise ConfigError("`updates_per_call` entries and `rounds` must be positive")
    announce = announce or (lambda message: None)
    runs: dict[str, list[dict[str, Any]]] = {str(k): [] for k in run.updates_per_call}
    baseline = []
    for _ in range(run.rounds):  # ours and the baseline alternate, so load changes hit both
        for k in run.updates_per_call:
            runs[str(k)].append(_gymnasium_once(run, k))
            announce(f"updates_per_call {k}: {json.dumps(runs[str(k)][-1])}")
        if baseline_command:
            baseline.append(_baseline_once(baseline_command))
            announce(f"baseline: {json.dumps(baseline[-1])}")
    reference = None
    if baseline and all("loop_seconds" in row for row in baseline):
        reference = min(row["loop_seconds"] for row in baseline)
    rows = {}
    for key, done in runs.items():
        best = min(row["seconds"] for row in done)
        rows[key] = {"seconds": best, "seconds_all": [row["seconds"] for row in done],
                   "updates": done[0]["updates"], "env_steps": done[0]["env_steps"],
                   "final_eval_return": done[0]["final_eval_return"],
                   "speedup_vs_cleanrl_67s": round(CLEANRL_SECONDS / best, 2)}
        if reference is not None:
            rows[key]["speedup_vs_baseline_same_job"] = round(reference / best, 2)
    result = {"benchmark": "TD3 on Gymnasium Pendulum-v1, 256-256, batch 256, "
                           f"{run.total_steps:,} steps, {max(run.total_steps - run.learning_starts, 0):,} updates",
              "note": "wall seconds of Trainer.step() over the run (includes compilation of the update), "
                      "final evaluation (10 episodes) excluded; best of the rounds; CleanRL's "
                      "td3_continuous_action_jax took 67 s in issue #4",
              "by_updates_per_call": rows, "runs": runs, "machine": machine_info(),
              "machine_after": load_average()}
    if baseline_command:
        result["baseline"] = {"command": baseline_label or "(outside script)", "runs": baseline,
                              "loop_seconds_best": reference}
    return result


# -- brax: the compiled loop on a Brax task, N environments x K agents --------------------------

@dataclasses.dataclass(frozen=True)
class BraxScalingRun:
    """TD3 (256-256, batch 256, one update per vector step from the first) on a Brax task with N environments
    per agent and K agents: transitions and updates per second over all agents, timed over one chunk of
    ``total_steps`` transitions per agent (default: a few seconds' worth per N) after a first, untimed one.
    Compilation and evaluation are not timed."""

    env: str = "brax:halfcheetah"
    brax_backend: str = "spring"
    num_envs: tuple[int, ...] = (1, 16, 128)
    num_seeds: tuple[int, ...] = (1, 8)
    total_steps: int | None = None
    """Transitions per agent in the timed chunk; None: 500 vector steps at N = 1, 200 at 16, 50 at 128."""


VECTOR_STEPS_TIMED = {1: 500, 16: 200, 128: 50}


def brax_scaling(run: BraxScalingRun, announce: Callable[[str], None] | None = None) -> dict:
    from jax_td3.config import config_for_env
    from jax_td3.envs import make_jax_env
    from jax_td3.loops.compiled import ChunkedRun, LoopSettings

    if min(run.num_envs) <= 0 or min(run.num_seeds) <= 0:
        raise ConfigError("`num_envs` and `num_seeds` must be positive counts")
    announce = announce or (lambda message: None)
    env = make_jax_env(run.env, brax_backend=run.brax_backend)
    config = config_for_env("td3", env.spec, hidden=(256, 256), batch_size=256)
    rows = []
    for k in run.num_seeds:
        for n in run.num_envs:
            steps = max(run.total_steps // n, 1) if run.total_steps else VECTOR_STEPS_TIMED.get(n, 100)
            settings = LoopSettings(total_steps=2 * steps * n, learning_starts=0, eval_every=steps * n,
                                    eval_episodes=1, buffer_size=2 * steps * n, num_envs=n)
            chunked = ChunkedRun(config, settings, list(range(k)), env=env)
            agents, done = chunked.advance(chunked.initial_agents(), 0)   # compiles; a first, untimed chunk
            before = chunked.run_seconds
            chunked.advance(agents, done)
            seconds = chunked.run_seconds - before
            rows.append({"num_envs": n, "num_seeds": k, "vector_steps": steps, "seconds": round(seconds, 3),
                         "env_steps_per_second": round(k * n * steps / seconds, 1),
                         "updates_per_second": round(k * steps / seconds, 1),
                         "compile_seconds": round(chunked.compile_seconds, 1), "load_average": load_average()})
            announce(json.dumps(rows[-1]))
    return {"benchmark": f"TD3 256-256, batch 256, one update per vector step, on {run.env} ({run.brax_backend}): "
                         f"transitions and updates per second over all agents",
            "settings": dataclasses.asdict(run), "rows": rows, "machine": machine_info()}
