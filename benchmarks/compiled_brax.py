"""The compiled loop on Brax and the cost of running it in chunks: timings written as JSON (never a test).

Modes (each prints one JSON object and writes it to ``--out``):

- ``chunking``: TD3 on the JAX-native Pendulum (64-64, batch 100, 10,000 steps, evaluation every
  5,000) as a ``loops.compiled.ChunkedRun`` with one compiled call per evaluation period (its default)
  and with chunks of 1,000 steps: seconds after compilation, alternating A, B, A, B ... ``--repeats`` times.
- ``scaling``: ``jax_td3.bench.compiled.brax_scaling``: TD3 (256-256, batch 256, one update per vector
  step from the first) on ``--env`` (default brax:halfcheetah) with N environments per agent and K agents:
  environment steps (transitions) per second and updates per second, timed over one chunk after a first,
  untimed one; compilation and evaluation excluded.
- ``rejax``: the issue's comparison on ``--env``: 16 environments, 32,000 transitions, 64-64 ReLU
  networks, batch 256, one update per vector step (the actor every second), learning after 3,200
  transitions, an evaluation of 8 episodes at the start and at the end; for K = 1 and K = 8 agents:
  the environment-only floor (the same environment steps with uniform random actions in one scanned
  program, plus the same two evaluations of a fixed policy), Rejax 0.1.3's TD3 and ours, each after
  compilation, median of ``--repeats`` runs, in this one process.

    python benchmarks/compiled_brax.py chunking --out benchmarks/results/compiled_chunking.json
    python benchmarks/compiled_brax.py scaling --out benchmarks/results/compiled_brax_scaling.json
    python benchmarks/compiled_brax.py rejax --out benchmarks/results/compiled_brax_rejax.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_td3.bench.machine import load_average, machine_info
from jax_td3.config import config_for_env
from jax_td3.envs import make_jax_env
from jax_td3.loops import compiled
from jax_td3.loops.compiled import ChunkedRun, LoopSettings


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


# -- chunking ---------------------------------------------------------------------------------------

def chunking(repeats: int) -> dict:
    from jax_td3.envs.pendulum import PendulumEnv

    env = PendulumEnv()
    config = config_for_env("td3", env.spec, hidden=(64, 64), batch_size=100, actor_lr=1e-3, critic_lr=1e-3)
    settings = LoopSettings(total_steps=10_000, learning_starts=1_000, eval_every=5_000, eval_episodes=10,
                            buffer_size=10_000)
    seeds = np.zeros(1, np.int32)
    runs = {chunk: ChunkedRun(config, settings, seeds, env=env, chunk_steps=chunk) for chunk in (5_000, 1_000)}
    for run in runs.values():
        run.run()              # compiles every program of the run
    rows = {f"chunks_of_{c}": [] for c in runs}
    for _ in range(repeats):   # alternating, so that a change of machine load hits every variant
        for chunk, run in runs.items():
            rows[f"chunks_of_{chunk}"].append(run.run().run_seconds)
    result = {name: {"median_seconds": round(float(np.median(t)), 3), "seconds": [round(x, 3) for x in t]}
              for name, t in rows.items()}
    base = result["chunks_of_5000"]["median_seconds"]
    for row in result.values():
        row["ratio_to_one_chunk_per_period"] = round(row["median_seconds"] / base, 3)
    return {"benchmark": "compiled run in chunks of 5,000 (one per evaluation period) and of 1,000 steps: TD3, "
                         "JAX-native Pendulum, 64-64, batch 100, 10,000 steps, evaluation every 5,000 (10 episodes)",
            "compile_seconds": {str(c): round(r.compile_seconds, 2) for c, r in runs.items()},
            "results": result}


# -- scaling ----------------------------------------------------------------------------------------

def scaling(env_id: str, backend: str, num_envs: list[int], num_agents: list[int]) -> dict:
    from jax_td3.bench.compiled import BraxScalingRun, brax_scaling

    run = BraxScalingRun(env=env_id, brax_backend=backend, num_envs=tuple(num_envs), num_seeds=tuple(num_agents))
    return brax_scaling(run, announce=lambda line: print(line, flush=True))


# -- against Rejax ----------------------------------------------------------------------------------

REJAX = {"num_envs": 16, "total_steps": 32_000, "learning_starts": 3_200, "batch_size": 256, "eval_episodes": 8,
         "hidden": 64}


def floor_program(env, num_agents: int):
    """The environment work of the comparison alone: the same vector steps with uniform random actions in
    one scanned program (auto-reset as the loop does it), plus two evaluations of a fixed policy."""
    n, steps = REJAX["num_envs"], REJAX["total_steps"] // REJAX["num_envs"]
    config = config_for_env("td3", env.spec, hidden=(REJAX["hidden"],) * 2)
    settings = LoopSettings(total_steps=REJAX["total_steps"], eval_every=REJAX["total_steps"],
                            eval_episodes=REJAX["eval_episodes"], num_envs=n)

    def one_agent(key):
        from jax_td3.update import init_train_state

        params = init_train_state(config, key).actor_params
        reset_key, loop_key, eval_key = jax.random.split(key, 3)
        states, _ = jax.vmap(env.reset_from)(env.draw_resets(reset_key, n, jnp.float32))

        def step(carry, key):
            states, total = carry
            action_key, reset_key = jax.random.split(key)
            actions = jax.random.uniform(action_key, (n, env.spec.act_dim), minval=-1, maxval=1)
            states, _, reward, terminated, truncated = jax.vmap(env.step)(states, actions)
            fresh, _ = jax.vmap(env.reset_from)(env.draw_resets(reset_key, n, jnp.float32))
            done = terminated | truncated
            states = jax.vmap(lambda d, a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(d, x, y), a, b))(
                done, fresh, states)
            return (states, total + reward.sum()), None

        (_, total), _ = jax.lax.scan(step, (states, 0.0), jax.random.split(loop_key, steps))
        returns = [compiled.evaluate(config, settings, env, params, eval_key, jnp.float32) for _ in range(2)]
        return total, returns

    return jax.jit(jax.vmap(one_agent)), jax.random.split(jax.random.key(0), num_agents)


def ours_program(env, num_agents: int):
    """Our run (a ``ChunkedRun``, one call per evaluation period) as ``compile() -> run()``."""
    config = config_for_env("td3", env.spec, hidden=(REJAX["hidden"],) * 2, batch_size=REJAX["batch_size"])
    settings = LoopSettings(total_steps=REJAX["total_steps"], learning_starts=REJAX["learning_starts"],
                            eval_every=REJAX["total_steps"], eval_episodes=REJAX["eval_episodes"],
                            buffer_size=REJAX["total_steps"], num_envs=REJAX["num_envs"], updates_per_step=1.0)
    run = ChunkedRun(config, settings, np.arange(num_agents, dtype=np.int32), env=env)

    def compile_run():
        run.compile_ahead()
        return lambda: run.run().eval_returns

    return compile_run


def jitted(fn, args):
    """A whole run as one jittable function, as ``compile() -> run()``."""
    def compile_run():
        executable = jax.jit(fn).lower(*args).compile()
        return lambda: executable(*args)

    return compile_run


def rejax_program(env_id: str, backend: str, num_agents: int):
    from rejax import TD3
    from rejax.evaluate import evaluate

    name = env_id.split(":", 1)[1]
    algo = TD3.create(env=f"brax/{name}", env_params={"backend": backend}, num_envs=REJAX["num_envs"],
                      total_timesteps=REJAX["total_steps"], eval_freq=REJAX["total_steps"],
                      fill_buffer=REJAX["learning_starts"], buffer_size=REJAX["total_steps"],
                      batch_size=REJAX["batch_size"], learning_rate=3e-4, policy_delay=2, polyak=0.995,
                      actor_kwargs={"activation": "relu"}, critic_kwargs={"activation": "relu"})

    def eval_callback(algo, ts, rng):
        return evaluate(algo.make_act(ts), rng, algo.env, algo.env_params, REJAX["eval_episodes"],
                        algo.env_params.max_steps_in_episode)

    algo = algo.replace(eval_callback=eval_callback)
    keys = jax.random.split(jax.random.PRNGKey(0), num_agents)
    return (lambda keys: jax.vmap(algo.train)(keys)[1]), (keys,)


def rejax_comparison(env_id: str, backend: str, num_agents: list[int], repeats: int) -> dict:
    env = make_jax_env(env_id, brax_backend=backend)
    rows = []
    for k in num_agents:
        floor, floor_keys = floor_program(env, k)
        variants = {"floor": jitted(floor, (floor_keys,)), "rejax": jitted(*rejax_program(env_id, backend, k)),
                    "jax_td3": ours_program(env, k)}
        compiled_variants, row = {}, {"num_agents": k}
        for name, compile_run in variants.items():
            start = time.perf_counter()
            compiled_variants[name] = compile_run()
            row[f"{name}_compile_seconds"] = round(time.perf_counter() - start, 1)
        times = {name: [] for name in variants}
        for _ in range(repeats):   # alternating
            for name, run in compiled_variants.items():
                times[name].append(timed(run)[1])
        for name, t in times.items():
            row[f"{name}_seconds"] = round(float(np.median(t)), 2)
            row[f"{name}_seconds_all"] = [round(x, 2) for x in t]
        row["jax_td3_over_floor"] = round(row["jax_td3_seconds"] / row["floor_seconds"], 3)
        row["rejax_over_jax_td3"] = round(row["rejax_seconds"] / row["jax_td3_seconds"], 3)
        row["load_average"] = load_average()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"benchmark": f"TD3 against Rejax 0.1.3 and the environment-only floor on {env_id} ({backend}): "
                         + ", ".join(f"{k} {v}" for k, v in REJAX.items()), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("chunking", "scaling", "rejax"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--env", default="brax:halfcheetah")
    parser.add_argument("--brax-backend", default="spring")
    parser.add_argument("--num-envs", default="1,16,128")
    parser.add_argument("--num-agents", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    before = {"load_average": load_average()}
    agents = [int(x) for x in args.num_agents.split(",")]
    if args.mode == "chunking":
        result = chunking(args.repeats)
    elif args.mode == "scaling":
        result = scaling(args.env, args.brax_backend, [int(x) for x in args.num_envs.split(",")], agents)
    else:
        result = rejax_comparison(args.env, args.brax_backend, agents, args.repeats)
    result.update(command=f"python benchmarks/compiled_brax.py {args.mode} --env {args.env} --brax-backend "
                          f"{args.brax_backend} --num-envs {args.num_envs} --num-agents {args.num_agents} "
                          f"--repeats {args.repeats}",
                  machine=machine_info(), machine_before=before, machine_after={"load_average": load_average()})
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
