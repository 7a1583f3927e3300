"""The update schedule of a vector step, shared by the compiled loop and the host vector loop.

``updates_per_step`` (U) is held as an exact fraction p/q (``update_fraction``); after the j-th vector
step with learning on (j = 1, 2, ...) a loop has made floor(j p / q) updates in all, so the j-th such
step makes floor(j p / q) - floor((j - 1) p / q) of them (``updates_at``). U = 1 is one update per
vector step, U = 2 two, U = 0.25 one on every 4th (the 4th, 8th, ...), U = 1.5 alternately one and
two. The schedule is a function of the step number alone: no state, so the same after a resume.
"""

from __future__ import annotations

# ``update_fraction`` is validated with the settings (the bottom layer) and re-exported here, beside the rule
# that runs on it.
from jax_td3.settings import update_fraction  # noqa: F401


def updates_at(learning_step, p: int, q: int):
    """Updates made at the learning step number ``learning_step`` (0 for the first vector step with learning
    on): floor(j p / q) - floor((j - 1) p / q) with j = ``learning_step`` + 1, computed from (j - 1) mod q so
    that it never overflows int32. Works on Python ints and on JAX integer arrays alike."""
    before = (learning_step % q) * p % q
    return (before + p) // q
