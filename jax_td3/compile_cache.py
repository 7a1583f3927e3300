"""The on-disk cache of compiled XLA programs that ``jax-td3 train`` and ``eval`` use.

A run compiles a handful of programs (the initial state, the fused updates, the compiled loop) that
depend only on the configuration, not on the seed's data. JAX can keep them on disk (its persistent
compilation cache) so that the next run of the same configuration loads them instead of compiling:
on a 2-core CPU the 256-256 Pendulum run built its trainer in 0.6 s instead of 2.4-2.8 s and finished
about 4 s sooner (benchmarks/README.md, W1). A loaded program is the same machine code, so results
are the same bit for bit.

Where: ``$JAX_TD3_COMPILE_CACHE`` if set (``off`` or ``0``: no cache), else JAX's own
``JAX_COMPILATION_CACHE_DIR`` if the user set one, else ``$XDG_CACHE_HOME/jax-td3/xla`` (default
``~/.cache/jax-td3/xla``). Below that, one subdirectory per jaxlib version and processor (a hash of the
CPU's model and feature flags), so a home directory shared by machines of different processors, or an
upgraded jaxlib, never loads a program built for something else. The entries are small (kilobytes to
a few megabytes each); beyond 2 GiB JAX deletes the least recently used.

The library (``jax_td3.train`` and the rest) does not turn the cache on by itself: only the two
commands do, and the benchmarks that time compilation leave it off.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

ENV_VAR = "JAX_TD3_COMPILE_CACHE"


def _machine_key() -> str:
    """What a compiled CPU program depends on besides JAX: architecture, processor model and its features."""
    described = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                described += "\n" + line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        described += platform.processor()
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def cache_dir() -> Path | None:
    """The directory this process would use, or None when the cache is off."""
    chosen = os.environ.get(ENV_VAR, "")
    if chosen.lower() in ("off", "0", "false", "no"):
        return None
    if chosen:
        base = Path(chosen).expanduser()
    elif os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])  # the user's own JAX setting: used as it is
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jax-td3" / "xla"
    import jaxlib

    return base / f"jaxlib-{jaxlib.__version__}-{_machine_key()}"


def enable_compile_cache() -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir()`` and cache every program (JAX's default
    keeps only those that took over a second to compile; ours take 0.05-3 s). Call before the first
    compilation. Returns the directory, or None when off or not writable (then nothing changes)."""
    directory = cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK):
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX's options are attributes made at run time (hence the ignore); -1 is JAX's default: unbounded.
    if jax.config.jax_compilation_cache_max_size == -1:  # type: ignore[attr-defined]
        jax.config.update("jax_compilation_cache_max_size", 2 * 1024**3)
    return directory
