"""The RL Baselines3 Zoo's published agents, run on our environments: is our PyBullet the Zoo's PyBullet?

Our TD3 on HalfCheetahBulletEnv-v0 stops short of the Zoo's published return. One explanation left is the
environment: the Zoo's agents were trained and scored in 2021 on the PyBullet of the time, ours run on
today's PyBullet and the Gymnasium port of its locomotion tasks. A trained policy is a fixed function, so
it tells the two environments apart without any learning: if the Zoo's own agents score here what its
benchmark table says they scored there, the environment is the same as far as those policies can tell.

The Zoo publishes its agents in the rl-trained-agents repository (one folder per algorithm and
environment: ``<algo>/<ENV>_1/<ENV>.zip``, with ``<ENV>/config.yml`` and, for runs that normalised their
observations, ``<ENV>/vecnormalize.pkl``). Its TD3 agents are too large for the repository's plain git
files, but its PPO, A2C and TRPO agents for the PyBullet tasks, and its DDPG agent for Hopper, are there.

    python benchmarks/zoo_agents.py RL_TRAINED_AGENTS_DIR [--episodes 20] [--out benchmarks/results/zoo_agents.json] \
        [--agent ppo/HalfCheetahBulletEnv-v0 ...]

This reads the files directly and does not need Stable-Baselines3: the policy's weights come from the
zip's ``policy.pth`` (a PyTorch state dict), the observation normalisation (running mean and variance,
clipping) from ``vecnormalize.pkl`` (read with a restricted unpickler that keeps only plain data), and
the forward pass is written here: for PPO, A2C and TRPO the mean of the Gaussian policy (the
deterministic action), clipped to the action box; for DDPG and TD3 the tanh actor, scaled to the box.
The time-feature wrapper is ours (``make_env(..., time_feature=True)``), the same entry the Zoo's
wrapper appends. Episodes run as our evaluation runs them (``evaluate_policy``: deterministic,
back to back, the first reset from ``--seed``).
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

# The Zoo's benchmark table (its benchmark.md): mean and std of the episode return of each agent, from
# about 150,000 steps of deterministic evaluation.
ZOO_TABLE = {
    ("a2c", "HalfCheetahBulletEnv-v0"): (2107.384, 36.008),
    ("a2c", "AntBulletEnv-v0"): (2497.147, 37.359),
    ("a2c", "HopperBulletEnv-v0"): (815.355, 313.798),
    ("a2c", "Walker2DBulletEnv-v0"): (858.209, 333.116),
    ("ppo", "HalfCheetahBulletEnv-v0"): (2924.721, 64.465),
    ("ppo", "AntBulletEnv-v0"): (2865.922, 56.468),
    ("ppo", "HopperBulletEnv-v0"): (2575.054, 223.301),
    ("ppo", "Walker2DBulletEnv-v0"): (2109.992, 13.899),
    ("trpo", "HalfCheetahBulletEnv-v0"): (2758.752, 327.032),
    ("trpo", "AntBulletEnv-v0"): (2560.621, 52.064),
    ("ddpg", "HopperBulletEnv-v0"): (1157.065, 448.695),
}
DEFAULT_AGENTS = ("ppo/HalfCheetahBulletEnv-v0", "a2c/HalfCheetahBulletEnv-v0", "trpo/HalfCheetahBulletEnv-v0",
                  "ppo/AntBulletEnv-v0", "a2c/AntBulletEnv-v0", "ppo/Walker2DBulletEnv-v0", "ppo/HopperBulletEnv-v0",
                  "ddpg/HopperBulletEnv-v0")
ON_POLICY = ("a2c", "ppo", "trpo")


class _PlainData:
    """Stands in for any Stable-Baselines3 or Gym class in a pickle: keeps the object's attributes only."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and builtins as they are; every other class becomes ``_PlainData``."""

    def find_class(self, module, name):
        if module.split(".")[0] in ("numpy", "builtins", "collections", "copyreg", "_codecs"):
            return super().find_class(module, name)
        return _PlainData


def observation_normaliser(path: Path | None):
    """obs -> what the policy saw in training (VecNormalize: clip((obs - mean) / sqrt(var + eps), +-clip))."""
    if path is None or not path.exists():
        return lambda obs: obs
    with open(path, "rb") as f:
        stats = _RestrictedUnpickler(f).load()
    if not getattr(stats, "norm_obs", True):
        return lambda obs: obs
    mean, var = np.asarray(stats.obs_rms.mean), np.asarray(stats.obs_rms.var)
    scale, clip = np.sqrt(var + stats.epsilon), stats.clip_obs
    return lambda obs: np.clip((obs - mean) / scale, -clip, clip)


def _layers(state: dict, prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of the Linear layers ``prefix.<i>`` in order of i."""
    found = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(re.escape(prefix) + r"\.(\d+)\.weight", k))})
    return [(state[f"{prefix}.{i}.weight"], state[f"{prefix}.{i}.bias"]) for i in found]


def load_policy(zip_path: Path, algo: str, config_text: str, low: np.ndarray, high: np.ndarray):
    """obs (normalised) -> deterministic action in the env's box, from the zip's policy.pth."""
    import torch

    with zipfile.ZipFile(zip_path) as archive:
        raw = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    state = {k: v.double().numpy() for k, v in raw.items()}
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    if algo in ON_POLICY:
        # Stable-Baselines3 1.x: Tanh between layers unless the config asked for another activation.
        activation = relu if "activation_fn=nn.ReLU" in config_text else np.tanh
        hidden = _layers(state, "mlp_extractor.shared_net") + _layers(state, "mlp_extractor.policy_net")
        out_w, out_b = state["action_net.weight"], state["action_net.bias"]

        def act(obs):
            x = np.asarray(obs, np.float64)
            for w, b in hidden:
                x = activation(x @ w.T + b)
            return np.clip(x @ out_w.T + out_b, low, high)
        return act
    layers = _layers(state, "actor.mu")

    def act(obs):
        x = np.asarray(obs, np.float64)
        for i, (w, b) in enumerate(layers):
            x = x @ w.T + b
            x = np.tanh(x) if i == len(layers) - 1 else relu(x)
        return low + 0.5 * (x + 1.0) * (high - low)
    return act


def run_agent(root: Path, algo: str, env_id: str, episodes: int, seed: int) -> dict:
    from jax_td3.envs import make_env
    from jax_td3.loops.evaluation import evaluate_policy

    folder = root / algo / f"{env_id}_1"
    config_text = (folder / env_id / "config.yml").read_text()
    time_feature = "TimeFeatureWrapper" in config_text
    env = make_env(env_id, time_feature=time_feature)
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    normalise = observation_normaliser(folder / env_id / "vecnormalize.pkl")
    policy = load_policy(folder / f"{env_id}.zip", algo, config_text, low, high)
    returns = evaluate_policy(lambda obs: policy(normalise(np.asarray(obs, np.float64))), env, episodes, seed,
                              dtype=np.float64)
    env.close()
    zoo_mean, zoo_std = ZOO_TABLE.get((algo, env_id), (None, None))
    mean = float(np.mean(returns))
    return {"algo": algo, "env": env_id, "time_feature": time_feature, "episodes": episodes, "seed": seed,
            "return_mean": mean, "return_std": float(np.std(returns)), "returns": [float(r) for r in returns],
            "zoo_table_mean": zoo_mean, "zoo_table_std": zoo_std,
            "ours_over_zoo": mean / zoo_mean if zoo_mean else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a checkout of the rl-trained-agents repository")
    parser.add_argument("--agent", action="append", help="ALGO/ENV (repeatable; default: the agents above)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "zoo_agents.json")
    args = parser.parse_args()
    results = []
    for name in args.agent or DEFAULT_AGENTS:
        algo, env_id = name.split("/")
        result = run_agent(args.root, algo, env_id, args.episodes, args.seed)
        results.append(result)
        zoo = (f"Zoo table {result['zoo_table_mean']:.1f} +- {result['zoo_table_std']:.1f}, ours/Zoo "
               f"{result['ours_over_zoo']:.1%}" if result["zoo_table_mean"] else "not in the Zoo table")
        print(f"{algo:5s} {env_id:24s} {result['return_mean']:8.1f} +- {result['return_std']:6.1f} "
              f"over {args.episodes} episodes here; {zoo}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/zoo_agents.py RL_TRAINED_AGENTS_DIR --episodes " + str(args.episodes)
    args.out.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
