"""The machine's matmul speed at the update's own shapes: the compute floor of an update.

For every (stack, m, k, n) product of an update (``flops.update_gemms``) the
fastest of JAX's and PyTorch's matmul (JAX's alone without PyTorch) is timed, back to back in a loop (JAX: a
compiled ``fori_loop``, so no per-call dispatch; PyTorch: ``torch.mm``/``torch.bmm``
with ``out=``).
The floor of one update is the sum over its products of count x best time: the
time the update would take if it did nothing but its matmuls, each at the best
speed this machine showed for that shape.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jax_td3.bench import torch_if_installed
from jax_td3.bench.flops import Shape, gemm_flops

_TRIALS = 3        # best of


@jax.jit
def _jax_loop(a: jax.Array, b: jax.Array, iterations: int) -> jax.Array:
    # a changes every iteration so the product cannot be hoisted out of the loop.
    def body(_: int, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        a, acc = carry
        return a * 1.0000001, acc + jnp.sum(a @ b)
    return jax.lax.fori_loop(0, iterations, body, (a, jnp.zeros((), a.dtype)))[1]


def _best_per_iteration(run: Callable[[int], object], target_s: float, start_iterations: int = 4) -> float:
    """Seconds per iteration of ``run(iterations)``: grow the loop to last ``target_s``, best of trials."""
    iterations = start_iterations
    run(iterations)  # compile / warm
    while True:
        start = time.perf_counter()
        run(iterations)
        elapsed = time.perf_counter() - start
        if elapsed >= target_s or iterations >= 1 << 16:
            break
        iterations = int(iterations * min(16.0, max(2.0, 1.2 * target_s / max(elapsed, 1e-7))))
    best = elapsed
    for _ in range(_TRIALS - 1):
        start = time.perf_counter()
        run(iterations)
        best = min(best, time.perf_counter() - start)
    return best / iterations


def jax_gemm_seconds(shape: Shape, target_s: float = 0.02, dtype: Any = jnp.float32) -> float:
    s, m, k, n = shape
    rng = np.random.default_rng(0)
    a = jax.device_put(rng.standard_normal((s, m, k)).astype(dtype))
    b = jax.device_put(rng.standard_normal((s, k, n)).astype(dtype))
    return _best_per_iteration(lambda it: _jax_loop(a, b, it).block_until_ready(), target_s)


def torch_gemm_seconds(shape: Shape, device: str = "cpu", target_s: float = 0.02, dtype: Any = None) -> float:
    import torch

    dtype = dtype or torch.float32
    s, m, k, n = shape
    a = torch.randn(s, m, k, device=device, dtype=dtype)
    b = torch.randn(s, k, n, device=device, dtype=dtype)
    out = torch.empty(s, m, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    if s == 1:
        a, b, out = a[0], b[0], out[0]
        product = torch.mm
    else:
        product = torch.bmm

    def run(iterations: int) -> None:
        for _ in range(iterations):
            product(a, b, out=out)
        sync()
    # The floor is the machine's: every core, whatever thread count the timed PyTorch rows use.
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or threads)
    try:
        return _best_per_iteration(run, target_s)
    finally:
        torch.set_num_threads(threads)


class MatmulRates:
    """Best measured seconds per product shape, cached across configurations of one run."""

    def __init__(self, torch_device: str = "cpu", target_s: float = 0.02) -> None:
        self.torch_device, self.target_s = torch_device, target_s
        self.with_torch = torch_if_installed() is not None
        self.seconds: dict[Shape, dict[str, float]] = {}

    def measure(self, shape: Shape) -> dict[str, float]:
        if shape not in self.seconds:
            self.seconds[shape] = {"jax": jax_gemm_seconds(shape, self.target_s)}
            if self.with_torch:
                self.seconds[shape]["torch"] = torch_gemm_seconds(shape, self.torch_device, self.target_s)
        return self.seconds[shape]

    def floor(self, gemms: Mapping[Shape, float]) -> dict:
        """Compute floor of an update whose products are ``gemms`` = {shape: count}."""
        floor_s = 0.0
        flops = 0.0
        for shape, count in gemms.items():
            times = self.measure(shape)
            floor_s += count * min(times.values())
            flops += count * gemm_flops(shape)
        return {"floor_s": floor_s, "matmul_flops": flops, "matmul_rate_flops_per_s": flops / floor_s}

    def table(self) -> list[dict]:
        return [{"stack": s, "m": m, "k": k, "n": n, "jax_s": t["jax"], "torch_s": t.get("torch"),
                 "best_gflops_per_s": gemm_flops((s, m, k, n)) / min(t.values()) / 1e9}
                for (s, m, k, n), t in sorted(self.seconds.items())]


def peak_rate(size: int = 1024) -> float:
    """Best FLOP/s of a square float32 matmul (a reference point beside the per-shape floors)."""
    shape = (1, size, size, size)
    seconds = [jax_gemm_seconds(shape)] + ([torch_gemm_seconds(shape)] if torch_if_installed() else [])
    return gemm_flops(shape) / min(seconds)

