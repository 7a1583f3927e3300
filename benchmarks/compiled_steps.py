"""The compiled loop's environment-step rate with no learning: TD3 (32-32, never updating:
``learning_starts`` = the run) on ENV with N environments per agent, one agent, timed over one chunk of
STEPS vector steps after a first, untimed chunk (which compiles). Shows what the loop around the
environment costs, resets included (a reset happens where an episode ends). Prints one line.

    python benchmarks/compiled_steps.py playground:CheetahRun 16 1000       # ENV N STEPS
"""

import sys
import time

from jax_td3.config import config_for_env
from jax_td3.envs import make_jax_env
from jax_td3.loops.compiled import ChunkedRun, LoopSettings

env_id, n, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = make_jax_env(env_id, playground_impl="jax") if env_id.startswith("playground:") else make_jax_env(env_id)
config = config_for_env("td3", env.spec, hidden=(32, 32), batch_size=32)
settings = LoopSettings(total_steps=2 * steps * n, learning_starts=2 * steps * n, eval_every=steps * n,
                        eval_episodes=1, buffer_size=2 * steps * n, num_envs=n)
run = ChunkedRun(config, settings, [0], env=env)
start = time.perf_counter()
agents, done = run.advance(run.initial_agents(), 0)
first = time.perf_counter() - start
before = run.run_seconds
run.advance(agents, done)
seconds = run.run_seconds - before
print(f"{env_id} N={n} {steps} vector steps: {n * steps / seconds:,.0f} env steps/s "
      f"({seconds:.2f} s; first chunk with compilation {first:.0f} s)", flush=True)
