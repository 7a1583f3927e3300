"""Brax environments behind the JAX-native interface (``jax_td3.envs.brax``), and without Brax installed.

Brax compiles slowly on a CPU (seconds per program), so the tests with Brax are few and tiny; they
are skipped when the brax extra is not installed. The one-line error without Brax is tested always.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from jax_td3.envs import make_jax_env
from jax_td3.errors import EnvError


def test_a_brax_id_without_brax_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "brax", None)           # import brax -> ImportError
    monkeypatch.setitem(sys.modules, "brax.envs", None)
    with pytest.raises(EnvError, match=r"pip install 'jax-td3\[brax\]'"):
        make_jax_env("brax:halfcheetah")
    from jax_td3.cli import main

    assert main(["train", "--compiled", "--env", "brax:halfcheetah", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'jax-td3[brax]'" in err and len(err.splitlines()) == 1


def test_importing_the_package_and_updating_import_no_brax():
    import subprocess

    code = ("import sys, jax_td3, jax_td3.envs, jax_td3.loops.compiled, jax_td3.run.compiled, jax_td3.update; "
            "print(any(m == 'brax' or m.startswith('brax.') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_spec_termination_and_truncation_are_kept_apart():
    pytest.importorskip("brax", reason="needs the brax extra (pip install 'jax-td3[brax]')")
    import jax
    import jax.numpy as jnp

    from jax_td3.envs.brax import BraxEnv

    env = make_jax_env("brax:hopper")
    assert env == BraxEnv("hopper") and hash(env) == hash(BraxEnv("hopper"))
    spec = env.spec
    assert (spec.env_id, spec.obs_dim, spec.act_dim, spec.max_episode_steps) == ("brax:hopper", 11, 3, 1000)
    assert spec.action_low == (-1.0,) * 3 and spec.action_high == (1.0,) * 3
    with pytest.raises(EnvError, match="no Brax environment brax:nope .*brax:halfcheetah"):
        make_jax_env("brax:nope")

    short = BraxEnv("hopper", max_episode_steps=30)

    @jax.jit
    def rollout(key):
        state, obs = short.reset(key, jnp.float32)

        def one(state, action):
            state, obs, reward, terminated, truncated = short.step(state, action)
            return state, (obs, reward, terminated, truncated)

        # Full torque back and forth: the hopper falls over (termination) well within 30 steps.
        actions = jnp.tile(jnp.array([[1.0, -1.0, 1.0]], jnp.float32), (30, 1))
        return obs, jax.lax.scan(one, state, actions)[1]

    obs0, (obs, reward, terminated, truncated) = rollout(jax.random.key(0))
    assert obs0.shape == (11,) and obs.shape == (30, 11) and obs.dtype == reward.dtype == jnp.float32
    terminated, truncated = np.asarray(terminated), np.asarray(truncated)
    assert terminated.any()                                       # Brax's done: the hopper became unhealthy
    np.testing.assert_array_equal(truncated, np.arange(1, 31) >= 30)  # the time limit, ours alone
    # Brax's reset takes a key: the same key gives the same start, another key another.
    again, _ = rollout(jax.random.key(0))
    other, _ = rollout(jax.random.key(1))
    np.testing.assert_array_equal(obs0, again)
    assert not np.array_equal(obs0, other)


@pytest.mark.slow
def test_td3_on_brax_halfcheetah_runs_in_the_compiled_loop(tmp_path):
    pytest.importorskip("brax", reason="needs the brax extra (pip install 'jax-td3[brax]')")
    import json

    from jax_td3.cli import main

    out = tmp_path / "run"
    assert main(["train", "--compiled", "--env", "brax:halfcheetah", "--num-envs", "4", "--total-steps", "800",
                 "--learning-starts", "400", "--eval-every", "400", "--eval-episodes", "2", "--hidden", "16,16",
                 "--batch-size", "32", "--updates-per-step", "0.5", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 800 and summary["updates"] == 50 and summary["num_envs"] == 4
    assert np.isfinite(summary["final_eval_return_mean"])
