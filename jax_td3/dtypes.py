"""The one float-precision switch: every part of jax_td3 that builds arrays goes through ``enable_dtype``."""

from __future__ import annotations

import numpy as np

from jax_td3.errors import ConfigError

DTYPES = ("float32", "float64")


def enable_dtype(dtype) -> np.dtype:
    """The NumPy dtype of ``dtype`` ("float32"/"float64"), with JAX's x64 mode switched on for float64.

    float64 needs x64 before any float64 array is made (both backends build JAX-layout states);
    once on, it stays on for the process.
    """
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if name == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
    return np.dtype(name)
