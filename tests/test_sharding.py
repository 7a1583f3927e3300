"""Agents sharded over several devices give the results of the unsharded run.

XLA reads the number of host devices once per process, so the check runs in a
subprocess with 4 forced CPU devices. K = 4 agents run once on a 1-D mesh of all 4
devices (one agent each) and once on a single device, in float64, and must agree
to rounding (XLA compiles a batch of 4 agents differently from a batch of 1, see
test_compiled.py for the tolerance); the agent axis of the result must really be
split over the 4 devices.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax_td3.envs.pendulum import PendulumEnv
    from jax_td3.loops.compiled import LoopSettings, train_compiled
    from jax_td3.config import make_config

    config = make_config(ALGO, hidden=(8, 8), batch_size=16, max_action=2.0, **EXTRA)
    settings = LoopSettings(total_steps=200, learning_starts=100, eval_every=100, eval_episodes=2)
    seeds = [10, 11, 12, 13]
    devices = jax.devices()
    assert len(devices) == 4, devices
    fast = {"xla_backend_optimization_level": 0}
    sharded = train_compiled(config, settings, seeds, env=PendulumEnv(), dtype=np.float64, compiler_options=fast)
    single = train_compiled(config, settings, seeds, env=PendulumEnv(), dtype=np.float64, devices=devices[:1],
                            compiler_options=fast)
    leaves = lambda r: [np.asarray(x) for x in jax.tree_util.tree_leaves(r.agents.train_state)]
    print(json.dumps({
        "sharded_devices": len(sharded.agents.obs.sharding.device_set),
        "single_devices": len(single.agents.obs.sharding.device_set),
        "returns_max_rel": float(np.max(np.abs(sharded.eval_returns - single.eval_returns)
                                        / np.abs(single.eval_returns))),
        "params_max_abs": max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(sharded), leaves(single))),
        "params_max_rel": max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3)))
                              for a, b in zip(leaves(sharded), leaves(single))),
        "seeds_differ": float(np.min(np.ptp(single.eval_returns[:, -1].mean(axis=1), axis=0))),
        "updates": np.asarray(sharded.agents.updates).tolist(),
    }))
""")


FASTTD3 = dict(critic_hidden=(16, 16), num_atoms=11, v_min=-60.0, v_max=0.0, n_step=2)


# TD3 with the per-environment n-step replay, per-environment exploration scales and the observation normaliser.
TD3_PER_ENV = dict(n_step=2, std_min=0.05, std_max=0.5, obs_normalization=True)


@pytest.mark.parametrize("algo, extra", [("td3", {}), ("fasttd3", FASTTD3), ("td3", TD3_PER_ENV)])
def test_sharded_run_equals_unsharded_run(algo, extra):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    script = f"ALGO = {algo!r}\nEXTRA = {extra!r}\n" + SCRIPT
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sharded_devices"] == 4 and report["single_devices"] == 1
    assert report["updates"] == [100] * 4
    assert report["returns_max_rel"] <= 1e-9
    assert report["params_max_rel"] <= 1e-9
    assert report["seeds_differ"] > 1e-3  # the four agents are not copies of one another
