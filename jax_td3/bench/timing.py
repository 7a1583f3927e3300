"""Timing a callable: warm-up (with compilation) excluded, several repetitions, median and spread."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per update: one value per repetition, and their summary."""

    per_update_s: tuple[float, ...]
    updates_per_call: int
    calls_per_rep: int
    first_call_s: float     # the first call: tracing and compilation, plus one execution
    compile_s: float        # warm-up time beyond what the same calls take once warm

    @property
    def median_s(self) -> float:
        return float(np.median(self.per_update_s))

    def summary(self) -> dict:
        q1, q3 = np.percentile(self.per_update_s, [25, 75])
        return dict(median=self.median_s, q1=float(q1), q3=float(q3), min=float(min(self.per_update_s)),
                    max=float(max(self.per_update_s)), reps=list(self.per_update_s))


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()``'s result and its wall seconds (``call`` must wait for its own work: block_until_ready)."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def repeat_timed(call: Callable[[], T], repeats: int) -> tuple[T, list[float]]:
    """The last result and the wall seconds of each of ``repeats`` calls (nothing excluded: warm up first)."""
    if repeats < 1:
        raise ValueError(f"`repeats` must be positive, got {repeats}")
    result, elapsed = timed(call)
    seconds = [elapsed]
    for _ in range(repeats - 1):
        result, elapsed = timed(call)
        seconds.append(elapsed)
    return result, seconds


def time_calls(call: Callable[[], object], sync: Callable[[object], None], updates_per_call: int,
               repetitions: int, min_rep_s: float, warmup_calls: int = 3) -> Timing:
    """Time ``call`` (which performs ``updates_per_call`` updates) after ``warmup_calls`` calls.

    ``sync(result)`` waits until the call's work is done (block_until_ready, CUDA sync).
    Each repetition runs enough calls to last at least ``min_rep_s``.
    """
    start = time.perf_counter()
    sync(call())
    first_call_s = time.perf_counter() - start
    for _ in range(warmup_calls - 1):
        sync(call())
    warmup_s = time.perf_counter() - start

    # Calibrate the calls per repetition on a short warm run.
    probe_start = time.perf_counter()
    probe_calls = 0
    while probe_calls < 2 or time.perf_counter() - probe_start < min_rep_s / 4:
        sync(call())
        probe_calls += 1
    per_call = (time.perf_counter() - probe_start) / probe_calls
    calls = max(1, int(np.ceil(min_rep_s / per_call)))

    per_update = []
    for _ in range(repetitions):
        start = time.perf_counter()
        result = None
        for _ in range(calls):
            result = call()
        sync(result)
        per_update.append((time.perf_counter() - start) / (calls * updates_per_call))
    steady_call = float(np.median(per_update)) * updates_per_call
    compile_s = max(0.0, warmup_s - warmup_calls * steady_call)
    return Timing(tuple(per_update), updates_per_call, calls, first_call_s, compile_s)
