"""Whole-run parity: two training runs (e.g. the JAX and PyTorch backends) stepped in lockstep and compared.

Both runs are ``loops.host.Trainer`` objects built from the same config and settings, so they
start from the same weights (the JAX init; the torch backend loads it), reset identically seeded
environments, and draw exploration noise, warm-up actions, replay indices and target-policy noise
from generators seeded the same way. The learner is the only thing that differs. After every
environment step this module compares, with ``compare.compare``:

- the action sent to the environment and the transition (obs, reward, next_obs, not_done) stored
  in the replay buffer,
- every update's critic and actor loss, and whether the actor was updated,
- every tensor of the train state: actor, critics, both targets, both Adam moments (family-normwise;
  named in the JAX layout, which is how backends exchange states: ``actor.l1.kernel``, stacked
  critics as one tensor), and the counters (update step, Adam counts) exactly,
- every evaluation's per-episode returns.

``perturb`` moves one weight of the second run by one ulp before the first step. With both
backends ``jax`` this measures how fast the training loop itself amplifies a rounding difference:
the yardstick for a cross-framework drift (see docs/cross-checking.md).

The report (a ``ParityReport`` of mode "run") holds the worst difference of each quantity over the
run, the first step at which any left its tolerance, and one "max relative difference over
everything" per step (``series``) for plotting the drift.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np

from jax_td3.adapters.jax import WEIGHT_FIELDS, layout_name, layout_tensors, weight_names
from jax_td3.config import TD3Config
from jax_td3.errors import ConfigError
from jax_td3.parity.compare import Divergence, ParityReport, Tracker, Verdict, compare
from jax_td3.update import Batch, TrainState

if TYPE_CHECKING:
    from jax_td3.adapters.base import Adapter
    from jax_td3.backends.base import Backend
    from jax_td3.loops.host import StepRecord, Trainer
    from jax_td3.settings import TrainSettings

# The (batch fields, target noise) of each update of one environment step, as the first run drew them.
StepBatches = list[tuple[tuple[np.ndarray, ...], np.ndarray]]

# float64: both learners do the same arithmetic in a different order; differences stay at a few
# ulps (~1e-15) for thousands of steps of TD3. 1e-9 leaves six orders of magnitude of headroom while
# still catching any real difference (a wrong constant or a skipped step shows at 1e-3 or more).
RUN_FLOAT64_TOLERANCE = 1e-9
# float32: the two runs are two different roundings of one chaotic system (the policy acts on the
# environment, whose next state feeds the policy). They agree to ~1e-6 for the first updates, then
# the difference grows until the runs are unrelated; 1e-3 marks "still the same run to three
# digits", and the report says at which step that stopped being so.
RUN_FLOAT32_TOLERANCE = 1e-3

TRANSITION_QUANTITIES = ("action", "obs", "reward", "next_obs", "not_done")
LOSS_QUANTITIES = ("critic_loss", "actor_loss")
PARAM_FAMILIES = ("actor", "critic", "actor_target", "critic_target",
                  "actor_adam_m", "actor_adam_v", "critic_adam_m", "critic_adam_v")
# Groups of quantities, for the per-step series and the plot.
GROUPS = {"transitions": TRANSITION_QUANTITIES, "losses": LOSS_QUANTITIES, "parameters": PARAM_FAMILIES,
          "evaluations": ("eval_return",)}


def default_run_tolerance(dtype: str) -> float:
    return RUN_FLOAT64_TOLERANCE if dtype == "float64" else RUN_FLOAT32_TOLERANCE


# -- perturbing one weight -----------------------------------------------------------------------

class UnknownTensorError(ConfigError):
    """``perturb`` names no weight tensor of the train state."""


def perturb_one_ulp(state: TrainState, name: str) -> TrainState:
    """``state`` (JAX layout) with the first entry of the weight tensor ``name`` (one of
    ``adapters.jax.weight_names``, e.g. ``actor.l1.kernel``) moved to the next larger float."""
    family_name, _, rest = name.partition(".")

    def nudge(path: tuple[Any, ...], leaf: Any) -> Any:
        if layout_name(path) != rest:
            return leaf
        leaf = np.array(leaf)
        first = (0,) * leaf.ndim
        leaf[first] = np.nextafter(leaf[first], np.inf)
        return leaf

    field = WEIGHT_FIELDS[family_name]
    return state._replace(**{field: jax.tree_util.tree_map_with_path(nudge, getattr(state, field))})


def check_weight_name(config: TD3Config, name: str) -> None:
    """Raise ``UnknownTensorError`` unless ``name`` is a weight tensor of ``config``'s train state
    (from the state's shapes alone: nothing is initialised)."""
    from jax_td3.update import init_train_state

    names = weight_names(jax.eval_shape(lambda key: init_train_state(config, key), jax.random.PRNGKey(0)))
    if name not in names:
        raise UnknownTensorError(f"no weight tensor {name!r}; choose from {', '.join(names)}")


# -- what is compared ----------------------------------------------------------------------------

def _group_of(name: str) -> str | None:
    head = name.split(".", 1)[0]
    for group, members in GROUPS.items():
        if head in members:
            return group
    return None


class RunTracker(Tracker):
    """``Tracker`` plus, per group of quantities, the largest ``max_rel`` of each step (``series``)."""

    def __init__(self, tol: float) -> None:
        super().__init__(tol)
        self.series: dict[str, list[float]] = {group: [] for group in GROUPS}
        self.series["all"] = []
        self._step_max: dict[str, float] = {}

    def begin_step(self) -> None:
        self._step_max = {group: 0.0 for group in self.series}

    def record(self, name: str, max_abs: float, max_rel: float, update: int, step: int | None = None,
               tol: float | None = None) -> None:
        super().record(name, max_abs, max_rel, update, step, tol)
        group = _group_of(name)
        for key in (group, "all") if group else ("all",):
            self._step_max[key] = max(self._step_max[key], max_rel)

    def end_step(self, had: set[str]) -> None:
        # Groups not measured at this step (no update, no evaluation) carry NaN: a gap in the plot.
        for group, value in self._step_max.items():
            self.series[group].append(value if group in had or group == "all" else float("nan"))


def _compare_records(tracker: RunTracker, a: StepRecord, b: StepRecord, step: int, updates: int,
                     action_half_width: float) -> set[str]:
    """Compare two ``StepRecord``s; returns the groups measured.

    An action is measured against the action box's half-width at least, and an observation or a
    reward against 1 at least: an action or reward that happens to be near zero (the pendulum held
    upright) would otherwise turn a tiny absolute difference into a large relative one.
    """
    measured = {"transitions"}
    pairs: list[tuple[str, Any, Any, float]] = [
        ("action", a.action, b.action, action_half_width), ("obs", a.obs, b.obs, 1.0),
        ("reward", a.reward, b.reward, 1.0), ("next_obs", a.next_obs, b.next_obs, 1.0),
        ("not_done", a.not_done, b.not_done, 1.0)]
    tracker.record_exact("updates_per_step", len(a.updates) != len(b.updates), updates, step)
    # Several updates per step (episode schedule) give several losses of one name: each is compared.
    for ma, mb in zip(a.updates, b.updates):
        measured.add("losses")
        tracker.record_exact("actor_updated", ma["actor_updated"] != mb["actor_updated"], updates, step)
        pairs.append(("critic_loss", ma["critic_loss"], mb["critic_loss"], 0.0))
        if ma["actor_updated"] and mb["actor_updated"]:
            pairs.append(("actor_loss", ma["actor_loss"], mb["actor_loss"], 0.0))
    if (a.evaluation is None) != (b.evaluation is None):
        tracker.record_exact("evaluation_schedule", 1, updates, step)
    elif a.evaluation is not None and b.evaluation is not None:
        measured.add("evaluations")
        pairs.append(("eval_return", a.evaluation["eval_returns"], b.evaluation["eval_returns"], 0.0))
    for name, a_value, b_value, floor in pairs:   # one at a time: each is its own family
        max_abs, max_rel = compare([(name, a_value, b_value)], {name: floor})[name]
        tracker.record(name, max_abs, max_rel, updates, step)
    return measured


def _compare_states(tracker: RunTracker, state_a: TrainState, state_b: TrainState, step: int, updates: int) -> None:
    named_a, counters_a = layout_tensors(state_a)
    named_b, counters_b = layout_tensors(state_b)
    tracker.record_exact("counters", not np.array_equal(counters_a, counters_b), updates, step)
    differences = compare([(name, x, y) for (name, x), (_, y) in zip(named_a, named_b)])
    for name, (max_abs, max_rel) in differences.items():
        tracker.record(name, max_abs, max_rel, updates, step)


# -- the runner ----------------------------------------------------------------------------------

def run_whole_parity(config: TD3Config, settings: TrainSettings, *, backends: tuple[str, str] = ("jax", "torch"),
                     tol: float | None = None, params_every: int = 1, perturb: str | None = None,
                     progress: bool = False, on_step: Callable[[int, RunTracker], None] | None = None,
                     verdict: bool = True, chaos_horizon: bool = True, mutant: str | None = None,
                     stop_at_divergence: bool = False) -> ParityReport:
    """Train ``config`` with ``settings`` (a ``settings.TrainSettings``; its backend is ignored) once per
    backend in ``backends``, in lockstep, comparing everything after every step.

    ``tol`` overrides the tolerance of the float quantities (default ``default_run_tolerance``);
    the schedule and counters must always be equal. ``params_every`` compares the whole train
    state every this many steps (and at the last step) instead of every step. The run always
    goes to ``settings.total_steps`` (the drift after a divergence is part of the report); Ctrl-C
    stops it early and the report says ``interrupted``. ``perturb`` names a weight tensor
    (``perturb_one_ulp``) whose first entry the second run starts one ulp higher. ``on_step(step,
    tracker)`` is called after each step's comparisons. ``mutant`` puts a bug of the catalogue
    (``parity.mutants``) into the second run. ``stop_at_divergence`` ends the run at the first divergence.

    ``verdict``: when the runs separate, decide why (``decide_verdict``): the report's ``verdict`` is
    "bug" or "chaos"; with ``chaos_horizon`` a chaos verdict also carries the horizon of a one-ulp
    perturbation of the first backend against itself (a second run, stopped at its own divergence,
    unless this run is that perturbation already).
    """
    from jax_td3.loops.host import Trainer

    tol = default_run_tolerance(settings.dtype) if tol is None else tol
    if perturb is not None:
        check_weight_name(config, perturb)
    if mutant is not None:
        from jax_td3.parity import mutants  # the bug catalogue: reached only when one is asked for

        config = mutants.get(mutant).config(config)   # the settings the bug needs, for both runs
    trainers = [Trainer(config, dataclasses.replace(settings, backend=name)) for name in backends]
    if perturb is not None:
        trainers[1].backend.load_state(perturb_one_ulp(trainers[1].backend.state(), perturb))
    if mutant is not None:
        mutants.install(mutant, trainers[1])
    tracker = RunTracker(tol)
    episode_ends: list[int] = []
    evaluation_steps: list[int] = []
    start = time.perf_counter()
    interrupted = False
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=settings.total_steps, desc=f"run parity {config.algo} {settings.dtype}", unit="step",
                   dynamic_ncols=True, mininterval=0.5)
    first, second = trainers
    action_half_width = float(np.linalg.norm(first.spec.action_scale))
    # For the verdict: the first run's state before each step and the batches of the step's updates.
    separation: tuple[int, TrainState, StepBatches, str, bool] | None = None
    batches: StepBatches = []
    state_before = first.backend.state() if verdict else None
    env_inputs_equal = True
    if verdict:
        first_update = first.backend.update

        def recording_update(batch: Batch, target_noise: np.ndarray) -> dict[str, float]:
            batches.append((tuple(np.array(x) for x in batch), np.array(target_noise)))
            return first_update(batch, target_noise)

        # This run's backend object only: its updates also record their batches for the verdict.
        first.backend.update = recording_update  # type: ignore[method-assign]
    try:
        with jax.default_matmul_precision("highest"):
            while not first.done:
                tracker.begin_step()
                batches.clear()
                a, b = first.step(), second.step()
                step, updates = a.step, first.updates
                measured = _compare_records(tracker, a, b, step, updates, action_half_width)
                if a.truncated or a.terminated:
                    episode_ends.append(step)
                if a.evaluation is not None:
                    evaluation_steps.append(step)
                tracker.record_exact("loop_counters",
                                     (first.updates, first.episodes) != (second.updates, second.episodes),
                                     updates, step)
                env_dtype = first.env_action_dtype
                env_inputs_equal &= np.array_equal(a.action.astype(env_dtype), b.action.astype(env_dtype))
                state_after = None
                if step % params_every == 0 or first.done:
                    state_after = first.backend.state()
                    _compare_states(tracker, state_after, second.backend.state(), step, updates)
                    measured.add("parameters")
                tracker.end_step(measured)
                if verdict and separation is None:
                    if tracker.first is not None:
                        assert state_before is not None   # taken whenever a verdict is asked for
                        separation = (step, state_before, list(batches), tracker.first.quantity, env_inputs_equal)
                    else:
                        state_before = state_after if state_after is not None else first.backend.state()
                if on_step is not None:
                    on_step(step, tracker)
                if bar is not None:
                    bar.update(1)
                    if tracker.first is not None and step == tracker.first.step:
                        bar.set_postfix_str(f"diverged at step {step}: {tracker.first.quantity}")
                if stop_at_divergence and tracker.first is not None:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        for trainer in trainers:
            trainer.close()
    found = None
    if separation is not None and not interrupted:
        found = decide_verdict(config, settings, backends, (first.backend, second.backend), *separation, tol=tol,
                               perturb=perturb, chaos_horizon=chaos_horizon)
    return ParityReport(
        algo=config.algo, dtype=settings.dtype, updates=first.updates, quantities=tracker.stats,
        first_divergence=tracker.first, backends=(backends[0], backends[1]), mode="run", env=settings.env,
        steps=len(tracker.series["all"]), episodes=first.episodes, evaluations=len(evaluation_steps),
        series=tracker.series, wall_seconds=time.perf_counter() - start, interrupted=interrupted,
        episode_ends=episode_ends, evaluation_steps=evaluation_steps, perturbed=perturb, mutant=mutant,
        verdict=found)


# -- chaos or bug --------------------------------------------------------------------------------

def _rerun_backends(learners: Sequence[Backend], state_before: TrainState, batches: StepBatches,
                    dtype: str) -> Divergence | None:
    """The first difference beyond the update-level tolerance between the states two backends reach from
    ``state_before`` over ``batches``, the second re-synchronised to the first before each update (None
    if they agree). Names are the JAX layout's; ``update`` the training update number."""
    from jax_td3.parity.update_level import default_tolerance
    from jax_td3.update import Batch

    first, second = learners
    first.load_state(state_before)
    done = int(np.asarray(state_before.step))
    tracker = Tracker()
    for k, (batch, noise) in enumerate(batches, start=1):
        second.load_state(first.state())
        first.update(Batch(*batch), noise)
        second.update(Batch(*batch), noise)
        named_a, counters_a = layout_tensors(first.state())
        named_b, counters_b = layout_tensors(second.state())
        tracker.record_exact("counters", not np.array_equal(counters_a, counters_b), done + k)
        differences = compare([(name, x, y) for (name, x), (_, y) in zip(named_a, named_b)])
        for name, (max_abs, max_rel) in differences.items():
            tracker.record(name, max_abs, max_rel, done + k, tol=default_tolerance(dtype, name))
    return tracker.first


# The transitions the environment returns; the action is the learner's.
ENVIRONMENT_QUANTITIES = ("obs", "reward", "next_obs", "not_done")
HORIZON_TENSOR = "actor.l1.kernel"   # the weight the chaos horizon's run moves by one ulp


def learner_adapter(backend: Backend, config: TD3Config, dtype: str) -> Adapter:
    """An update-level adapter over a training backend's learner: the live torch_ref agent (a mutant's
    included) for the torch backend, our JAX update for the jax backend."""
    agent = getattr(backend, "agent", None)   # the torch backend's (the Backend protocol has no agent)
    if agent is not None:
        from jax_td3.adapters.torch_ref import TorchRefAdapter

        return TorchRefAdapter(config, dtype, agent=agent)
    from jax_td3.adapters.jax import JaxAdapter

    return JaxAdapter(config, dtype)


def decide_verdict(config: TD3Config, settings: TrainSettings, backends: tuple[str, str],
                   learners: Sequence[Backend], step: int, state_before: TrainState, batches: StepBatches,
                   quantity: str, env_inputs_equal: bool, *, tol: float | None = None, perturb: str | None = None,
                   chaos_horizon: bool = True) -> Verdict:
    """Chaos or bug, for two runs that first separated at environment step ``step`` on ``quantity``.

    Both learners (``learners``: the two runs' backends, whose state this overwrites) are loaded with
    the first run's ``state_before`` that step (JAX layout) and re-run its updates on the first run's
    ``batches`` (``(batch, target_noise)`` pairs), re-synchronised before each, and compared as the
    update-level mode compares (its tolerances). A difference there is a bug in the update. Otherwise
    a separation in what the environment returned, while every environment input so far was equal
    (``env_inputs_equal``), is a bug in the loop; anything else is chaos, whose horizon is measured by
    a run of the first backend against itself with ``HORIZON_TENSOR`` one ulp higher (this run's own
    separation when it is that run already).
    """
    from jax_td3.adapters.jax import to_neutral
    from jax_td3.parity.update_level import compare_adapters

    if batches:
        done = int(np.asarray(state_before.step))
        a, b = (learner_adapter(learner, config, settings.dtype) for learner in learners)
        a.load(to_neutral(config, state_before))
        rerun = compare_adapters(a, b, config, dtype=settings.dtype, batches=batches, resync=True)
        divergence = None
        if rerun.first_divergence is not None:
            d = rerun.first_divergence
            divergence = Divergence(done + d.update, d.quantity, d.max_abs, d.max_rel, d.tol)
        else:
            # The adapters run each framework's update; the backends may wrap more around it (conversions,
            # casts): re-run through them too, comparing the states they end in.
            divergence = _rerun_backends(learners, state_before, batches, settings.dtype)
        if divergence is not None:
            return Verdict("bug", step, cause="update", divergence=divergence, rerun_updates=len(batches))
    if quantity in ENVIRONMENT_QUANTITIES and env_inputs_equal:
        return Verdict("bug", step, cause="loop", rerun_updates=len(batches))
    verdict = Verdict("chaos", step, rerun_updates=len(batches))
    if perturb is not None and backends[0] == backends[1]:
        verdict.chaos_horizon, verdict.horizon_run = step - 1, f"this run: {backends[1]} with {perturb} + 1 ulp"
    elif chaos_horizon:
        baseline = run_whole_parity(config, settings, backends=(backends[0], backends[0]), tol=tol,
                                    perturb=HORIZON_TENSOR, verdict=False, stop_at_divergence=True)
        verdict.chaos_horizon = baseline.steps_within_tolerance
        verdict.horizon_reached = baseline.first_divergence is not None
        verdict.horizon_run = f"{backends[0]} against itself with {HORIZON_TENSOR} + 1 ulp"
    return verdict


def plot_drift(report: ParityReport, path: str | Path) -> None:
    """A PNG of a whole-run report's max relative difference per step (log scale), per group of quantities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, report.steps + 1)
    floor = 1e-18   # exact equality (0) has no place on a log axis; it is drawn at this floor
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for group, style in (("parameters", "-"), ("losses", "-"), ("transitions", "-"), ("evaluations", "o")):
        values = np.asarray(report.series[group][:report.steps], np.float64)
        measured = ~np.isnan(values)   # steps at which the group was compared
        if not measured.any():
            continue
        ax.plot(steps[measured], np.maximum(values[measured], floor), style, label=group, lw=0.9, ms=4)
    tol = max((s.tol for s in report.quantities.values()), default=0.0)
    if tol:
        ax.axhline(tol, color="k", ls="--", lw=0.8, label=f"tolerance {tol:.0e}")
    for i, end in enumerate(report.episode_ends):
        ax.axvline(end, color="0.85", lw=0.5, zorder=0, label="episode end" if i == 0 else None)
    first = report.first_divergence
    if first is not None and first.step is not None:   # a run-level divergence always has its step
        ax.axvline(first.step, color="r", lw=0.8, label=f"first divergence (step {first.step})")
    ax.set_yscale("log")
    ax.set_xlabel("environment step")
    ax.set_ylabel(f"max relative difference (0 drawn at {floor:.0e})")
    perturbed = f", {report.perturbed} +1 ulp" if report.perturbed else ""
    backends = " vs ".join(report.backends)
    ax.set_title(f"{report.algo} on {report.env}, {report.dtype}: {backends}{perturbed} in lockstep")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- moving a run between frameworks -------------------------------------------------------------

def resume_trainer(checkpoint_path: str | Path, backend: str | None = None, env: Any = None) -> Trainer:
    """A ``loops.host.Trainer`` continuing a saved Gymnasium run, optionally in the other backend.

    Checkpoints store the train state in the JAX layout, so a JAX run continues in the PyTorch
    backend and the other way round with the same weights, targets, Adam moments, counters and RNG
    states. The run continues exactly when the checkpoint holds the replay buffer (``--save-buffer``)
    and ``env`` is the training environment in the state the run left it (e.g. a copy the caller
    kept). Without ``env`` the run starts a new episode, reset from the environment's random state
    as the checkpoint left it, the same way in either backend.
    """
    from jax_td3.checkpoint_format import config_from_checkpoint, load_checkpoint
    from jax_td3.errors import CheckpointError
    from jax_td3.loops.host import Trainer
    from jax_td3.settings import settings_from_values

    checkpoint = load_checkpoint(checkpoint_path)
    try:
        config = config_from_checkpoint(checkpoint.contents)
        settings = settings_from_values(checkpoint.contents["settings"])
        snapshot = checkpoint.contents["trainer"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path} is not a checkpoint of a Gymnasium training run ({err})") from None
    if backend is not None:
        settings = dataclasses.replace(settings, backend=backend, updates_per_call=1)
    trainer = Trainer(config, settings)
    # restore() also rebuilds the environment (reset from the saved RNG state, then the episode's
    # actions replayed), so the env's random state is the one the run had at the checkpoint.
    trainer.restore(snapshot)
    if env is not None:
        trainer.env.close()
        trainer.env = env
    else:
        trainer.start_new_episode()
    return trainer
