"""Brax physics backends on this machine: microseconds per environment step and per reset, N environments
vmapped, uniform random actions, one scanned program, after compilation. Prints one line per measurement.

    python benchmarks/brax_backends.py halfcheetah spring 16 200     # NAME BACKEND N STEPS
"""

import sys
import time

import brax.envs as be
import jax

name, backend, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = be.get_environment(name, backend=backend)
keys = jax.random.split(jax.random.key(0), n)
def run(keys):
    s = jax.vmap(env.reset)(keys)
    def body(s, k):
        a = jax.random.uniform(k, (n, env.action_size), minval=-1, maxval=1)
        s = jax.vmap(env.step)(s, a)
        return s, s.reward
    s, r = jax.lax.scan(body, s, jax.random.split(jax.random.key(1), steps))
    return r.sum()
def resets(keys):
    def body(c, k):
        s = jax.vmap(env.reset)(jax.random.split(k, n))
        return c + s.obs.sum(), None
    return jax.lax.scan(body, 0.0, jax.random.split(jax.random.key(1), steps))[0]
for f, what in ((run, "step"), (resets, "reset")):
    t = time.perf_counter()
    c = jax.jit(f).lower(keys).compile()
    ct = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(c(keys))
    rt = time.perf_counter() - t
    print(f"{name} {backend} N={n} {what}: compile {ct:.1f}s, {rt/steps/n*1e6:.0f} us per env {what}", flush=True)
