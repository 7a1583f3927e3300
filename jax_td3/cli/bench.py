"""``jax-td3 bench``: the benchmark suite (see benchmarks/README.md)."""

from benchmarks.suite import add_arguments, run

__all__ = ["add_arguments", "run"]
