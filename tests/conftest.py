"""Settings for the whole test run."""

import os
import shutil
import tempfile

_cache = None


def pytest_configure(config):
    # `jax-td3 train` and `eval` keep compiled programs on disk (jax_td3/compile_cache.py). The tests give
    # them a directory of their own, removed at the end, rather than the user's cache.
    global _cache
    if "JAX_TD3_COMPILE_CACHE" not in os.environ:
        _cache = tempfile.mkdtemp(prefix="jax-td3-test-xla-")
        os.environ["JAX_TD3_COMPILE_CACHE"] = _cache


def pytest_unconfigure(config):
    if _cache is not None:
        shutil.rmtree(_cache, ignore_errors=True)
