"""Evaluating a saved agent: the noiseless policy's mean/std return over N episodes.

The source is a checkpoint file, a run directory (its newest valid checkpoint), or
a PyTorch file written by ``jax-td3 export --to torch`` (its state_dicts must fit the
torch_ref modules exactly).
A checkpoint of either backend loads into either backend (they share the JAX layout).
"""

from __future__ import annotations

import numpy as np

from jax_td3.errors import CheckpointError, ConfigError
from jax_td3.loops.exploration import evaluation_seed


def evaluate_checkpoint(path, episodes: int = 10, env_id: str | None = None, seed: int | None = None,
                        backend: str = "jax", agent: int = 0) -> dict:
    """Load ``path`` into ``backend`` and run ``episodes`` noiseless episodes; returns mean/std/returns.

    ``agent`` picks one of the agents of a compiled multi-seed run's checkpoint.
    """
    from jax_td3.export import train_state_from_checkpoint

    if str(path).endswith(".pt"):
        return _evaluate_torch_export(path, episodes, env_id, seed, backend)
    config, dtype, state, checkpoint = train_state_from_checkpoint(path, agent)
    contents = checkpoint.contents
    try:
        if "train_states" in contents:  # a compiled run: one train state per seed
            settings = {"env": checkpoint.metadata["env"], "seed": contents["compiled"]["seeds"][agent]}
        else:
            settings = contents["settings"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path} lacks the contents of a training run ({err})") from None
    seed = evaluation_seed(settings["seed"]) if seed is None else seed
    result = _run_policy(config, dtype, state, env_id or settings["env"], episodes, seed, backend)
    return {"checkpoint": str(checkpoint.path), **result, "step": checkpoint.metadata.get("step"),
            "trained_with": checkpoint.metadata.get("backend")}


def _evaluate_torch_export(path, episodes, env_id, seed, backend) -> dict:
    from jax_td3.export import train_state_from_torch_export

    config, dtype, state, description = train_state_from_torch_export(path)
    env_id = env_id or description.get("env")
    if env_id is None:
        raise ConfigError(f"{path} does not name its environment; give its `env`")
    seed = 0 if seed is None else seed
    result = _run_policy(config, dtype, state, env_id, episodes, seed, backend)
    return {"checkpoint": str(path), **result, "step": description.get("step"), "trained_with": "torch export"}


def _run_policy(config, dtype, state, env_id, episodes, seed, backend) -> dict:
    from jax_td3.backends import enable_dtype, make_backend
    from jax_td3.envs import env_spec, make_env
    from jax_td3.loops.host import evaluate_policy

    enable_dtype(dtype)
    env = make_env(env_id)
    spec = env_spec(env)
    if (spec.obs_dim, spec.act_dim) != (config.obs_dim, config.act_dim):
        env.close()
        raise CheckpointError(f"{spec.env_id} has obs/act dims {spec.obs_dim}/{spec.act_dim}; the saved "
                              f"agent was trained for {config.obs_dim}/{config.act_dim}")
    learner = make_backend(backend, config, state, dtype)
    try:
        returns = evaluate_policy(learner.act, env, episodes, seed, np.dtype(dtype))
    finally:
        env.close()
    return {"env": spec.env_id, "episodes": episodes, "seed": seed,
            "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
            "returns": returns}
