"""XLA compiler options for the functions this package compiles, chosen by measurement.

On XLA:CPU, jaxlib 0.10 hands dot products (with their fused neighbours) to YNNPACK by
default. For the MLP shapes of TD3 (256x256 and narrower, batch 100-256) XLA's own Eigen
dots were faster in every comparison we ran. The 256-256 update's best rounds took
3.35-3.65 ms instead of 3.9-4.1 ms, interleaved in one process; the medians were 7% apart.
The whole compiled 64-64 Pendulum run was no slower (benchmarks/results/compiled.md,
section (e)). So the update and the compiled training program are compiled
with YNNPACK fusions switched off.

This is per function (``jax.jit(..., compiler_options=...)``), not process-wide: other
JAX code in the same process is untouched. Nothing is changed when
- the default backend is not the CPU;
- ``XLA_FLAGS`` already mentions YNNPACK (the user chose);
- ``JAX_TD3_XLA_DEFAULTS=1`` is set (to compare against XLA's defaults);
- this jaxlib does not know the option (older and newer versions may not have it).
"""

from __future__ import annotations

import functools
import os

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options() -> dict | None:
    """Options to pass as ``compiler_options`` to ``jax.jit`` or ``.compile()``; None for XLA's defaults.

    The environment variables are read on every call (a caller may set them at any time); only the
    probe of this jaxlib is remembered, per backend."""
    import jax

    if os.environ.get("JAX_TD3_XLA_DEFAULTS", "") not in ("", "0"):
        return None
    if "ynn" in os.environ.get("XLA_FLAGS", ""):
        return None
    backend = jax.default_backend()
    if backend != "cpu" or not _knows_ynn_option(backend):
        return None
    return dict(YNN_OFF)


@functools.lru_cache(maxsize=None)
def _knows_ynn_option(backend: str) -> bool:
    """Whether this jaxlib accepts ``YNN_OFF`` on ``backend`` (an unknown option is an error at compile time:
    probe once with a trivial function)."""
    import jax
    import numpy as np

    try:
        jax.jit(lambda x: x + 1, compiler_options=YNN_OFF).lower(np.float32(0)).compile()
    except Exception:
        return False
    return True


def with_defaults(extra: dict | None = None) -> dict | None:
    """``compiler_options()`` overlaid with the caller's own options (theirs win)."""
    merged = {**(compiler_options() or {}), **(extra or {})}
    return merged or None
