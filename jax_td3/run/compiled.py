"""The run driver of a compiled run (``train(..., compiled=True)``, ``jax-td3 train --compiled``).

It checks that the settings are ones the compiled loop runs (``loops.compiled.compiled_settings``), builds
the JAX-native environment, and runs the loop as a ``loops.compiled.ChunkedRun``: one compiled
call per chunk (``chunk_steps``, by default an evaluation period) with a progress bar, one
metrics.csv row per evaluation, and a checkpoint of the agents' whole state (train states,
replay buffers, environment states, keys) at chunk ends (every ``checkpoint_every`` steps, by
default at every evaluation), so that SIGINT/SIGTERM stop the run at the next chunk end with a
checkpoint and ``resume`` continues it exactly. It writes config.json, metrics.csv, summary.json,
learning_curve.png and the checkpoints (each also holds every agent's train state for ``eval`` and
``export``). With several processes (``jax.distributed``) the first writes the outputs and no
checkpoint is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jax_td3.config import config_for_env
from jax_td3.dtypes import float_dtype
from jax_td3.envs import make_jax_env
from jax_td3.errors import CheckpointError, ConfigError
from jax_td3.loops import schedule
from jax_td3.loops.compiled import ChunkedRun, LoopSettings, compiled_settings, eval_steps
from jax_td3.run.checks import check_compiled_memory, check_compiled_seeds
from jax_td3.run.directory import (
    already_finished,
    hold,
    latest_checkpoint,
    refuse_if_holds_run,
    resumed_settings,
    truncate_log,
)
from jax_td3.run.logger import METRICS_FILE, RunLogger
from jax_td3.run.plot import draw_learning_curve
from jax_td3.run.signals import StopSignals
from jax_td3.settings import TrainSettings

if TYPE_CHECKING:  # for annotations only
    from jax_td3.config import TD3Config
    from jax_td3.loops.compiled import AgentState, Evaluation


def start_processes(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` for a run over several processes (each its own devices; the agents
    are sharded over all of them). On CPUs the collectives go through gloo (jax's default since 0.5;
    set here so that an older default cannot leave them unimplemented). Nothing when all three are None."""
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if not any(given):
        return
    if coordinator is None or num_processes is None or process_id is None:  # some, not all, given
        raise ConfigError("`coordinator`, `num_processes` and `process_id` go together (each process gets all "
                          "three; `process_id` 0 runs the coordinator)")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"`coordinator` must be HOST:PORT, got {coordinator!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"`process_id` must be in [0, `num_processes` {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


class _Reporter:
    """Host side of the callbacks: a tqdm bar and one metrics.csv row per evaluation.

    The bar opens at the first callback, i.e. when the compiled program starts running,
    so that its rate and wall_time exclude compilation.
    """

    def __init__(self, logger: RunLogger | None, total_steps: int, num_seeds: int, progress: bool, initial: int = 0):
        self.logger = logger
        self.total_steps = total_steps
        self.num_seeds = num_seeds
        self.progress = progress
        self.initial = initial
        self.bar: Any = None      # a tqdm bar, from the first callback
        self.start = 0.0          # perf_counter() when the bar opened

    def _started(self) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.start = time.perf_counter()
            self.bar = tqdm(total=self.total_steps, initial=self.initial, unit="step", dynamic_ncols=True,
                            disable=not self.progress,
                            mininterval=0.5, desc=f"compiled x{self.num_seeds}" if self.num_seeds > 1 else "compiled")

    def on_progress(self, step: Any) -> None:
        if jax.process_index() == 0:
            self._started()
            self.bar.update(int(step) - self.bar.n)

    def on_eval(self, step: Any, returns: Any, critic_loss: Any, actor_loss: Any, updates: Any) -> None:
        if jax.process_index() != 0:
            return
        self._started()
        returns = np.asarray(returns, np.float64)
        per_seed = returns.mean(axis=1)
        trained = int(np.max(updates)) > 0
        row = {"step": int(step), "wall_time": round(time.perf_counter() - self.start, 3),
               "eval_return_mean": float(per_seed.mean()), "eval_return_std": float(returns.std()),
               "critic_loss": float(np.mean(critic_loss)) if trained else None,
               "actor_loss": float(np.mean(actor_loss)) if trained else None,
               "updates": int(np.max(updates))}
        if self.num_seeds > 1:
            row.update({f"eval_return_seed{i}": float(r) for i, r in enumerate(per_seed)})
        assert self.logger is not None  # process 0 logs, and only it reaches here
        self.logger.log_eval(row)
        self.bar.set_postfix(eval_return=f"{row['eval_return_mean']:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _checkpoint(out_dir: Path, config: TD3Config, settings: TrainSettings, loop: LoopSettings, env_id: str,
                seeds: np.ndarray, run: ChunkedRun, agents: AgentState, done_steps: int, curve: list,
                curve_steps: list[int], keep: int | None) -> str | None:
    """A checkpoint of the whole run at ``done_steps``: what resumes it exactly, and every agent's train
    state (for ``eval`` and ``export``). Single-process runs only."""
    if jax.process_count() > 1:
        return None
    from jax_td3 import __version__
    from jax_td3.backends.base import pack_train_state
    from jax_td3.run.checkpoint import save_checkpoint

    states = [jax.tree_util.tree_map(lambda x, i=i: x[i], agents.train_state) for i in range(len(seeds))]
    contents = {
        "config": {"algo": config.algo, "fields": dataclasses.asdict(config)},
        "compiled": {"loop": dataclasses.asdict(loop), "seeds": [int(s) for s in seeds],
                     "settings": dataclasses.asdict(settings), "chunk_steps": run.chunk_steps},
        "train_states": [pack_train_state(s) for s in states],
        "agents": run.host_state(agents),
        "eval_returns": np.stack(curve, axis=1),      # (K, evaluations so far, eval_episodes)
        "eval_steps": list(curve_steps),              # the step of each evaluation
    }
    metadata = {"backend": "jax-compiled", "dtype": settings.dtype, "algo": config.algo, "env": env_id,
                "env_steps": int(done_steps), "num_seeds": len(seeds), "jax_td3_version": __version__}
    return str(save_checkpoint(out_dir, done_steps, contents, metadata, keep=keep))


def _resume_point(out_dir: Path, plan: Any, requested: set[str]) -> tuple[Any, TrainSettings]:
    """(checkpoint, settings to continue with) of the compiled run in ``out_dir`` (``directory.resumed_settings``)."""
    checkpoint = latest_checkpoint(out_dir)
    contents = checkpoint.contents
    saved = contents.get("compiled", {})
    if "agents" not in contents or "settings" not in saved or "config" not in contents:
        raise CheckpointError(f"{checkpoint.path} holds no resumable compiled run (written by a compiled run "
                              f"before runs could be resumed, or by the Gymnasium loop)")
    settings = resumed_settings(out_dir, saved["settings"], contents["config"], plan.values(), requested,
                                int(checkpoint.metadata["env_steps"]))
    return checkpoint, settings


def train_compiled_run(plan: Any, *, preset: str | None, num_seeds: int, progress: bool = True,
                       announce: Callable[[str], None] | None = None, resume: bool = False,
                       requested: set[str] | None = None) -> dict:
    """Run ``plan`` (a ``run.training.RunPlan``) as a compiled run of ``num_seeds`` agents (seeds ``seed``,
    ``seed + 1`` ...); returns the summary that summary.json holds.

    ``resume`` continues the run in ``plan.out`` from its newest complete checkpoint (its settings;
    ``requested`` names the settings the caller set, which must agree but for
    ``directory.RESUME_MAY_CHANGE``). SIGINT/SIGTERM stop at the next chunk end after a checkpoint; the
    summary then has ``interrupted`` True and ``signal``.
    """
    announce = announce or (lambda message: None)
    if num_seeds < 1:
        raise ConfigError(f"`num_seeds` must be positive, got {num_seeds}")
    out_dir = Path(plan.out)
    # The directory is held (``directory.hold``) before it is read or checked and while the run runs;
    # by the first process only (the others write nothing of their own into it).
    with hold(out_dir) if jax.process_index() == 0 else contextlib.nullcontext():
        checkpoint = None
        settings = plan.settings
        if resume:
            checkpoint, settings = _resume_point(out_dir, plan, requested or set())
            seeds = np.asarray(checkpoint.contents["compiled"]["seeds"])
            if requested and "num_seeds" in requested and len(seeds) != num_seeds:
                raise ConfigError(f"`resume`: the run in {out_dir} has {len(seeds)} seeds, not {num_seeds}")
            num_seeds = len(seeds)
            finished = already_finished(checkpoint, settings.total_steps, out_dir, announce)
            if finished is not None:
                return finished
        elif jax.process_index() == 0:
            refuse_if_holds_run(out_dir)
        loop = compiled_settings(settings)
        loop.check()
        env = make_jax_env(settings.env, brax_backend=settings.brax_backend,
                           playground_impl=settings.playground_impl)
        float_dtype(settings.dtype)
        if checkpoint is not None:
            from jax_td3.run.checkpoint import config_from_checkpoint
            config = config_from_checkpoint(checkpoint.contents)
        else:
            config = config_for_env(plan.algo, env.spec, **plan.config_overrides)
            if config.algo == "fasttd3":   # the host loop's rules: its cosine lr over the run's updates
                from jax_td3.loops.host import fasttd3_run_config
                config = fasttd3_run_config(config, settings, loop.num_envs)
            seeds = settings.seed + np.arange(num_seeds)
        done = int(checkpoint.metadata["env_steps"]) if checkpoint is not None else 0
        check_compiled_seeds(settings.seed, num_seeds)
        # The programs report progress to the reporter made below, once the run is known to fit.
        run = ChunkedRun(config, loop, seeds, env=env, dtype=np.dtype(settings.dtype), chunk_steps=settings.chunk_steps,
                         on_progress=lambda step: reporter.on_progress(step))
        check_compiled_memory(*run.allocation_shapes(done))  # before anything is allocated or written
        run_config = {"algo": config.algo, "preset": preset, "compiled": True,
                      "num_seeds": num_seeds, "seeds": seeds.tolist(), "config": dataclasses.asdict(config),
                      "settings": dataclasses.asdict(settings), "loop": dataclasses.asdict(loop),
                      "devices": [str(d) for d in jax.devices()], "processes": jax.process_count()}
        first_process = jax.process_index() == 0
        if checkpoint is not None and first_process:
            truncate_log(out_dir / METRICS_FILE, done)
        logger = RunLogger(out_dir, run_config, append=checkpoint is not None) if first_process else None
        reporter = _Reporter(logger, loop.total_steps, num_seeds, progress=progress and first_process, initial=done)
        start = time.perf_counter()
        checkpoint_every = plan.checkpoint_every or loop.eval_every
        keep = plan.keep_checkpoints
        last_checkpoint = str(checkpoint.path) if checkpoint is not None else None

        def log(evaluation: Evaluation) -> None:
            if first_process:
                reporter.on_eval(evaluation.step, evaluation.returns, evaluation.critic_loss,
                                 evaluation.actor_loss, evaluation.updates)

        if progress and first_process:
            announce(f"{'resuming' if checkpoint is not None else 'compiling'} the training program for "
                     f"{num_seeds} agent(s) x {loop.num_envs} environment(s) on {len(jax.devices())} device(s)"
                     + (f" at step {done:,}" if checkpoint is not None else "") + " ...")
        try:
            with StopSignals() as stop:
                run.compile_ahead(done)   # so that the bar and wall_time start with the run, not its compilation
                if checkpoint is None:
                    agents, evaluation = run.start()
                    curve, curve_steps = [evaluation.returns], [0]
                    log(evaluation)
                else:
                    agents = run.agents_from_host(checkpoint.contents["agents"])
                    saved_curve = np.asarray(checkpoint.contents["eval_returns"])
                    curve = [saved_curve[:, i] for i in range(saved_curve.shape[1])]
                    # Older checkpoints do not name the steps: then those of the run's schedule.
                    curve_steps = ([int(s) for s in checkpoint.contents["eval_steps"]]
                                   if "eval_steps" in checkpoint.contents else
                                   [s for s in eval_steps(loop).tolist() if s <= done][:len(curve)])
                while done < loop.total_steps and stop.received is None:
                    before = done
                    agents, done = run.advance(agents, done)
                    if run.evaluates_at(done):
                        agents, evaluation = run.evaluate(agents, done)
                        curve.append(evaluation.returns)
                        curve_steps.append(done)
                        log(evaluation)
                    due = schedule.checkpoint_due(before, done, checkpoint_every, loop.total_steps)
                    if done == loop.total_steps or stop.received is not None or due:
                        last_checkpoint = _checkpoint(out_dir, config, settings, loop, env.spec.env_id, seeds, run,
                                                      agents, done, curve, curve_steps, keep) or last_checkpoint
        finally:
            reporter.close()
        wall_seconds = time.perf_counter() - start
        interrupted = stop.received is not None and done < loop.total_steps
        returns = np.stack(curve, axis=1)
        final = returns[:, -1, :].mean(axis=1)
        summary = {
            "algo": config.algo, "env": settings.env, "compiled": True, "num_seeds": num_seeds, "seeds": seeds.tolist(),
            "final_eval_return": [float(x) for x in final], "final_eval_return_mean": float(final.mean()),
            "eval_steps": curve_steps, "eval_return_curve": returns.mean(axis=2).tolist(),
            "env_steps": done, "updates": loop.updates_after(done // loop.num_envs),
            "num_envs": loop.num_envs, "updates_per_step": loop.updates_per_step,
            "chunk_steps": run.chunk_steps,
            "compile_seconds": round(run.compile_seconds, 3), "run_seconds": round(run.run_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
            "env_steps_per_second": round(num_seeds * (done - (int(checkpoint.metadata["env_steps"])
                                                               if checkpoint is not None else 0))
                                          / max(run.run_seconds, 1e-9), 1),
            "devices": len(jax.devices()), "processes": jax.process_count(), "dtype": settings.dtype,
            "interrupted": interrupted, "signal": stop.received if interrupted else None,
            "resumed_from_step": int(checkpoint.metadata["env_steps"]) if checkpoint is not None else None,
            "last_checkpoint": last_checkpoint,
        }
        if logger is not None:  # the first process's
            logger.finish(summary)
            draw_learning_curve(out_dir)
    summary["out"] = str(out_dir)
    return summary
