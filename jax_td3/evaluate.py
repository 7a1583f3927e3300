"""``jax-td3 eval CHECKPOINT --episodes N``: the noiseless policy of a saved agent, mean/std return.

CHECKPOINT is a checkpoint file, a run directory (its newest valid checkpoint), or
a PyTorch file written by ``jax-td3 export --to torch`` (its state_dicts must fit the
torch_ref modules exactly).
A checkpoint of either backend loads into either backend (they share the JAX layout).
"""

from __future__ import annotations

import numpy as np

from jax_td3.cli import nonnegative_int, positive_int


def evaluate_checkpoint(path, episodes: int = 10, env_id: str | None = None, seed: int | None = None,
                        backend: str = "jax", agent: int = 0) -> dict:
    """Load ``path`` into ``backend`` and run ``episodes`` noiseless episodes; returns mean/std/returns.

    ``agent`` picks one of the agents of a compiled multi-seed run's checkpoint.
    """
    from jax_td3.checkpoint import CheckpointError
    from jax_td3.export import train_state_from_checkpoint
    from jax_td3.train import EVAL_SEED_OFFSET

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
    seed = settings["seed"] + EVAL_SEED_OFFSET if seed is None else seed
    result = _run_policy(config, dtype, state, env_id or settings["env"], episodes, seed, backend)
    return {"checkpoint": str(checkpoint.path), **result, "step": checkpoint.metadata.get("step"),
            "trained_with": checkpoint.metadata.get("backend")}


def _evaluate_torch_export(path, episodes, env_id, seed, backend) -> dict:
    from jax_td3.cli import UsageError
    from jax_td3.export import train_state_from_torch_export

    config, dtype, state, description = train_state_from_torch_export(path)
    env_id = env_id or description.get("env")
    if env_id is None:
        raise UsageError(f"{path} does not name its environment; pass --env")
    seed = 0 if seed is None else seed
    result = _run_policy(config, dtype, state, env_id, episodes, seed, backend)
    return {"checkpoint": str(path), **result, "step": description.get("step"), "trained_with": "torch export"}


def _run_policy(config, dtype, state, env_id, episodes, seed, backend) -> dict:
    from jax_td3.backends import enable_dtype, make_backend
    from jax_td3.checkpoint import CheckpointError
    from jax_td3.envs import env_spec, make_env
    from jax_td3.train import evaluate_policy

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


def add_arguments(parser) -> None:
    from jax_td3.backends import BACKENDS

    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint file, a run directory (its newest valid checkpoint), or a .pt file "
                             "written by 'jax-td3 export --to torch'")
    parser.add_argument("--episodes", type=positive_int, default=10, help="evaluation episodes")
    parser.add_argument("--env", default=None, help="environment id (default: the one it was trained on)")
    parser.add_argument("--seed", type=nonnegative_int, default=None,
                        help="seed of the first reset (default: the run's evaluation seed)")
    parser.add_argument("--backend", choices=BACKENDS, default="jax",
                        help="framework that runs the policy (either loads either backend's checkpoint)")
    parser.add_argument("--agent", type=nonnegative_int, default=0,
                        help="which agent of a compiled multi-seed checkpoint (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    result = evaluate_checkpoint(args.checkpoint, args.episodes, args.env, args.seed, args.backend, args.agent)
    if args.json:
        import json
        print(json.dumps(result))
    else:
        print(f"{result['env']}: return {result['eval_return_mean']:.2f} +- {result['eval_return_std']:.2f} "
              f"over {result['episodes']} episodes (checkpoint {result['checkpoint']}, step {result['step']}, "
              f"trained with {result['trained_with']}, run by {args.backend})")
    return 0
