"""Stable-Baselines3's own TD3 with the Zoo PyBullet settings, on our environment: the control run.

Our TD3 with ``--preset zoo-pybullet`` reaches less on HalfCheetahBulletEnv-v0 than the RL Baselines3
Zoo's published agent. Every update agrees with Stable-Baselines3's to float64 rounding (``jax-td3
parity --backend-a sb3``), so what is left to differ is the environment (today's PyBullet and its
Gymnasium port against the 2021 versions) and the run around the update. This script trains
Stable-Baselines3's TD3 with the preset's settings (the Zoo's ``hyperparams/td3.yml`` plus
Stable-Baselines3 1.0's defaults: batch 100, a time-limit end stored as terminal) on the environment
our runs use (``jax_td3.envs.make_env(ENV, time_feature=True)``), and evaluates it with our protocol
(``jax_td3.loops.host.evaluate_policy``: 10 deterministic episodes from the evaluation seed), so its
curve can be laid next to ours: if Stable-Baselines3 here stops where we stop, the environment is the
cause; if it climbs to the Zoo's numbers, our run differs.

    python benchmarks/sb3_zoo_learning.py --out runs/sb3-zoo/HalfCheetahBulletEnv-v0-seed0 \
        [--env HalfCheetahBulletEnv-v0] [--seed 0] [--total-steps 1000000] [--resume]

Writes OUT/metrics.csv (step, wall_time, eval_return_mean, eval_return_std: the columns ``jax-td3
plot`` reads), OUT/episodes.csv (training episodes) and, every ``--checkpoint-every`` steps, the
model and its replay buffer; ``--resume`` continues from them (the environment starts a new episode,
so a resumed run is not bit-exact). Needs the ``thirdparty`` extra (stable-baselines3).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--env", default="HalfCheetahBulletEnv-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=1_000_000)
    parser.add_argument("--eval-every", type=int, default=25_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=50_000)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    import torch
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    from jax_td3.envs import make_env
    from jax_td3.loops import exploration
    from jax_td3.loops.host import evaluate_policy

    torch.set_num_threads(1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(args.env, time_feature=True)
    eval_env = make_env(args.env, time_feature=True)
    model_path, buffer_path = out / "model.zip", out / "replay_buffer.pkl"
    if args.resume:
        model = TD3.load(model_path, env=env, device="cpu")
        model.load_replay_buffer(buffer_path)
        for name in ("metrics.csv", "episodes.csv"):  # rows written after the checkpoint are redone
            path = out / name
            if path.exists():
                lines = path.read_text().splitlines(keepends=True)
                kept = lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) <= model.num_timesteps]
                path.write_text("".join(kept))
    else:
        act_dim = env.action_space.shape[0]
        model = TD3(
            "MlpPolicy", env, learning_rate=1e-3, buffer_size=200_000, learning_starts=10_000, batch_size=100,
            tau=0.005, gamma=0.98, train_freq=(1, "episode"), gradient_steps=-1,
            action_noise=NormalActionNoise(np.zeros(act_dim), 0.1 * np.ones(act_dim)),
            replay_buffer_kwargs=dict(handle_timeout_termination=False),
            policy_kwargs=dict(net_arch=[400, 300]), policy_delay=2, target_policy_noise=0.2,
            target_noise_clip=0.5, seed=args.seed, device="cpu", verbose=0)
        for name in ("metrics.csv", "episodes.csv"):
            (out / name).unlink(missing_ok=True)

    def append(name: str, row: dict) -> None:
        path = out / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    start = time.time()

    def evaluate(step: int) -> None:
        returns = evaluate_policy(lambda obs: model.predict(obs, deterministic=True)[0], eval_env,
                                  args.eval_episodes, exploration.evaluation_seed(args.seed))
        append("metrics.csv", {"step": step, "wall_time": round(time.time() - start, 3),
                               "eval_return_mean": float(np.mean(returns)),
                               "eval_return_std": float(np.std(returns))})
        print(f"step {step:,}: eval {np.mean(returns):.1f} +- {np.std(returns):.1f}", flush=True)

    class Progress(BaseCallback):
        def _on_step(self) -> bool:
            step = self.num_timesteps
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    append("episodes.csv", {"step": step, "return": info["episode"]["r"],
                                            "length": info["episode"]["l"]})
            if step % args.eval_every == 0:
                evaluate(step)
            if step % args.checkpoint_every == 0:
                model.save(model_path)
                model.save_replay_buffer(buffer_path)
            return True

    if not args.resume:
        evaluate(0)
    remaining = args.total_steps - model.num_timesteps
    model.learn(total_timesteps=remaining, callback=Progress(), reset_num_timesteps=not args.resume)


if __name__ == "__main__":
    main()
