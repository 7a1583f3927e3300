"""Named starting points for ``jax-td3 train --preset NAME``; any flag given explicitly wins.

- ``quickstart``: the README's first command, chosen so that it shows learning on any machine in
  seconds: TD3 on Pendulum-v1 with 64-64 networks, batch 128, learning rates 1e-3, 1,000 random
  steps, the updates run 50 at a time in one compiled call (``updates_per_call``), 20,000 steps,
  evaluation every 1,000 steps over 10 episodes. Why not the loop defaults: a run is deterministic
  on one processor, but another processor rounds the matmuls differently and draws another
  trajectory, and a 10,000-step 256-256 run sits at the edge of where TD3 on Pendulum is stable
  (one such run collapsed to -1,025 at its last evaluation on a new machine). Small networks with
  larger rates learn Pendulum in about 8,000 steps, and 20,000 steps leave the final evaluation
  well inside the solved region: on a 2-core AVX2 machine the final evaluation was at least -300
  on every one of seeds 0-9 (``tests/test_quickstart.py``, opt-in with ``-m slow``).
- ``fujimoto``: TD3 with the reference implementation's defaults (256-256, batch 256,
  25,000 random steps, evaluation every 5,000 steps, 1M steps).
- ``seed-t3d``: the T3D notebook: TD3 400-300, batch 100, on HalfCheetahBulletEnv-v0,
  10,000 random steps.
- ``seed-ddpg``: the DDPG notebook on Pendulum-v1: its networks and rates (the
  ``seed-ddpg`` algo), OU exploration from the first step, buffer 50,000, batch 32,
  and its schedule of 10 updates after each episode once the buffer holds more than
  2,000 transitions; 1,000 episodes. The notebook also cut bootstrapping at the time
  limit; that is only available explicitly (``--no-bootstrap-truncation``).
- ``zoo-pybullet``: the RL Baselines3 Zoo's tuned TD3 (and DDPG) settings for the PyBullet
  locomotion tasks (HalfCheetah, Ant, Hopper, Walker2D ``BulletEnv-v0``), as they were when the Zoo's
  published benchmark table was made (rl-baselines3-zoo ``hyperparams/td3.yml`` and
  ``hyperparams/ddpg.yml`` at its v1.0 release, March 2021, run with Stable-Baselines3 1.0): 400-300
  networks; gamma 0.98; one learning rate of 1e-3 for actor and critic; buffer 200,000; 10,000
  uniformly random first steps, with updates starting once the buffer holds more; Gaussian
  exploration noise 0.1; after each episode, as many updates as the episode had steps
  (``train_freq: [1, "episode"]``, ``gradient_steps: -1``); the time-feature observation wrapper.
  The values the file leaves out are Stable-Baselines3 1.0's TD3 defaults: batch 100, tau 0.005,
  target noise 0.2 clipped at 0.5, actor every 2nd update (also ours). Stable-Baselines3 1.0 stored
  a time-limit truncation as terminal; with the time feature that is right (the time left is part of
  the state, so the end of time is a true end), and the preset does the same. Our additions: 1M
  steps, and an evaluation of 10 episodes every 25,000 steps.
- ``fasttd3-pendulum``: FastTD3 (``--algo fasttd3``) on Pendulum-v1, one environment, 20,000 steps, sized
  for a CPU: actor 64-64, critics 128-128 with 101 atoms on the support [-1650, 0] (Pendulum's rewards
  lie in about [-16.3, 0], so with gamma 0.99 every discounted return does; FastTD3's own +-250 would
  clip most of them), batch 128, tau 0.01, learning rates 1e-3, target-policy noise 0.2 (TD3's; FastTD3's
  0.001 is for its massively parallel simulators), 1-step returns, one update per step after 1,000
  uniformly random steps; FastTD3's per-environment exploration scales (0.001-0.4), observation
  normalisation and AdamW (weight decay 0.1) as it has them. Evaluation every 1,000 steps over 10
  episodes. Tuned so that the final evaluation is -250 or better on seeds 0-4 with the JAX backend
  and 0-2 with the torch backend (``tests/test_fasttd3_learning.py``, opt-in with ``-m slow``).

Values left out of a preset fall back to ``DEFAULTS`` (loop settings) and to the
algorithm's config defaults (network and update hyperparameters).
"""

from __future__ import annotations

import dataclasses

from jax_td3.errors import ConfigError
from jax_td3.settings import OutputSettings, TrainSettings

# Values used when neither a flag nor the preset gives one: the algorithm, and the fields' defaults of
# TrainSettings and OutputSettings (stated there, once).
DEFAULTS = {"algo": "td3", **dataclasses.asdict(TrainSettings()), **dataclasses.asdict(OutputSettings())}

PRESETS: dict[str, dict] = {
    "quickstart": dict(
        algo="td3", env="Pendulum-v1", hidden=(64, 64), batch_size=128, actor_lr=1e-3, critic_lr=1e-3,
        learning_starts=1_000, updates_per_call=50, total_steps=20_000, eval_every=1_000, eval_episodes=10,
    ),
    "fujimoto": dict(
        algo="td3", hidden=(256, 256), batch_size=256, buffer_size=1_000_000, learning_starts=25_000,
        expl_noise=0.1, eval_every=5_000, eval_episodes=10, total_steps=1_000_000,
    ),
    "seed-t3d": dict(
        algo="td3", env="HalfCheetahBulletEnv-v0", hidden=(400, 300), batch_size=100, buffer_size=1_000_000,
        learning_starts=10_000, expl_noise=0.1, policy_noise=0.2, noise_clip=0.5, policy_freq=2,
        eval_every=5_000, eval_episodes=10, total_steps=500_000,
    ),
    "zoo-pybullet": dict(
        algo="td3", env="HalfCheetahBulletEnv-v0", hidden=(400, 300), batch_size=100, gamma=0.98,
        actor_lr=1e-3, critic_lr=1e-3, buffer_size=200_000, learning_starts=10_000, exploration="gaussian",
        expl_noise=0.1, update_schedule="episode", updates_per_episode="steps", time_feature=True,
        bootstrap_truncation=False, total_steps=1_000_000, eval_every=25_000, eval_episodes=10,
    ),
    "fasttd3-pendulum": dict(
        algo="fasttd3", env="Pendulum-v1", hidden=(64, 64), critic_hidden=(128, 128), num_atoms=101, v_min=-1650.0,
        v_max=0.0, batch_size=128, tau=0.01, actor_lr=1e-3, critic_lr=1e-3, policy_noise=0.2, n_step=1,
        learning_starts=1_000, updates_per_step=1, total_steps=20_000, eval_every=1_000, eval_episodes=10,
    ),
    "seed-ddpg": dict(
        algo="seed-ddpg", env="Pendulum-v1", exploration="ou", ou_theta=0.1, ou_sigma=0.1, ou_mu=0.0, ou_dt=0.01,
        update_schedule="episode", updates_per_episode=10, learning_starts=2_000, random_steps=0,
        buffer_size=50_000, batch_size=32, total_steps=200_000, eval_every=10_000, eval_episodes=10,
    ),
}


def resolve(explicit: dict, preset: str | None) -> dict:
    """Merge DEFAULTS <- PRESETS[preset] <- explicit values that are not None.

    The exploration noise neither given nor set by the preset is "ou" for seed-ddpg (its
    notebook's) and the default ("gaussian") otherwise.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    given = {**(PRESETS[preset] if preset is not None else {}), **{k: v for k, v in explicit.items() if v is not None}}
    merged = {**DEFAULTS, **given}
    if "exploration" not in given and merged["algo"] == "seed-ddpg":
        merged["exploration"] = "ou"
    return merged
