"""The run driver of a compiled run (``train(..., compiled=True)``, ``jax-td3 train --compiled``).

It checks that the settings are ones the compiled loop runs (``compiled_settings``), builds
the JAX-native environment, runs ``loops.compiled.train_compiled`` with a progress bar and one
metrics.csv row per evaluation written while the program runs, and writes the run directory:
config.json, metrics.csv, summary.json, learning_curve.png and one checkpoint with every
agent's final train state. A compiled run is one program: it cannot be resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from jax_td3.config import config_for_env
from jax_td3.dtypes import enable_dtype
from jax_td3.envs import make_jax_env
from jax_td3.errors import ConfigError
from jax_td3.loops.compiled import LoopSettings, train_compiled
from jax_td3.run.checks import check_compiled_memory
from jax_td3.run.directory import hold, holds_run
from jax_td3.run.logger import RunLogger
from jax_td3.run.plot import draw_learning_curve
from jax_td3.settings import TrainSettings


def compiled_settings(settings: TrainSettings) -> LoopSettings:
    """The compiled loop's settings for ``settings``; ConfigError names a setting it cannot honour."""
    unsupported = [
        (settings.backend != "jax", f"`backend` {settings.backend}"),
        (settings.exploration != "gaussian", f"`exploration` {settings.exploration}"),
        (settings.update_schedule != "step", f"`update_schedule` {settings.update_schedule}"),
        (not settings.bootstrap_truncation, "`bootstrap_truncation` off"),
        (settings.random_steps not in (None, settings.learning_starts),
         "`random_steps` other than `learning_starts`"),
        (settings.updates_per_call != 1, "`updates_per_call`"),
        (settings.skip_nonfinite, "`skip_nonfinite`"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ConfigError(f"`compiled` does not support {what}")
    return LoopSettings(total_steps=settings.total_steps, learning_starts=settings.learning_starts,
                        eval_every=settings.eval_every, eval_episodes=settings.eval_episodes,
                        buffer_size=settings.buffer_size, expl_noise=settings.expl_noise)


class _Reporter:
    """Host side of the callbacks: a tqdm bar and one metrics.csv row per evaluation.

    The bar opens at the first callback, i.e. when the compiled program starts running,
    so that its rate and wall_time exclude compilation.
    """

    def __init__(self, logger, total_steps: int, num_seeds: int, progress: bool):
        self.logger = logger
        self.total_steps = total_steps
        self.num_seeds = num_seeds
        self.progress = progress
        self.bar = None
        self.start = None

    def _started(self) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.start = time.perf_counter()
            self.bar = tqdm(total=self.total_steps, unit="step", dynamic_ncols=True, disable=not self.progress,
                            mininterval=0.5, desc=f"compiled x{self.num_seeds}" if self.num_seeds > 1 else "compiled")

    def on_progress(self, step) -> None:
        if jax.process_index() == 0:
            self._started()
            self.bar.update(int(step) - self.bar.n)

    def on_eval(self, step, returns, critic_loss, actor_loss, updates) -> None:
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
        self.logger.log_eval(row)
        self.bar.set_postfix(eval_return=f"{row['eval_return_mean']:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _save_final_checkpoint(out_dir, config, settings: LoopSettings, env_id: str, dtype: str, seeds,
                           agents) -> str | None:
    """One checkpoint holding every agent's final train state (single-host runs)."""
    if jax.process_count() > 1:
        return None
    from jax_td3 import __version__
    from jax_td3.backends.base import pack_train_state
    from jax_td3.run.checkpoint import save_checkpoint

    states = [jax.tree_util.tree_map(lambda x: x[i], agents.train_state) for i in range(len(seeds))]
    contents = {
        "config": {"algo": config.algo, "fields": dataclasses.asdict(config)},
        "compiled": {"loop": dataclasses.asdict(settings), "seeds": [int(s) for s in seeds]},
        "train_states": [pack_train_state(s) for s in states],
    }
    metadata = {"backend": "jax-compiled", "dtype": dtype, "algo": config.algo, "env": env_id,
                "env_steps": settings.total_steps, "num_seeds": len(seeds), "jax_td3_version": __version__}
    return str(save_checkpoint(out_dir, settings.total_steps, contents, metadata, keep=None))


def train_compiled_run(plan, *, preset: str | None, num_seeds: int, progress: bool = True,
                       announce: Callable[[str], None] | None = None) -> dict:
    """Run ``plan`` (a ``run.training.RunPlan``) as one compiled program of ``num_seeds`` agents
    (seeds ``seed``, ``seed + 1`` ...); returns the summary that summary.json holds."""
    announce = announce or (lambda message: None)
    if num_seeds < 1:
        raise ConfigError(f"`num_seeds` must be positive, got {num_seeds}")
    settings = plan.settings
    loop = compiled_settings(settings)
    env = make_jax_env(settings.env)
    enable_dtype(settings.dtype)
    config = config_for_env(plan.algo, env.spec, **plan.config_overrides)
    check_compiled_memory(config, settings, loop.capacity, num_seeds)  # seeds and memory, before allocating
    seeds = settings.seed + np.arange(num_seeds)
    out_dir = plan.out
    # The directory is held (``directory.hold``) before it is checked and while the program runs;
    # by the first host only (the others write nothing of their own into it).
    with hold(out_dir) if jax.process_index() == 0 else contextlib.nullcontext():
        if holds_run(Path(out_dir)):
            raise ConfigError(f"{out_dir} already holds a run; choose another `out` (compiled runs cannot be "
                              f"resumed)")
        run_config = {"algo": plan.algo, "preset": preset, "compiled": True,
                      "num_seeds": num_seeds, "seeds": seeds.tolist(), "config": dataclasses.asdict(config),
                      "settings": dataclasses.asdict(settings), "loop": dataclasses.asdict(loop),
                      "devices": [str(d) for d in jax.devices()]}
        logger = RunLogger(out_dir, run_config)
        reporter = _Reporter(logger, loop.total_steps, num_seeds, progress=progress)
        start = time.perf_counter()
        if progress:
            announce(f"compiling the training program for {num_seeds} agent(s) on {len(jax.devices())} "
                     f"device(s) ...")
        try:
            result = train_compiled(config, loop, seeds, env=env, dtype=np.dtype(settings.dtype),
                                    on_progress=reporter.on_progress, on_eval=reporter.on_eval)
        finally:
            reporter.close()
        wall_seconds = time.perf_counter() - start
        final = result.eval_returns[:, -1, :].mean(axis=1)
        checkpoint = _save_final_checkpoint(out_dir, config, loop, env.spec.env_id, settings.dtype, seeds,
                                            result.agents)
        summary = {
            "algo": plan.algo, "env": settings.env, "compiled": True, "num_seeds": num_seeds, "seeds": seeds.tolist(),
            "final_eval_return": [float(x) for x in final], "final_eval_return_mean": float(final.mean()),
            "eval_steps": result.eval_steps.tolist(),
            "eval_return_curve": result.eval_returns.mean(axis=2).tolist(),
            "env_steps": loop.total_steps, "updates": loop.updates,
            "compile_seconds": round(result.compile_seconds, 3), "run_seconds": round(result.run_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
            "env_steps_per_second": round(num_seeds * loop.total_steps / result.run_seconds, 1),
            "devices": len(jax.devices()), "dtype": settings.dtype, "interrupted": False,
            "last_checkpoint": checkpoint,
        }
        logger.finish(summary)
        draw_learning_curve(out_dir)
    summary["out"] = str(out_dir)
    return summary
