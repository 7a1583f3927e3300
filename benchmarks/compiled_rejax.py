"""Rejax's TD3 on gymnax Pendulum-v1 with the settings of our compiled benchmark (for comparison).

Runs in its own virtual environment (Rejax pins its own JAX); prints one JSON line.
It imports nothing from this project. Same work as ``jax-td3 bench compiled native``:
hidden 64-64, batch 100, one seed, one update per step after ``--learning-starts``,
evaluation every ``--eval-every`` steps with ``--eval-episodes`` episodes.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total-steps", type=int, default=10_000)
    parser.add_argument("--learning-starts", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after compilation; the median is reported")
    args = parser.parse_args()

    from rejax import TD3
    from rejax.evaluate import evaluate

    algo = TD3.create(env="Pendulum-v1", total_timesteps=args.total_steps, eval_freq=args.eval_every,
                      batch_size=args.batch_size, fill_buffer=args.learning_starts, buffer_size=args.total_steps,
                      learning_rate=args.learning_rate, num_envs=1,
                      exploration_noise=0.2,  # absolute: 0.1 x action scale 2
                      policy_delay=2, polyak=0.995, gamma=0.99)

    def eval_callback(algo, ts, rng):
        return evaluate(algo.make_act(ts), rng, algo.env, algo.env_params, args.eval_episodes,
                        algo.env_params.max_steps_in_episode)

    algo = algo.replace(eval_callback=eval_callback)
    train = jax.jit(algo.train)
    key = jax.random.PRNGKey(args.seed)
    start = time.perf_counter()
    compiled = train.lower(key).compile()
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, (lengths, returns) = jax.block_until_ready(compiled(key))
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "library": "rejax", "rejax_jax_version": jax.__version__, "compile_seconds": compile_seconds,
        "run_seconds": sorted(times)[len(times) // 2], "run_seconds_all": times,
        "eval_return_curve": [float(r) for r in jnp.mean(returns, axis=-1)],
        "final_eval_return": float(jnp.mean(returns[-1])), "settings": vars(args),
    }))


if __name__ == "__main__":
    main()
