"""The run driver: one training run in a directory, from Python or from ``jax-td3 train``.

``train(...)`` is the call behind the command: it merges the preset and the given values
over the defaults, builds the environment, the config and the loop, writes every output
into the run directory, checkpoints, resumes and handles signals. ``run_training`` does the
same for a ``Trainer`` built by the caller (e.g. on a custom environment).

A run directory holds config.json, metrics.csv (one row per evaluation), episodes.csv (one
row per training episode), TensorBoard events, summary.json, learning_curve.png and
checkpoints/. A compiled run (``compiled=True``) is driven by ``jax_td3.run.compiled``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import numpy as np

from jax_td3.config import CONFIGS, TD3Config, config_for_env
from jax_td3.errors import CheckpointError, ConfigError, NonFiniteError
from jax_td3.loops import schedule
from jax_td3.loops.host import StepRecord, Trainer
from jax_td3.presets import DEFAULTS, resolve
from jax_td3.run.checkpoint import BEST_AGENT_FILE, config_from_checkpoint
from jax_td3.run.checks import check_run_memory, ensure_writable_dir
from jax_td3.run.directory import (
    EPISODES_FILE,
    already_finished,
    default_out,
    hold,
    latest_checkpoint,
    refuse_if_holds_run,
    resumed_settings,
    truncate_log,
)
from jax_td3.run.logger import CONFIG_FILE, METRICS_FILE
from jax_td3.run.plot import draw_learning_curve
from jax_td3.run.signals import StopSignals
from jax_td3.settings import OutputSettings, TrainSettings, settings_from_values

if TYPE_CHECKING:  # for annotations only
    from jax_td3.envs import HostEnv
    from jax_td3.run.logger import RunLogger

# Config fields a run may set, of any algorithm (``make_config`` refuses another algorithm's in one line); the
# environment gives the others (sizes and action box).
CONFIG_SETTINGS = tuple(dict.fromkeys(f.name for cls in CONFIGS.values() for f in dataclasses.fields(cls)
                                      if f.name not in ("obs_dim", "act_dim", "action_low", "action_high")))


def uses_vector_loop(settings: TrainSettings) -> bool:
    """Whether the Gymnasium loop runs ``loops.vector.VectorTrainer`` (several environments, or updates per
    step other than one) rather than the one-environment ``Trainer``."""
    return settings.num_envs > 1 or settings.updates_per_step != 1


def ended_episodes(record: StepRecord) -> list[tuple[float, int]]:
    """(return, length) of each episode that ended in the step of ``record`` (a vector step may end several)."""
    if hasattr(record, "ended_episodes"):
        return [(episode_return, length) for _, episode_return, length in record.ended_episodes]
    if record.episode_return is None or record.episode_length is None:  # set together, when an episode ended
        return []
    return [(record.episode_return, record.episode_length)]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def checkpoint_contents(trainer: Trainer, include_buffer: bool, loop: dict | None = None) -> tuple[dict, dict]:
    """(contents, metadata) of a checkpoint of ``trainer``; ``loop`` is run_training's own state."""
    from jax_td3 import __version__

    contents = {
        "config": {"algo": trainer.config.algo, "fields": dataclasses.asdict(trainer.config)},
        "settings": dataclasses.asdict(trainer.settings),
        "trainer": trainer.snapshot(include_buffer),
        "loop": loop or {},
    }
    metadata = {"backend": trainer.settings.backend, "dtype": trainer.settings.dtype,
                "algo": trainer.config.algo, "env": trainer.settings.env, "env_steps": trainer.env_steps,
                "jax_td3_version": __version__, "has_buffer": include_buffer}
    return contents, metadata


def _best_so_far(out_dir: Path, resumed_step: int) -> float:
    """The evaluation a resumed run's next best agent must beat.

    ``best.jtd3`` written after the checkpoint the run resumes from belongs to steps that are now
    run again, so it is removed (like their rows in metrics.csv). Without a best agent file (a run
    from before they were kept) the best logged evaluation is the bar, so that a later best.jtd3 is
    never worse than an evaluation the run already reported.
    """
    from jax_td3.run.checkpoint import read_metadata
    from jax_td3.run.logger import read_metrics

    path = out_dir / BEST_AGENT_FILE
    if path.exists():
        try:
            metadata = read_metadata(path)
        except CheckpointError:
            metadata = None
        if metadata is not None and metadata.get("step", np.inf) <= resumed_step:
            return float(metadata["eval_return_mean"])
        path.unlink()
    metrics = out_dir / METRICS_FILE
    rows = read_metrics(metrics, required=("step", "eval_return_mean")) if metrics.exists() else []
    logged = [row["eval_return_mean"] for row in rows
              if row["step"] <= resumed_step and np.isfinite(row["eval_return_mean"])]
    return float(max(logged)) if logged else -np.inf


def _stop_on_nonfinite(logger: RunLogger, out_dir: Path, trainer: Trainer, err: NonFiniteError) -> NoReturn:
    """Record why the run stopped (summary.json) and re-raise; no checkpoint of the bad state is written."""
    from jax_td3.run.checkpoint import list_checkpoints

    kept = list_checkpoints(out_dir)
    err.last_good_checkpoint = str(kept[-1]) if kept else None
    logger.write_summary({"stopped": str(err), "env_steps": trainer.env_steps, "updates": trainer.updates,
                          "last_checkpoint": err.last_good_checkpoint, "interrupted": True})
    logger.close()
    raise err


def run_training(trainer: Trainer, out_dir: str | Path, run_config: dict | None = None, *,
                 checkpoint_every: int | None = None, keep_checkpoints: int = OutputSettings.keep_checkpoints,
                 save_buffer: bool = OutputSettings.save_buffer, progress: bool = True,
                 resume_loop: dict | None = None) -> dict:
    """Train ``trainer`` to its total steps, writing every output into ``out_dir``; returns the summary.

    Writes config.json, metrics.csv (one row per evaluation, the first at step 0),
    episodes.csv (one row per training episode), TensorBoard events, checkpoints
    (at every ``checkpoint_every`` steps, default every evaluation, and at the end),
    summary.json and learning_curve.png. SIGINT/SIGTERM stop after the current step
    with a checkpoint; the summary then says ``interrupted``.

    ``resume_loop`` (the ``loop`` part of a checkpoint, with ``trainer`` restored from the
    same checkpoint) continues a run: rows logged after the checkpoint are dropped and
    the rest of the run appends to the same files.

    A NaN or infinity (observation, reward, loss or parameter) raises ``NonFiniteError``
    without writing a checkpoint of the bad state, so the newest checkpoint is the last
    good one (``settings.skip_nonfinite`` drops bad transitions instead).

    The run holds ``out_dir`` (``directory.hold``) while it runs: RunDirectoryInUse if another
    run holds it. A caller that resumes should read its checkpoint under the same hold.
    """
    with hold(out_dir):
        return _run_training(trainer, out_dir, run_config, checkpoint_every=checkpoint_every,
                             keep_checkpoints=keep_checkpoints, save_buffer=save_buffer, progress=progress,
                             resume_loop=resume_loop)


def _run_training(trainer: Trainer, out_dir: str | Path, run_config: dict | None, *, checkpoint_every: int | None,
                  keep_checkpoints: int, save_buffer: bool, progress: bool, resume_loop: dict | None) -> dict:
    """``run_training`` in a directory the caller holds."""
    from tqdm import tqdm

    from jax_td3.run.checkpoint import save_best_agent, save_checkpoint
    from jax_td3.run.logger import RunLogger

    settings = trainer.settings
    out_dir = Path(out_dir)
    run_config = run_config or {"algo": trainer.config.algo, "config": dataclasses.asdict(trainer.config),
                                "settings": dataclasses.asdict(settings)}
    resuming = resume_loop is not None
    episodes_path = out_dir / EPISODES_FILE
    if resuming:
        truncate_log(out_dir / METRICS_FILE, trainer.env_steps)
        truncate_log(episodes_path, trainer.env_steps)
    logger = RunLogger(out_dir, run_config, append=resuming)
    checkpoint_every = checkpoint_every or settings.eval_every
    start = time.perf_counter()
    start_steps = trainer.env_steps
    # Losses since the last evaluation (averaged into its metrics row); checkpointed with the run.
    critic_losses: list[float] = list((resume_loop or {}).get("critic_losses", []))
    actor_losses: list[float] = list((resume_loop or {}).get("actor_losses", []))
    last_checkpoint = None

    # The return the next best.jtd3 must beat.
    best_return = _best_so_far(out_dir, trainer.env_steps) if resuming else -np.inf

    def save() -> Path:
        trainer.check_parameters()  # never write a checkpoint of a broken state
        loop = {"critic_losses": list(critic_losses), "actor_losses": list(actor_losses)}
        contents, metadata = checkpoint_contents(trainer, save_buffer, loop)
        return save_checkpoint(out_dir, trainer.env_steps, contents, metadata, keep=keep_checkpoints)

    def keep_if_best(evaluation: dict) -> None:
        nonlocal best_return
        # Strictly better only: a tie keeps the earlier agent.
        if not evaluation["eval_return_mean"] > best_return:
            return
        trainer.check_parameters()
        contents, metadata = checkpoint_contents(trainer, include_buffer=False)
        metadata.update(eval_return_mean=evaluation["eval_return_mean"],
                        eval_return_std=evaluation["eval_return_std"])
        save_best_agent(out_dir, trainer.env_steps, contents, metadata)
        best_return = evaluation["eval_return_mean"]

    def log_evaluation(evaluation: dict) -> None:
        elapsed = time.perf_counter() - start
        logger.log_eval({
            "step": trainer.env_steps, "wall_time": round(elapsed, 3),
            "eval_return_mean": evaluation["eval_return_mean"], "eval_return_std": evaluation["eval_return_std"],
            "critic_loss": _mean(critic_losses), "actor_loss": _mean(actor_losses),
            "updates": trainer.updates, "episodes": trainer.episodes,
            "train_episode_return": trainer.episode_returns[-1] if trainer.episode_returns else None,
            "steps_per_second": round((trainer.env_steps - start_steps) / elapsed, 2) if elapsed > 0 else None,
        })
        critic_losses.clear()
        actor_losses.clear()
        keep_if_best(evaluation)

    with open(episodes_path, "a" if resuming else "w") as episodes_file, StopSignals() as stop, \
            tqdm(total=settings.total_steps, initial=trainer.env_steps, unit="step", dynamic_ncols=True,
                 disable=not progress, mininterval=0.5) as bar:
        if episodes_file.tell() == 0:  # a new run, or one killed before its first episode was written
            episodes_file.write("episode,step,return,length\n")
            episodes_file.flush()
        postfix = {}
        try:
            if trainer.env_steps == 0:
                log_evaluation(trainer.evaluate())
            while not trainer.done and stop.received is None:
                before = trainer.env_steps
                record = trainer.step()   # one step, or one vector step of several transitions
                for m in record.updates:
                    critic_losses.append(m["critic_loss"])
                    if m["actor_updated"]:
                        actor_losses.append(m["actor_loss"])
                ended = ended_episodes(record)
                for number, (episode_return, length) in enumerate(ended, trainer.episodes - len(ended) + 1):
                    episodes_file.write(f"{number},{record.step},{episode_return!r},{length}\n")
                    postfix["train_return"] = f"{episode_return:.1f}"
                    logger.log_scalars(record.step, {"train/episode_return": episode_return})
                if ended:
                    episodes_file.flush()
                if record.evaluation is not None:
                    log_evaluation(record.evaluation)
                    postfix["eval_return"] = f"{record.evaluation['eval_return_mean']:.1f}"
                # A multiple of checkpoint_every reached or passed (a vector step adds several transitions).
                if schedule.checkpoint_due(before, record.step, checkpoint_every, settings.total_steps):
                    last_checkpoint = save()
                bar.update(record.step - before)
                if postfix and (ended or record.evaluation is not None):
                    bar.set_postfix(postfix, refresh=False)
            last_checkpoint = save()
        except NonFiniteError as err:
            _stop_on_nonfinite(logger, out_dir, trainer, err)

    wall = time.perf_counter() - start
    evaluation = trainer.last_evaluation or {}
    returns = trainer.episode_returns
    summary = {
        "final_eval_return": evaluation.get("eval_return_mean"),
        "final_eval_return_std": evaluation.get("eval_return_std"),
        "final_eval_step": evaluation.get("step"),
        "env_steps": trainer.env_steps,
        "updates": trainer.updates,
        "episodes": trainer.episodes,
        "wall_seconds": round(wall, 3),
        "steps_per_second": round((trainer.env_steps - start_steps) / wall, 2) if wall > 0 else None,
        "last_50_episode_mean_return": _mean(returns[-50:]),
        "algo": trainer.config.algo, "env": settings.env, "backend": settings.backend,
        "dtype": settings.dtype, "seed": settings.seed,
        "interrupted": stop.received is not None,
        "last_checkpoint": str(last_checkpoint),
        "skipped_transitions": trainer.skipped_transitions,
        "resumed_from_step": start_steps if resuming else None,
        # The run's best evaluation so far (before a resume, a logged one whose agent may not be kept).
        "best_agent": str(out_dir / BEST_AGENT_FILE) if (out_dir / BEST_AGENT_FILE).exists() else None,
        "best_eval_return": best_return if np.isfinite(best_return) else None,
    }
    logger.finish(summary)
    draw_learning_curve(out_dir)
    summary["signal"] = stop.received
    summary["out"] = str(out_dir)
    return summary


# -- the run as the command runs it -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What ``train`` resolved from the preset and the given values, before anything is built."""

    algo: str
    config_overrides: dict
    settings: TrainSettings
    out: str
    checkpoint_every: int | None
    keep_checkpoints: int
    save_buffer: bool

    def values(self) -> dict:
        """The settings, config fields and ``algo`` the plan asks for, by name."""
        return {**dataclasses.asdict(self.settings), **self.config_overrides, "algo": self.algo}


def plan_run(values: dict, preset: str | None = None, *, compiled: bool = False, num_seeds: int = 1) -> RunPlan:
    """Merge ``values`` (settings, config fields, output options, ``out``; None means not given) over
    the preset and the defaults. ConfigError for an unknown key or a setting out of range."""
    known = set(DEFAULTS) | set(CONFIG_SETTINGS) | {"out"}
    unknown = sorted(k for k, v in values.items() if v is not None and k not in known)
    if unknown:
        raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
    merged = resolve(values, preset)
    settings = settings_from_values(merged).validate()
    out = merged.get("out") or default_out(merged["algo"], settings.env, settings.seed, settings.backend, compiled,
                                           num_seeds)
    ensure_writable_dir(out)  # before anything is built
    return RunPlan(merged["algo"], {k: merged.get(k) for k in CONFIG_SETTINGS}, settings, str(out),
                   merged["checkpoint_every"], merged["keep_checkpoints"], merged["save_buffer"])


def train(algo: str | None = None, out: str | Path | None = None, *, preset: str | None = None,
          resume: bool = False, compiled: bool = False, num_seeds: int | None = None, progress: bool = True,
          environment: HostEnv | None = None, announce: Callable[[str], None] | None = None,
          coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
          **values: Any) -> dict:
    """Train as ``jax-td3 train`` does; returns the summary that summary.json holds.

    ``values`` are any ``TrainSettings`` fields (``env``, ``total_steps``, ``seed``, ``backend`` ...),
    algorithm config fields (``hidden``, ``batch_size``, ``gamma`` ...) and output options
    (``checkpoint_every``, ``keep_checkpoints``, ``save_buffer``); what is not given comes from
    ``preset`` and then from ``presets.DEFAULTS`` and the algorithm's config defaults. ``out`` is
    the run directory (default ``runs/ENV-ALGO-BACKEND-seedS``).

    ``resume=True`` continues the run in ``out`` from its newest complete checkpoint: its settings
    come from the run, and any value given here must agree with them (``total_steps`` may grow).
    ``compiled=True`` runs the whole loop as one XLA program on a JAX-native environment,
    ``num_seeds`` agents at once (``jax_td3.run.compiled``); ``resume`` continues a compiled run too, and
    ``coordinator`` (HOST:PORT), ``num_processes`` and ``process_id`` run it over several processes
    (``jax.distributed``). ``environment`` is an optional
    Gymnasium environment instance to train on instead of ``gymnasium.make(env)``. ``announce`` receives one-line
    notices (e.g. print).

    The summary has ``already_finished`` True (and nothing is run) when a resumed run has
    reached its total steps. Raises ConfigError, EnvError or CheckpointError for bad input, and
    NonFiniteError (after recording it in summary.json) when a NaN or infinity stops the run.
    """
    announce = announce or (lambda message: None)
    requested = {k for k, v in values.items() if v is not None}
    if algo is not None:
        values["algo"] = algo
        requested.add("algo")
    values["out"] = None if out is None else str(out)
    if preset is not None:
        from jax_td3.presets import PRESETS

        requested |= set(PRESETS.get(preset, {}))
    if compiled:
        from jax_td3.run.compiled import start_processes, train_compiled_run

        start_processes(coordinator, num_processes, process_id)  # before anything touches a JAX device
        if num_seeds is not None:
            requested.add("num_seeds")
        plan = plan_run(values, preset, compiled=True, num_seeds=num_seeds or 1)
        return train_compiled_run(plan, preset=preset, num_seeds=num_seeds or 1, progress=progress,
                                  announce=announce, resume=resume, requested=requested)
    if coordinator is not None or num_processes is not None or process_id is not None:
        raise ConfigError("`coordinator`, `num_processes` and `process_id` need `compiled` (the Gymnasium loop "
                          "runs in one process)")
    if num_seeds not in (None, 1):
        raise ConfigError("`num_seeds` > 1 needs `compiled` (the Gymnasium loop trains one seed per run)")
    plan = plan_run(values, preset)
    if plan.settings.chunk_steps is not None:
        raise ConfigError(f"`chunk_steps` {plan.settings.chunk_steps} needs `compiled` (the Gymnasium loop runs in "
                          f"one piece)")
    if plan.settings.num_envs > 1 and environment is not None:
        raise ConfigError("`num_envs` > 1 makes its environments from `env`; a given `environment` instance is one "
                          "environment")
    if plan.settings.updates_per_step != 1 and plan.settings.update_schedule != "step":
        raise ConfigError("`updates_per_step` applies to `update_schedule` step; the episode schedule runs "
                          "`updates_per_episode` after each episode")
    out_dir = Path(plan.out)
    if resume and not out_dir.is_dir():
        raise CheckpointError(f"`resume`: no complete checkpoint in {out_dir / 'checkpoints'}")
    with hold(out_dir):  # before anything in it is read or written
        return _train_in(out_dir, plan, preset, resume, requested, progress, environment, announce)


def _resume_point(out_dir: Path, plan: RunPlan, requested: set[str]) -> tuple[Any, TD3Config, TrainSettings]:
    """(checkpoint, config, settings) to continue the Gymnasium run in ``out_dir`` with
    (``directory.resumed_settings``)."""
    checkpoint = latest_checkpoint(out_dir)
    contents = checkpoint.contents
    try:
        config = config_from_checkpoint(contents)
        saved, saved_config = dict(contents["settings"]), contents["config"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path} is not a checkpoint of a Gymnasium training run ({err})") from None
    settings = resumed_settings(out_dir, saved, saved_config, plan.values(), requested,
                                int(checkpoint.metadata["env_steps"]))
    return checkpoint, config, settings


def _train_in(out_dir: Path, plan: RunPlan, preset: str | None, resume: bool, requested: set[str], progress: bool,
              environment: HostEnv | None, announce: Callable[[str], None]) -> dict:
    """``train`` of the Gymnasium loop in ``out_dir``, which the caller holds."""
    from jax_td3.envs import env_spec, make_env

    checkpoint = None
    if resume:
        checkpoint, config, settings = _resume_point(out_dir, plan, requested)
        finished = already_finished(checkpoint, settings.total_steps, out_dir, announce)
        if finished is not None:
            return finished
        env = environment if environment is not None else make_env(settings.env, time_feature=settings.time_feature)
        config_path = out_dir / CONFIG_FILE
        run_config = json.loads(config_path.read_text()) if config_path.exists() else {}
        run_config = {**run_config, "algo": config.algo, "config": dataclasses.asdict(config),
                      "settings": dataclasses.asdict(settings)}
    else:
        refuse_if_holds_run(out_dir)
        settings = plan.settings
        env = environment if environment is not None else make_env(settings.env, time_feature=settings.time_feature)
        config = config_for_env(plan.algo, env_spec(env), **plan.config_overrides)
        run_config = {"algo": plan.algo, "preset": preset, "config": dataclasses.asdict(config),
                      "settings": dataclasses.asdict(settings), "out": plan.out,
                      "checkpoint_every": plan.checkpoint_every, "keep_checkpoints": plan.keep_checkpoints,
                      "save_buffer": plan.save_buffer}
    check_run_memory(config, settings)  # refuse at once what cannot fit, before allocating it
    trainer: Trainer
    if uses_vector_loop(settings):
        from jax_td3.loops.vector import VectorTrainer

        trainer = VectorTrainer(config, settings, eval_env=env)  # env (made above) evaluates
    else:
        trainer = Trainer(config, settings, env=env)
    run_config["config"] = dataclasses.asdict(trainer.config)  # as the loop runs it (fasttd3: its lr schedule)
    try:
        if checkpoint is not None:
            if checkpoint.contents["trainer"].get("buffer") is None:
                warnings.warn("the checkpoint has no replay buffer (saved without it); the resumed run starts "
                              "from an empty buffer and is not exact", stacklevel=2)
            trainer.restore(checkpoint.contents["trainer"])
            announce(f"resuming {out_dir} from {checkpoint.path.name} (step {trainer.env_steps:,} of "
                     f"{settings.total_steps:,})")
        return _run_training(trainer, out_dir, run_config, checkpoint_every=plan.checkpoint_every,
                             keep_checkpoints=plan.keep_checkpoints, save_buffer=plan.save_buffer,
                             progress=progress,
                             resume_loop=checkpoint.contents.get("loop", {}) if checkpoint is not None else None)
    finally:
        trainer.close()
