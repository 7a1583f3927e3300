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
        return (d.update if self.mode == "update" else d.step) - 1

    def to_dict(self, include_series: bool = False) -> dict:
        first = self.first_divergence.to_dict() if self.first_divergence else None
        if self.mode == "update":
            return {"passed": self.passed, "algo": self.algo, "dtype": self.dtype, "updates": self.updates,
                    "quantities": {name: {"max_abs": s.max_abs, "max_rel": s.max_rel, "tol": s.tol}
                                   for name, s in self.quantities.items()},
                    "first_divergence": first}
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
            lines += ["", f"{verdict}: {self.algo} on {self.env}, {self.dtype}, {' vs '.join(self.backends)}"
                          f"{perturbed}: {self.steps} steps, {self.updates} updates, {self.episodes} episodes, "
                          f"{self.evaluations} evaluations; equal within tolerance for "
                          f"{self.steps_within_tolerance} steps ({self.wall_seconds:.0f} s)"]
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
