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
- ``fasttd3-playground``: FastTD3's settings for MuJoCo Playground (its ``MuJoCoPlaygroundArgs`` at commit
  229ed59), for ``--compiled``, on ``playground:CheetahRun`` unless ``--env`` names another task: 1,024
  environments; actor 512-256-128, critics 1024-512-256 with 101 atoms on [-10, 10]; batch 32,768; gamma
  0.97; tau 0.1; learning rates 3e-4 (constant); AdamW weight decay 0.1; target-policy noise 0.001 clipped
  at 0.5, the actor every 2nd update; exploration scales 0.001-0.4 per environment; 1-step returns; 2
  updates per vector step; observation normalisation; matrix products in bfloat16 (its AMP). FastTD3 counts
  in vector steps, we count transitions over all environments, so at 1,024 environments its per-environment
  buffer of 10,240 is ``buffer_size`` 10,485,760, its 10 warm-up steps are ``learning_starts`` 10,240, its
  150,000 steps ``total_steps`` 153,600,000 and its evaluation every 5,000 steps ``eval_every`` 5,120,000
  (over 1,024 episodes, its evaluation environments). With another ``--num-envs`` give these four too.
  ``TASK_OVERRIDES`` holds FastTD3's per-task changes for the Playground tasks it tunes (CheetahRun:
  3-step returns, support [-500, 500], exploration scales from 0.1, target-policy noise 0.1; the Go1,
  T1, G1 and LeapCube tasks: theirs); they apply when the run's ``--env`` is that task, and a flag given
  explicitly still wins. FastTD3 trains the humanoid critics on Playground's ``privileged_state``; ours
  see the actor's ``state`` (``jax_td3.envs.playground``).
- ``fasttd3-cpu``: the same mechanisms at a size a 2-core CPU runs: FastTD3 (``--compiled``) on
  ``brax:halfcheetah`` with 256 environments, 3-step returns, 2 updates per vector step, batch 1,024,
  actor 128-128, critics 256-256 (101 atoms on [-500, 500]), 2,000 transitions per environment, updates
  after 10 vector steps, 1,024,000 transitions with an evaluation of 10 episodes every 102,400. What it
  changes from ``fasttd3-playground`` is size only (environments, batch, networks, replay, length), so
  that one update costs milliseconds rather than seconds on a CPU; gamma, tau, noise, exploration scales,
  weight decay and rates are FastTD3's (untuned here), and matrix products stay in float32 (bfloat16 is
  slower on most CPUs).

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
    "fasttd3-playground": dict(
        algo="fasttd3", env="playground:CheetahRun", num_envs=1_024, hidden=(512, 256, 128),
        critic_hidden=(1_024, 512, 256), num_atoms=101, v_min=-10.0, v_max=10.0, batch_size=32_768, gamma=0.97,
        tau=0.1, actor_lr=3e-4, critic_lr=3e-4, weight_decay=0.1, policy_noise=0.001, noise_clip=0.5, policy_freq=2,
        std_min=0.001, std_max=0.4, n_step=1, updates_per_step=2, obs_normalization=True, bfloat16_matmuls=True,
        buffer_size=10_240 * 1_024, learning_starts=10 * 1_024, total_steps=150_000 * 1_024,
        eval_every=5_000 * 1_024, eval_episodes=1_024,
    ),
    "fasttd3-cpu": dict(
        algo="fasttd3", env="brax:halfcheetah", num_envs=256, hidden=(128, 128), critic_hidden=(256, 256),
        num_atoms=101, v_min=-500.0, v_max=500.0, batch_size=1_024, gamma=0.97, tau=0.1, actor_lr=3e-4,
        critic_lr=3e-4, weight_decay=0.1, policy_noise=0.001, noise_clip=0.5, policy_freq=2, std_min=0.001,
        std_max=0.4, n_step=3, updates_per_step=2, obs_normalization=True, buffer_size=2_000 * 256,
        learning_starts=10 * 256, total_steps=4_000 * 256, eval_every=400 * 256, eval_episodes=10,
    ),
    "seed-ddpg": dict(
        algo="seed-ddpg", env="Pendulum-v1", exploration="ou", ou_theta=0.1, ou_sigma=0.1, ou_mu=0.0, ou_dt=0.01,
        update_schedule="episode", updates_per_episode=10, learning_starts=2_000, random_steps=0,
        buffer_size=50_000, batch_size=32, total_steps=200_000, eval_every=10_000, eval_episodes=10,
    ),
}

_GO1 = dict(total_steps=50_000 * 1_024, std_min=0.2, std_max=0.8, policy_noise=0.2, updates_per_step=8)
_HUMANOID = dict(total_steps=100_000 * 1_024)

# Per-task changes to a preset, applied when the run's env (given, or the preset's) is the key; explicit
# values still win. fasttd3-playground's are FastTD3's task classes in its hyperparams.py.
TASK_OVERRIDES: dict[str, dict[str, dict]] = {
    "fasttd3-playground": {
        "playground:CheetahRun": dict(n_step=3, v_min=-500.0, v_max=500.0, std_min=0.1, policy_noise=0.1),
        "playground:Go1JoystickFlatTerrain": _GO1,
        "playground:Go1JoystickRoughTerrain": _GO1,
        "playground:Go1Getup": _GO1,
        "playground:T1JoystickFlatTerrain": _HUMANOID,
        "playground:T1JoystickRoughTerrain": _HUMANOID,
        "playground:G1JoystickFlatTerrain": _HUMANOID,
        "playground:G1JoystickRoughTerrain": _HUMANOID,
        "playground:T1LowDofJoystickFlatTerrain": dict(total_steps=1_000_000 * 1_024),
        "playground:T1LowDofJoystickRoughTerrain": dict(total_steps=1_000_000 * 1_024),
        "playground:LeapCubeReorient": dict(n_step=3, gamma=0.99, policy_noise=0.2, v_min=-50.0, v_max=50.0,
                                            use_cdq=False),
        "playground:LeapCubeRotateZAxis": dict(n_step=1, gamma=0.99, policy_noise=0.2, v_min=-10.0, v_max=10.0,
                                               use_cdq=False),
    },
}


def resolve(explicit: dict, preset: str | None) -> dict:
    """Merge DEFAULTS <- the preset's values <- its ``TASK_OVERRIDES`` for the run's env (the explicit one,
    else the preset's) <- explicit values that are not None.

    The exploration noise neither given nor set by the preset is "ou" for seed-ddpg (its
    notebook's) and the default ("gaussian") otherwise.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    explicit = {k: v for k, v in explicit.items() if v is not None}
    chosen = PRESETS[preset] if preset is not None else {}
    task = TASK_OVERRIDES.get(preset or "", {}).get(str(explicit.get("env", chosen.get("env"))), {})
    given = {**chosen, **task, **explicit}
    merged = {**DEFAULTS, **given}
    if "exploration" not in given and merged["algo"] == "seed-ddpg":
        merged["exploration"] = "ou"
    return merged
