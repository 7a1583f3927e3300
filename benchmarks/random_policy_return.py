"""Return of the uniformly random policy on a JAX-native environment: the baseline a learning curve is
read against. Prints one JSON line. ``python benchmarks/random_policy_return.py brax:halfcheetah``"""

import json
import sys

import jax
import jax.numpy as jnp

from jax_td3.envs import make_jax_env


def random_returns(env_id: str, episodes: int = 32, seed: int = 0, brax_backend: str = "spring"):
    env = make_jax_env(env_id, brax_backend=brax_backend)
    low, high = jnp.asarray(env.spec.action_low), jnp.asarray(env.spec.action_high)

    @jax.jit
    def run(key):
        reset_key, step_key = jax.random.split(key)
        states, _ = jax.vmap(lambda k: env.reset(k, jnp.float32))(jax.random.split(reset_key, episodes))

        def step(carry, key):
            states, returns, running = carry
            actions = jax.random.uniform(key, (episodes, env.spec.act_dim), minval=low, maxval=high)
            states, _, rewards, terminated, truncated = jax.vmap(env.step)(states, actions)
            returns = returns + jnp.where(running, rewards, 0.0)
            return (states, returns, running & ~(terminated | truncated)), None

        carry = (states, jnp.zeros(episodes), jnp.ones(episodes, bool))
        return jax.lax.scan(step, carry, jax.random.split(step_key, env.spec.max_episode_steps))[0][1]

    return run(jax.random.key(seed))


if __name__ == "__main__":
    env_id = sys.argv[1] if len(sys.argv) > 1 else "brax:halfcheetah"
    returns = random_returns(env_id)
    print(json.dumps({"env": env_id, "episodes": int(returns.shape[0]), "mean_return": float(returns.mean()),
                      "std_return": float(returns.std()), "min": float(returns.min()), "max": float(returns.max())}))
