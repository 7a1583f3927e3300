"""FastTD3 in the compiled loop at many environments, and what its parts cost alone (timings, never a test).

For each N: the loop (``loops.compiled.ChunkedRun``, one agent, FastTD3 with 3-step returns and 2 updates
per vector step, updating from the third vector step) timed over a second chunk of STEPS vector steps after
a first, untimed one (which compiles and fills the replay: one ring of STEPS transitions per environment);
then its two parts, each one compiled ``lax.scan`` timed after an untimed call:

- env: the same N environments stepped STEPS times with uniform random actions, reset where an episode
  ended as the loop does (``reset_ended``: only on steps where one ended), the random numbers drawn
  for all steps before the scan (as the loop draws a block's);
- updates: the loop's updates of STEPS vector steps (``learn``: 2 per step) on the full replay the first
  chunk left, without the environments.

ratio = loop seconds / (env seconds + update seconds): 1.0 means the loop costs exactly its parts (the
issue's target at 1,024 environments: at most 1.1). Prints one JSON line per N and writes all to --out.

    python benchmarks/compiled_scale.py --num-envs 64,256,1024,4096 --steps 20 --out scale.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from jax_td3.bench.machine import load_average, machine_info
from jax_td3.config import config_for_env
from jax_td3.envs import make_jax_env
from jax_td3.loops import compiled
from jax_td3.loops.compiled import ChunkedRun, LoopSettings


def timed_twice(fn, *args):
    """Seconds of the second call of ``fn(*args)`` (the first compiles and touches memory)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def measure(env, config, n: int, steps: int) -> dict:
    n_step = config.n_step
    settings = LoopSettings(total_steps=2 * steps * n, learning_starts=(n_step - 1) * n, eval_every=steps * n,
                            eval_episodes=1, buffer_size=steps * n, num_envs=n, updates_per_step=2)
    run = ChunkedRun(config, settings, [0], env=env)
    agents, done = run.advance(run.initial_agents(), 0)            # compiles; fills the replay
    agent = jax.block_until_ready(jax.tree_util.tree_map(lambda x: x[0], agents))   # a copy (advance donates)
    before = run.run_seconds
    run.advance(agents, done)
    loop_seconds = run.run_seconds - before

    dtype = jnp.float32
    act = env.spec.act_dim

    def env_only(agent, key):
        # The random numbers drawn for all steps at once before the scan, as the loop draws its block's.
        ka, kr = jax.random.split(key)
        actions = jax.random.uniform(ka, (steps, n, act), dtype, -1.0, 1.0)
        resets = jax.tree_util.tree_map(lambda x: x.reshape((steps, n) + x.shape[1:]),
                                        env.draw_resets(kr, steps * n, dtype))

        def body(carry, x):
            env_state, total = carry
            action, reset_draws = x
            env_state, next_obs, reward, terminated, truncated = jax.vmap(env.step)(env_state, action)
            env_state, _ = compiled.reset_ended(env, env_state, next_obs, terminated | truncated, reset_draws,
                                                jax.vmap, None)
            return (env_state, total + reward.sum()), None

        return jax.lax.scan(body, (agent.env_state, jnp.zeros((), dtype)), (actions, resets))[0][1]

    def updates_only(agent, first_step):
        draws = compiled.draw_block(config, settings, env, agent.key, steps, dtype)
        step_numbers = first_step + jnp.arange(steps, dtype=jnp.int32)
        agent, _ = jax.lax.scan(lambda a, x: (compiled.learn(config, settings, a, *x), None), agent,
                                (step_numbers, draws))
        return agent.train_state

    env_seconds = timed_twice(jax.jit(env_only), agent, jax.random.key(1))
    update_seconds = timed_twice(jax.jit(updates_only), agent, jnp.int32(steps))
    return {"num_envs": n, "vector_steps": steps, "updates": 2 * steps,
            "loop_seconds": round(loop_seconds, 3), "env_seconds": round(env_seconds, 3),
            "update_seconds": round(update_seconds, 3),
            "loop_env_steps_per_second": round(n * steps / loop_seconds, 1),
            "loop_updates_per_second": round(2 * steps / loop_seconds, 1),
            "env_steps_per_second": round(n * steps / env_seconds, 1),
            "updates_per_second": round(2 * steps / update_seconds, 1),
            "ratio": round(loop_seconds / (env_seconds + update_seconds), 3),
            "compile_seconds": round(run.compile_seconds, 1), "load_average": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="brax:halfcheetah")
    parser.add_argument("--num-envs", default="64,256,1024,4096")
    parser.add_argument("--steps", type=int, default=20, help="vector steps timed per measurement")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden", default="64,64", help="actor hidden sizes")
    parser.add_argument("--critic-hidden", default="128,128")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env = make_jax_env(args.env)
    hidden = tuple(int(x) for x in args.hidden.split(","))
    critic_hidden = tuple(int(x) for x in args.critic_hidden.split(","))
    config = config_for_env("fasttd3", env.spec, hidden=hidden, critic_hidden=critic_hidden, num_atoms=101,
                            v_min=-500.0, v_max=500.0, batch_size=args.batch_size, n_step=3, gamma=0.97)
    rows = []
    for n in (int(x) for x in args.num_envs.split(",")):
        rows.append(measure(env, config, n, args.steps))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": f"FastTD3 (actor {args.hidden}, critics {args.critic_hidden}, 101 atoms, batch "
                           f"{args.batch_size}, 3-step returns, 2 updates per vector step) on {args.env}: the "
                           f"compiled loop against its parts (env stepping, updates on a full replay)",
              "settings": vars(args), "rows": rows, "machine": machine_info()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
