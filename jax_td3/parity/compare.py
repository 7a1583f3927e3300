"""The one difference measure, and the one report, of both parity modes.

``compare`` measures named pairs of arrays: ``max_abs = max |a - b|`` and the normwise
``max_rel = ||a - b|| / max(||family of a||, ||family of b||, floor)``, where the family is the
group the tensor belongs to (the part of its name before the first dot: all critic gradients,
all actor parameters ...). Measuring each tensor against its family keeps the ratio meaningful
for tensors that are near zero by cancellation (the output-bias gradient is the mean of the
batch's TD errors); the floor does the same for a value that is near zero by itself (an action
or a reward that happens to be ~0).

``Tracker`` keeps, per quantity, the worst differences seen and the first point at which the
quantity left its tolerance, and the first divergence over all quantities. ``ParityReport`` is
what both modes return: the update-level one counts updates, the whole-run one counts
environment steps and carries the run's extra fields.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Mapping

import numpy as np

from jax_td3.adapters.base import family
from jax_td3.errors import ConversionError

# A loss that is the mean of terms of both signs can be near zero by cancellation; it is measured
# against the root mean square of its terms instead of against itself (when those are compared too).
LOSS_TERMS = {"actor_loss": "actor_q"}


def compare(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
            floors: Mapping[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """``{name: (max_abs, max_rel)}`` for ``(name, a, b)`` triples (names unique).

    ``max_rel = ||a - b|| / max(||a's family||, ||b's family||, floors.get(name, 0))``, Frobenius
    norms over every tensor of the family among ``pairs``; a tensor alone in its family is measured
    against itself. Losses in ``LOSS_TERMS`` are measured against the RMS of their terms. A
    non-finite difference gives ``(inf, inf)``; arrays of different shapes raise ``ConversionError``.
    """
    floors = floors or {}
    values = [(name, np.asarray(a, np.float64), np.asarray(b, np.float64)) for name, a, b in pairs]
    sums: dict[str, list[float]] = {}   # family -> [sum a^2, sum b^2, entries]
    for name, a, b in values:
        if a.shape != b.shape:
            # Two implementations that report one quantity in different layouts: an adapter's bug.
            raise ConversionError(f"{name}: shape mismatch {a.shape} vs {b.shape}")
        acc = sums.setdefault(family(name), [0.0, 0.0, 0])
        acc[0] += float(np.sum(a * a))
        acc[1] += float(np.sum(b * b))
        acc[2] += a.size
    out = {}
    for name, a, b in values:
        delta = a - b
        max_abs = float(np.max(np.abs(delta))) if delta.size else 0.0
        if not np.isfinite(max_abs):
            out[name] = (float("inf"), float("inf"))
            continue
        if name in LOSS_TERMS and LOSS_TERMS[name] in sums:
            sa, sb, count = sums[LOSS_TERMS[name]]
            scale = np.sqrt(max(sa, sb) / count)
        else:
            scale = np.sqrt(max(sums[family(name)][:2]))
        scale = max(scale, floors.get(name, 0.0))
        out[name] = (max_abs, float(float(np.linalg.norm(delta)) / scale) if scale > 0 else max_abs)
    return out


# -- the report ----------------------------------------------------------------------------------

@dataclasses.dataclass
class QuantityStats:
    max_abs: float = 0.0
    max_rel: float = 0.0
    tol: float = 0.0
    first_violation: int | None = None   # update (update level) or step (run level) where max_rel first > tol


@dataclasses.dataclass
class Divergence:
    """The first quantity out of tolerance: after update ``update`` (at the run level, after environment
    step ``step``, with ``update`` updates done by then)."""

    update: int
    quantity: str
    max_abs: float
    max_rel: float
    tol: float
    step: int | None = None

    def to_dict(self) -> dict:
        fields = {"quantity": self.quantity, "max_abs": self.max_abs, "max_rel": self.max_rel, "tol": self.tol}
        if self.step is None:
            return {"update": self.update, **fields}
        return {"step": self.step, "updates": self.update, **fields}


@dataclasses.dataclass
class Verdict:
    """Why two whole runs separated (``run_level.decide_verdict``).

    "bug" with ``cause`` "update": the updates of the first separating step, re-run on both learners
    from the first run's state before that step and with its batches, differ beyond the update-level
    tolerance; ``divergence`` is that comparison's first divergence (``update``: the training update
    number). "bug" with ``cause`` "loop": those updates agree, but with the same environment inputs so
    far the stored transitions differ (the loop, not the learner). "chaos": the single updates agree,
    so the separation is rounding amplified by training; ``chaos_horizon`` is the number of steps a run
    stays within tolerance of itself with one weight moved by one ulp (``--perturb``), measured on
    ``horizon_run`` (``horizon_reached`` False: that run never left tolerance, so the horizon is at
    least its length)."""

    kind: str
    step: int
    cause: str | None = None
    divergence: Divergence | None = None
    rerun_updates: int = 0
    chaos_horizon: int | None = None
    horizon_run: str | None = None
    horizon_reached: bool = True

    def to_dict(self) -> dict:
        return {"verdict": self.kind, "step": self.step, "cause": self.cause, "rerun_updates": self.rerun_updates,
                "divergence": self.divergence.to_dict() if self.divergence else None,
                "chaos_horizon": self.chaos_horizon, "horizon_run": self.horizon_run,
                "horizon_reached": self.horizon_reached}

    def line(self) -> str:
        if self.kind == "bug" and self.cause == "update":
            d = self.divergence
            assert d is not None, "an update-caused bug carries the divergence of its re-run"
            return (f"VERDICT: bug. Re-running the {self.rerun_updates} update(s) of step {self.step} from one state "
                    f"on both learners: {d.quantity} differs at update {d.update} (max_rel {d.max_rel:.3e} > tol "
                    f"{d.tol:.1e})")
        if self.kind == "bug":
            learners = (f"The learners agree on the {self.rerun_updates} update(s) of step {self.step} re-run from one "
                        f"state" if self.rerun_updates else f"No update ran at step {self.step}")
            return (f"VERDICT: bug in the loop. {learners}, and the same environment inputs gave different "
                    f"transitions")
        horizon = (f"{self.chaos_horizon} steps" if self.horizon_reached else f"more than {self.chaos_horizon} steps")
        return (f"VERDICT: chaos. The update(s) of step {self.step}, re-run from one state on both learners, agree "
                f"within the update-level tolerance; a one-ulp perturbation ({self.horizon_run}) stays within "
                f"tolerance for {horizon} (chaos horizon)")


@dataclasses.dataclass
class ParityReport:
    """What a parity check found. ``mode`` "update": ``updates`` updates on shared synthetic batches
    (``update_level``); "run": two training runs of ``steps`` environment steps (``run_level``), with
    the fields below ``mode``."""

    algo: str
    dtype: str
    updates: int
    quantities: dict[str, QuantityStats]
    first_divergence: Divergence | None
    backends: tuple[str, str] = ("jax", "torch_ref")   # the two implementations compared
    mode: str = "update"
    env: str | None = None
    steps: int = 0                  # environment steps compared
    episodes: int = 0
    evaluations: int = 0
    series: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # group -> max_rel per step
    wall_seconds: float = 0.0
    interrupted: bool = False
    episode_ends: list[int] = dataclasses.field(default_factory=list)
    evaluation_steps: list[int] = dataclasses.field(default_factory=list)
    perturbed: str | None = None    # tensor of the second run moved by one ulp at the start
    mutant: str | None = None       # the catalogue bug put into the second run (``parity.mutants``)
    verdict: Verdict | None = None  # run level: why the runs separated (None if they did not, or not asked)

    @property
    def unit(self) -> str:
        return "update" if self.mode == "update" else "step"

    @property
    def passed(self) -> bool:
        return self.first_divergence is None and not self.interrupted

    @property
    def steps_within_tolerance(self) -> int:
        """Steps (updates at the update level) completed before the first divergence (all if none)."""
        total = self.updates if self.mode == "update" else self.steps
        if self.first_divergence is None:
            return total
        d = self.first_divergence
        if self.mode == "update":
            return d.update - 1
        assert d.step is not None, "a run-level divergence carries its environment step"
        return d.step - 1

    def to_dict(self, include_series: bool = False) -> dict:
        first = self.first_divergence.to_dict() if self.first_divergence else None
        if self.mode == "update":
            out = {"passed": self.passed, "algo": self.algo, "dtype": self.dtype, "updates": self.updates,
                   "quantities": {name: {"max_abs": s.max_abs, "max_rel": s.max_rel, "tol": s.tol}
                                  for name, s in self.quantities.items()},
                   "first_divergence": first}
            if self.mutant is not None:
                out["mutant"] = self.mutant
            return out
        out = {
            "passed": self.passed, "mode": "run", "algo": self.algo, "env": self.env, "dtype": self.dtype,
            "backends": list(self.backends), "steps": self.steps, "updates": self.updates,
            "episodes": self.episodes, "evaluations": self.evaluations,
            "steps_within_tolerance": self.steps_within_tolerance,
            "max_rel": max((s.max_rel for s in self.quantities.values()), default=0.0),
            "quantities": {name: {"max_abs": s.max_abs, "max_rel": s.max_rel, "tol": s.tol,
                                  "first_violation_step": s.first_violation}
                           for name, s in self.quantities.items()},
            "first_divergence": first,
            "wall_seconds": round(self.wall_seconds, 3), "interrupted": self.interrupted,
            "perturbed": self.perturbed, "mutant": self.mutant,
            "verdict": self.verdict.to_dict() if self.verdict else None,
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
            where = f"update {d.update}" if self.mode == "update" else f"step {d.step} (after {d.update} updates)"
            lines += [f"FIRST DIVERGENCE at {where}: {d.quantity} "
                      f"(max_abs {d.max_abs:.3e}, max_rel {d.max_rel:.3e} > tol {d.tol:.1e})", ""]
        width = max(len(n) for n in self.quantities)
        lines.append(f"{'quantity':<{width}}  {'max_abs':>10}  {'max_rel':>10}  {'tol':>8}  ok")
        for name, s in self.quantities.items():
            ok = "yes" if s.first_violation is None else f"NO (first at {self.unit} {s.first_violation})"
            lines.append(f"{name:<{width}}  {s.max_abs:10.3e}  {s.max_rel:10.3e}  {s.tol:8.1e}  {ok}")
        verdict = "PASSED" if self.passed else ("INTERRUPTED" if self.interrupted else "FAILED")
        if self.mode == "update":
            lines += ["", f"{verdict}: {self.algo}, {self.dtype}, {self.updates} updates, "
                          f"{len(self.quantities)} quantities"]
        else:
            perturbed = f" ({self.perturbed} of the second run moved by one ulp)" if self.perturbed else ""
            if self.mutant:
                perturbed += f" (the second run with bug {self.mutant})"
            lines += ["", f"{verdict}: {self.algo} on {self.env}, {self.dtype}, {' vs '.join(self.backends)}"
                          f"{perturbed}: {self.steps} steps, {self.updates} updates, {self.episodes} episodes, "
                          f"{self.evaluations} evaluations; equal within tolerance for "
                          f"{self.steps_within_tolerance} steps ({self.wall_seconds:.0f} s)"]
            if self.verdict is not None:
                lines.append(self.verdict.line())
        return "\n".join(lines)


class Tracker:
    """Worst differences per quantity and the first divergence, as comparisons come in.

    ``tol`` is the tolerance of a quantity first seen in ``record`` without its own; ``expect``
    adds a quantity ahead of time (so the report lists it, in that order, even if never measured).
    """

    def __init__(self, tol: float = 0.0):
        self.tol = tol
        self.stats: dict[str, QuantityStats] = {}
        self.first: Divergence | None = None

    def expect(self, name: str, tol: float) -> None:
        self.stats.setdefault(name, QuantityStats(tol=tol))

    def record(self, name: str, max_abs: float, max_rel: float, update: int, step: int | None = None,
               tol: float | None = None) -> None:
        """One measurement after update ``update`` (and environment step ``step`` at the run level)."""
        s = self.stats.setdefault(name, QuantityStats(tol=self.tol if tol is None else tol))
        s.max_abs, s.max_rel = max(s.max_abs, max_abs), max(s.max_rel, max_rel)
        if not max_rel <= s.tol and s.first_violation is None:
            s.first_violation = update if step is None else step
            if self.first is None:
                self.first = Divergence(update, name, max_abs, max_rel, s.tol, step)

    def record_exact(self, name: str, errors: float, update: int, step: int | None = None) -> None:
        """A count that must be zero (schedule and counter mismatches): recorded with tolerance 0."""
        self.record(name, float(errors), float(errors), update, step, tol=0.0)
