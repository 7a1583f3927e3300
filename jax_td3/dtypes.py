"""The float precisions jax_td3 computes in, and the one rule for float64 in JAX.

JAX makes float64 arrays only in its x64 mode, a process-wide setting (``jax_enable_x64``). The
library never switches it on behind the caller's back: code that builds JAX arrays in float64
checks it is on (``float_dtype``) and otherwise stops with a one-line ``ConfigError`` saying how
to turn it on; a call that starts and finishes in one thread (evaluating or exporting a saved
agent) scopes it to itself (``x64_scope``). The command line (``jax-td3 ... --dtype float64``)
switches it on for its own process.
"""

from __future__ import annotations

import contextlib

import numpy as np
from numpy.typing import DTypeLike

from jax_td3.errors import ConfigError

DTYPES = ("float32", "float64")
X64_HINT = ('float64 needs JAX\'s x64 mode: call jax.config.update("jax_enable_x64", True) before '
            'using jax_td3 (or work inside `with jax.enable_x64(True):`)')


def dtype_named(dtype: DTypeLike) -> np.dtype:
    """The NumPy dtype of ``dtype`` ("float32"/"float64" or a NumPy dtype); ConfigError for another."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return np.dtype(name)


def x64_enabled() -> bool:
    """Whether JAX makes float64 arrays here (the process-wide flag, or a ``jax.enable_x64`` scope)."""
    import jax

    return bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]  # JAX's stubs omit its flags


def float_dtype(dtype: DTypeLike) -> np.dtype:
    """``dtype_named(dtype)`` for code that builds JAX arrays in it: ConfigError for float64 while JAX's
    x64 mode is off (JAX would silently make float32)."""
    ndtype = dtype_named(dtype)
    if ndtype == np.float64 and not x64_enabled():
        raise ConfigError(X64_HINT)
    return ndtype


def x64_scope(dtype: DTypeLike) -> contextlib.AbstractContextManager[object]:
    """A context for one call that works in ``dtype`` on this thread: JAX's x64 mode switched on for its
    duration (and back off after) for float64 when it is off; nothing otherwise."""
    if dtype_named(dtype) == np.float64 and not x64_enabled():
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()
