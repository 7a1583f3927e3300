"""Whole-run parity: two training runs (JAX and PyTorch backends) stepped in lockstep and compared.

Both runs are ``train.Trainer`` objects built from the same config and settings, so
they start from the same weights (the JAX init; the torch backend loads it through
``convert``), reset identically seeded environments, and draw exploration noise,
warm-up actions, replay indices and target-policy noise from generators seeded the
same way. The learner is the only thing that differs. After every environment step
this module compares:

- the action sent to the environment and the transition (obs, reward, next_obs,
  not_done) stored in the replay buffer,
- every update's critic and actor loss, and whether the actor was updated,
- every parameter of the train state: actor, critics, both targets, both Adam
  moments (per tensor, family-normwise as in ``parity.compare``), and the counters
  (update step, Adam counts) exactly,
- every evaluation's per-episode returns.

``perturb`` moves one weight of the second run by one ulp before the first step. With both
backends ``jax`` this measures how fast the training loop itself amplifies a rounding
difference: the yardstick for a cross-framework drift (see docs/cross-checking.md).

The report holds the worst difference of each quantity over the run, the first step
at which any left its tolerance, and one "max relative difference over everything"
per step (``series``) for plotting the drift.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

import jax
import numpy as np

from jax_td3.parity import QuantityStats, compare

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


@dataclasses.dataclass
class RunDivergence:
    step: int          # environment step (1-based) after which the difference was seen
    updates: int       # updates done by then
    quantity: str
    max_abs: float
    max_rel: float
    tol: float


@dataclasses.dataclass
class RunParityReport:
    algo: str
    env: str
    dtype: str
    backends: tuple[str, str]
    steps: int                      # environment steps compared
    updates: int
    episodes: int
    evaluations: int
    quantities: dict[str, QuantityStats]
    first_divergence: RunDivergence | None
    series: dict[str, list[float]]  # group -> max_rel per step (index i = step i + 1)
    wall_seconds: float
    interrupted: bool = False
    episode_ends: list[int] = dataclasses.field(default_factory=list)
    evaluation_steps: list[int] = dataclasses.field(default_factory=list)
    perturbed: str | None = None    # tensor of the second run moved by one ulp at the start

    @property
    def passed(self) -> bool:
        return self.first_divergence is None and not self.interrupted

    @property
    def steps_within_tolerance(self) -> int:
        """Steps completed before the first divergence (all of them if none)."""
        return self.steps if self.first_divergence is None else self.first_divergence.step - 1

    def to_dict(self, include_series: bool = False) -> dict:
        out = {
            "passed": self.passed, "mode": "run", "algo": self.algo, "env": self.env, "dtype": self.dtype,
            "backends": list(self.backends), "steps": self.steps, "updates": self.updates,
            "episodes": self.episodes, "evaluations": self.evaluations,
            "steps_within_tolerance": self.steps_within_tolerance,
            "max_rel": max((s.max_rel for s in self.quantities.values()), default=0.0),
            "quantities": {name: {"max_abs": s.max_abs, "max_rel": s.max_rel, "tol": s.tol,
                                  "first_violation_step": s.first_violation}
                           for name, s in self.quantities.items()},
            "first_divergence": dataclasses.asdict(self.first_divergence) if self.first_divergence else None,
            "wall_seconds": round(self.wall_seconds, 3), "interrupted": self.interrupted,
            "perturbed": self.perturbed,
        }
        if include_series:
            out["series"] = self.series
        return out

    def to_json(self, include_series: bool = False) -> str:
        return json.dumps(self.to_dict(include_series))

    def table(self) -> str:
        lines = []
        if self.first_divergence:
            d = self.first_divergence
            lines += [f"FIRST DIVERGENCE at step {d.step} (after {d.updates} updates): {d.quantity} "
                      f"(max_abs {d.max_abs:.3e}, max_rel {d.max_rel:.3e} > tol {d.tol:.1e})", ""]
        width = max(len(n) for n in self.quantities)
        lines.append(f"{'quantity':<{width}}  {'max_abs':>10}  {'max_rel':>10}  {'tol':>8}  ok")
        for name, s in self.quantities.items():
            ok = "yes" if s.first_violation is None else f"NO (first at step {s.first_violation})"
            lines.append(f"{name:<{width}}  {s.max_abs:10.3e}  {s.max_rel:10.3e}  {s.tol:8.1e}  {ok}")
        verdict = "PASSED" if self.passed else ("INTERRUPTED" if self.interrupted else "FAILED")
        perturbed = f" ({self.perturbed} of the second run moved by one ulp)" if self.perturbed else ""
        lines += ["", f"{verdict}: {self.algo} on {self.env}, {self.dtype}, {' vs '.join(self.backends)}{perturbed}: "
                      f"{self.steps} steps, {self.updates} updates, {self.episodes} episodes, "
                      f"{self.evaluations} evaluations; equal within tolerance for "
                      f"{self.steps_within_tolerance} steps ({self.wall_seconds:.0f} s)"]
        return "\n".join(lines)


# -- what is compared ----------------------------------------------------------------------------

def _path_name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path if getattr(k, "key", None) != "params")


def state_quantities(state) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """(named float tensors, integer counters) of a JAX-layout train state.

    Tensors are named ``family.layer.leaf`` (e.g. ``critic_adam_v.l2.kernel``); the counters are the
    update step and both Adam counts.
    """
    from jax_td3.convert import adam_moments

    actor_adam, critic_adam = adam_moments(state.actor_opt_state), adam_moments(state.critic_opt_state)
    trees = {"actor": state.actor_params, "critic": state.critic_params,
             "actor_target": state.actor_target_params, "critic_target": state.critic_target_params,
             "actor_adam_m": actor_adam.mu, "actor_adam_v": actor_adam.nu,
             "critic_adam_m": critic_adam.mu, "critic_adam_v": critic_adam.nu}
    named = []
    for family_name in PARAM_FAMILIES:
        for path, leaf in jax.tree_util.tree_flatten_with_path(trees[family_name])[0]:
            named.append((f"{family_name}.{_path_name(path)}", np.asarray(leaf)))
    counters = np.array([int(np.asarray(state.step)), int(np.asarray(actor_adam.count)),
                         int(np.asarray(critic_adam.count))])
    return named, counters


class UnknownTensorError(ValueError):
    """``perturb`` names no weight tensor of the train state."""


WEIGHT_FIELDS = {"actor": "actor_params", "critic": "critic_params", "actor_target": "actor_target_params",
                 "critic_target": "critic_target_params"}


def weight_names(state) -> list[str]:
    """``family.layer.leaf`` of every weight tensor (the names ``perturb`` takes), e.g. ``actor.l1.kernel``."""
    return [f"{family_name}.{_path_name(path)}" for family_name, field in WEIGHT_FIELDS.items()
            for path, _ in jax.tree_util.tree_flatten_with_path(getattr(state, field))[0]]


def perturb_one_ulp(state, name: str):
    """``state`` with the first entry of the weight tensor ``name`` (one of ``weight_names``) moved to the
    next larger float."""
    family_name, _, rest = name.partition(".")

    def nudge(path, leaf):
        if _path_name(path) != rest:
            return leaf
        leaf = np.array(leaf)
        first = (0,) * leaf.ndim
        leaf[first] = np.nextafter(leaf[first], np.inf)
        return leaf

    field = WEIGHT_FIELDS[family_name]
    return state._replace(**{field: jax.tree_util.tree_map_with_path(nudge, getattr(state, field))})


def check_weight_name(config, name: str) -> None:
    """Raise ``UnknownTensorError`` unless ``name`` is a weight tensor of ``config``'s train state
    (from the state's shapes alone: nothing is initialised)."""
    from jax_td3.update import init_train_state

    names = weight_names(jax.eval_shape(lambda key: init_train_state(config, key), jax.random.PRNGKey(0)))
    if name not in names:
        raise UnknownTensorError(f"no weight tensor {name!r}; choose from {', '.join(names)}")


def _group_of(name: str) -> str | None:
    head = name.split(".", 1)[0]
    for group, members in GROUPS.items():
        if head in members:
            return group
    return None


class _Tracker:
    """Worst differences per quantity, the first divergence, and the per-step series."""

    def __init__(self, tol: float):
        self.tol = tol
        self.stats: dict[str, QuantityStats] = {}
        self.first: RunDivergence | None = None
        self.series = {group: [] for group in GROUPS}
        self.series["all"] = []
        self._step_max: dict[str, float] = {}

    def begin_step(self) -> None:
        self._step_max = {group: 0.0 for group in self.series}

    def record(self, name: str, max_abs: float, max_rel: float, step: int, updates: int, tol: float | None = None):
        tol = self.tol if tol is None else tol
        s = self.stats.setdefault(name, QuantityStats(tol=tol))
        s.max_abs, s.max_rel = max(s.max_abs, max_abs), max(s.max_rel, max_rel)
        if not max_rel <= s.tol and s.first_violation is None:
            s.first_violation = step
            if self.first is None:
                self.first = RunDivergence(step, updates, name, max_abs, max_rel, s.tol)
        group = _group_of(name)
        for key in (group, "all") if group else ("all",):
            self._step_max[key] = max(self._step_max[key], max_rel)

    def record_exact(self, name: str, equal: bool, step: int, updates: int) -> None:
        self.record(name, 0.0 if equal else 1.0, 0.0 if equal else 1.0, step, updates, tol=0.0)

    def end_step(self, had: set[str]) -> None:
        # Groups not measured at this step (no update, no evaluation) carry NaN: a gap in the plot.
        for group, value in self._step_max.items():
            self.series[group].append(value if group in had or group == "all" else float("nan"))


def _difference(a, b, floor: float = 0.0) -> tuple[float, float]:
    """(max_abs, ||a - b|| / max(||a||, ||b||, floor)) of two arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    delta = a - b
    max_abs = float(np.max(np.abs(delta))) if delta.size else 0.0
    if not np.isfinite(max_abs):
        return float("inf"), float("inf")
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), floor)
    return max_abs, float(np.linalg.norm(delta)) / scale if scale > 0 else max_abs


def _compare_records(tracker: _Tracker, a, b, step: int, updates: int, action_half_width: float) -> set[str]:
    """Compare two ``StepRecord``s; returns the groups measured.

    An action is measured against the action box's half-width at least, and an observation or a
    reward against 1 at least: an action or reward that happens to be near zero (the pendulum held
    upright) would otherwise turn a tiny absolute difference into a large relative one.
    """
    measured = {"transitions"}
    pairs = [("action", a.action, b.action, action_half_width), ("obs", a.obs, b.obs, 1.0),
             ("reward", a.reward, b.reward, 1.0), ("next_obs", a.next_obs, b.next_obs, 1.0),
             ("not_done", a.not_done, b.not_done, 1.0)]
    tracker.record_exact("updates_per_step", len(a.updates) == len(b.updates), step, updates)
    # Several updates per step (episode schedule) give several losses of one name: each is compared.
    for ma, mb in zip(a.updates, b.updates):
        measured.add("losses")
        tracker.record_exact("actor_updated", ma["actor_updated"] == mb["actor_updated"], step, updates)
        pairs.append(("critic_loss", ma["critic_loss"], mb["critic_loss"], 0.0))
        if ma["actor_updated"] and mb["actor_updated"]:
            pairs.append(("actor_loss", ma["actor_loss"], mb["actor_loss"], 0.0))
    if (a.evaluation is None) != (b.evaluation is None):
        tracker.record_exact("evaluation_schedule", False, step, updates)
    elif a.evaluation is not None:
        measured.add("evaluations")
        pairs.append(("eval_return", a.evaluation["eval_returns"], b.evaluation["eval_returns"], 0.0))
    for name, a_value, b_value, floor in pairs:
        tracker.record(name, *_difference(a_value, b_value, floor), step, updates)
    return measured


def _compare_states(tracker: _Tracker, state_a, state_b, step: int, updates: int) -> None:
    named_a, counters_a = state_quantities(state_a)
    named_b, counters_b = state_quantities(state_b)
    tracker.record_exact("counters", np.array_equal(counters_a, counters_b), step, updates)
    differences = compare([(name, x, y) for (name, x), (_, y) in zip(named_a, named_b)])
    for name, (max_abs, max_rel) in differences.items():
        tracker.record(name, max_abs, max_rel, step, updates)


# -- the runner ----------------------------------------------------------------------------------

def run_whole_parity(config, settings, *, backends: tuple[str, str] = ("jax", "torch"), tol: float | None = None,
                     params_every: int = 1, perturb: str | None = None, progress: bool = False,
                     on_step: Callable[[int, "_Tracker"], None] | None = None) -> RunParityReport:
    """Train ``config`` with ``settings`` (a ``train.TrainSettings``; its backend is ignored) once per
    backend in ``backends``, in lockstep, comparing everything after every step.

    ``tol`` overrides the tolerance of the float quantities (default ``default_run_tolerance``);
    the schedule and counters must always be equal. ``params_every`` compares the whole train
    state every this many steps (and at the last step) instead of every step. The run always
    goes to ``settings.total_steps`` (the drift after a divergence is part of the report); Ctrl-C
    stops it early and the report says ``interrupted``. ``perturb`` names a weight tensor
    (``perturb_one_ulp``) whose first entry the second run starts one ulp higher.
    """
    from jax_td3.loops.host import Trainer

    tol = default_run_tolerance(settings.dtype) if tol is None else tol
    if perturb is not None:
        check_weight_name(config, perturb)
    trainers = [Trainer(config, dataclasses.replace(settings, backend=name)) for name in backends]
    if perturb is not None:
        trainers[1].backend.load_state(perturb_one_ulp(trainers[1].backend.state(), perturb))
    tracker = _Tracker(tol)
    episode_ends, evaluation_steps = [], []
    start = time.perf_counter()
    interrupted = False
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=settings.total_steps, desc=f"run parity {config.algo} {settings.dtype}", unit="step",
                   dynamic_ncols=True, mininterval=0.5)
    first, second = trainers
    action_half_width = float(np.linalg.norm(first.spec.action_scale))
    try:
        with jax.default_matmul_precision("highest"):
            while not first.done:
                tracker.begin_step()
                a, b = first.step(), second.step()
                step, updates = a.step, first.updates
                measured = _compare_records(tracker, a, b, step, updates, action_half_width)
                if a.truncated or a.terminated:
                    episode_ends.append(step)
                if a.evaluation is not None:
                    evaluation_steps.append(step)
                tracker.record_exact("loop_counters", (first.updates, first.episodes) == (second.updates, second.episodes),
                                     step, updates)
                if step % params_every == 0 or first.done:
                    _compare_states(tracker, first.backend.state(), second.backend.state(), step, updates)
                    measured.add("parameters")
                tracker.end_step(measured)
                if on_step is not None:
                    on_step(step, tracker)
                if bar is not None:
                    bar.update(1)
                    if tracker.first is not None and step == tracker.first.step:
                        bar.set_postfix_str(f"diverged at step {step}: {tracker.first.quantity}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        for trainer in trainers:
            trainer.close()
    steps = len(tracker.series["all"])
    return RunParityReport(
        algo=config.algo, env=settings.env, dtype=settings.dtype, backends=tuple(backends), steps=steps,
        updates=first.updates, episodes=first.episodes, evaluations=len(evaluation_steps),
        quantities=tracker.stats, first_divergence=tracker.first, series=tracker.series,
        wall_seconds=time.perf_counter() - start, interrupted=interrupted, episode_ends=episode_ends,
        evaluation_steps=evaluation_steps, perturbed=perturb)


def plot_drift(report: RunParityReport, path) -> None:
    """A PNG of the max relative difference per step (log scale), per group of quantities."""
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
    if report.first_divergence:
        ax.axvline(report.first_divergence.step, color="r", lw=0.8,
                   label=f"first divergence (step {report.first_divergence.step})")
    ax.set_yscale("log")
    ax.set_xlabel("environment step")
    ax.set_ylabel(f"max relative difference (0 drawn at {floor:.0e})")
    perturbed = f", {report.perturbed} +1 ulp" if report.perturbed else ""
    ax.set_title(f"{report.algo} on {report.env}, {report.dtype}: {' vs '.join(report.backends)}{perturbed} in lockstep")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- moving a run between frameworks -------------------------------------------------------------

def resume_trainer(checkpoint_path, backend: str | None = None, env=None):
    """A ``train.Trainer`` continuing a saved Gymnasium run, optionally in the other backend.

    Checkpoints store the train state in the JAX layout, so a JAX run continues in the PyTorch
    backend and the other way round with the same weights, targets, Adam moments, counters and RNG
    states. The run continues exactly when the checkpoint holds the replay buffer (``--save-buffer``)
    and ``env`` is the training environment in the state the run left it (e.g. a copy the caller
    kept). Without ``env`` the checkpoint cannot restore the environment's internal state, so the
    run starts a new episode, reset from the environment's saved random state.
    """
    from jax_td3.errors import CheckpointError
    from jax_td3.loops.host import Trainer
    from jax_td3.run.checkpoint import load_checkpoint
    from jax_td3.run.training import config_from_checkpoint
    from jax_td3.settings import TrainSettings

    checkpoint = load_checkpoint(checkpoint_path)
    try:
        config = config_from_checkpoint(checkpoint.contents)
        settings = TrainSettings(**checkpoint.contents["settings"])
        snapshot = checkpoint.contents["trainer"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path} is not a checkpoint of a Gymnasium training run ({err})") from None
    if backend is not None:
        settings = dataclasses.replace(settings, backend=backend, updates_per_call=1)
    trainer = Trainer(config, settings)
    trainer.restore(snapshot)
    if env is not None:
        trainer.env.close()
        trainer.env = env
    else:
        env_random_state = snapshot["rng"].get("env")
        if env_random_state is not None:
            trainer.env.unwrapped.np_random.bit_generator.state = env_random_state
        trainer.obs, _ = trainer.env.reset()
        trainer.episode_return, trainer.episode_length = 0.0, 0
    return trainer
