"""MuJoCo Playground through our adapter (``jax_td3.envs.playground``) on this machine: environment steps per
second, N environments vmapped, uniform random actions, one jitted ``lax.scan`` of STEPS steps, after
compilation. Two programs per N: "step" steps only (never resets); "step+reset" also does what the compiled
loop does at every step, a reset of every environment selected (``where``) where an episode ended.
Prints one line per measurement.

    python benchmarks/playground_steps.py CheetahRun jax 200 16,64,256     # NAME IMPL STEPS N,N,...
"""

import sys
import time

import jax
import jax.numpy as jnp

from jax_td3.envs import make_jax_env

name, impl, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = make_jax_env(f"playground:{name}", playground_impl=impl)
act = env.spec.act_dim
print(f"playground:{name} impl={env.impl} obs={env.spec.obs_dim} act={act} devices={jax.devices()}", flush=True)


def program(n, with_reset):
    def run(state, key):
        def body(carry, k):
            state, total = carry
            ka, kr = jax.random.split(k)
            a = jax.random.uniform(ka, (n, act), minval=-1, maxval=1)
            state, obs, reward, terminated, truncated = jax.vmap(env.step)(state, a)
            if with_reset:
                fresh, _ = jax.vmap(env.reset_from)(jax.random.split(kr, n))
                done = terminated | truncated
                state = jax.tree_util.tree_map(
                    lambda f, s: jnp.where(done.reshape((n,) + (1,) * (s.ndim - 1)), f, s), fresh, state)
            return (state, total + reward.sum()), None

        return jax.lax.scan(body, (state, jnp.float32(0)), jax.random.split(key, steps))[0][1]
    return run


key = jax.random.key(0)
for n in [int(x) for x in sys.argv[4].split(",")]:
    start = jax.jit(jax.vmap(lambda k: env.reset(k, jnp.float32)[0]))(jax.random.split(key, n))
    for with_reset in (False, True):
        what = "step+reset" if with_reset else "step"
        t = time.perf_counter()
        compiled = jax.jit(program(n, with_reset)).lower(start, key).compile()
        ct = time.perf_counter() - t
        jax.block_until_ready(compiled(start, key))            # one untimed call: first-touch allocations
        t = time.perf_counter()
        jax.block_until_ready(compiled(start, key))
        rt = time.perf_counter() - t
        print(f"{name} {env.impl} N={n} {what}: compile {ct:.1f}s, {n * steps / rt:,.0f} env steps/s "
              f"({rt / steps / n * 1e6:.0f} us per env step)",
              flush=True)
