"""Settings for the whole test run."""

import os
import shutil
import tempfile

import pytest

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


@pytest.fixture
def x64():
    """JAX's x64 mode for one test. The library never switches it on (a process-wide setting belongs to its
    caller), so a test that computes in float64 asks for it; the previous setting comes back afterwards."""
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(autouse=True)
def x64_for_float64_params(request):
    """A test parametrized with ``dtype`` float64 gets JAX's x64 mode (as if it asked for ``x64``)."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if str(params.get("dtype", "")) == "float64":
        request.getfixturevalue("x64")
    yield
