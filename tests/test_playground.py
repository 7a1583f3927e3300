"""MuJoCo Playground environments behind the JAX-native interface (``jax_td3.envs.playground``), and without
Playground installed.

MJX compiles slowly on a CPU (tens of seconds per program: CheetahRun's reset alone scans 200 physics
steps), so the tests with Playground are few and share their programs; they are skipped when the
playground extra is not installed. The one-line errors without Playground are tested always.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from jax_td3.envs import make_jax_env
from jax_td3.errors import EnvError

NEEDS_PLAYGROUND = "needs the playground extra (pip install 'jax-td3[playground]')"
LIMIT = 4            # a short time limit: the episode is truncated at the 4th step


def test_a_playground_id_without_playground_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mujoco_playground", None)   # import mujoco_playground -> ImportError
    with pytest.raises(EnvError, match=r"pip install 'jax-td3\[playground\]'"):
        make_jax_env("playground:CheetahRun")
    from jax_td3.cli import main

    assert main(["train", "--compiled", "--env", "playground:CheetahRun", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'jax-td3[playground]'" in err and len(err.splitlines()) == 1


def test_an_unknown_physics_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(EnvError, match="unknown `playground_impl` 'cuda'; choose from auto, jax, warp"):
        make_jax_env("playground:CheetahRun", playground_impl="cuda")
    from jax_td3.cli import main

    with pytest.raises(SystemExit):   # argparse's choices refuse it before the run starts
        main(["train", "--compiled", "--env", "playground:CheetahRun", "--playground-impl", "cuda"])
    assert "--playground-impl: invalid choice" in capsys.readouterr().err


def test_importing_the_package_imports_no_playground():
    import subprocess

    code = ("import sys, jax_td3, jax_td3.envs, jax_td3.loops.compiled, jax_td3.run.compiled, jax_td3.cli.train; "
            "print(any(m.split('.')[0] in ('mujoco_playground', 'mujoco') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_unknown_and_unloadable_tasks_are_refused_in_one_line(capsys, tmp_path):
    pytest.importorskip("mujoco_playground", reason=NEEDS_PLAYGROUND)
    with pytest.raises(EnvError, match=r"no Playground environment playground:Nope \(Playground knows: .*"
                                       r"playground:CheetahRun, .*playground:WalkerWalk\)") as info:
        make_jax_env("playground:Nope")
    assert "\n" not in str(info.value)
    from jax_td3.cli import main

    assert main(["train", "--compiled", "--env", "playground:Nope", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no Playground environment playground:Nope" in err and len(err.splitlines()) == 1


def test_impl_auto_is_jax_without_an_nvidia_gpu():
    pytest.importorskip("mujoco_playground", reason=NEEDS_PLAYGROUND)
    import jax

    from jax_td3.envs.playground import resolve_impl

    has_cuda = any(d.platform == "gpu" for d in jax.devices())
    assert resolve_impl("auto") == (None if has_cuda else "jax")   # None: the task's own default
    assert resolve_impl("jax") == "jax" and resolve_impl("warp") == "warp"


@pytest.fixture(scope="module")
def cheetah():
    pytest.importorskip("mujoco_playground", reason=NEEDS_PLAYGROUND)
    from jax_td3.envs.playground import PlaygroundEnv

    return PlaygroundEnv("CheetahRun", "jax", max_episode_steps=LIMIT)


@pytest.fixture(scope="module")
def rollout(cheetah):
    """Two CheetahRun environments vmapped for LIMIT steps of fixed random actions, and the same steps taken
    on Playground's raw environment directly (the reference) and through its training wrapper."""
    import jax
    import jax.numpy as jnp
    from mujoco_playground import wrapper

    actions = jax.random.uniform(jax.random.key(7), (LIMIT, 2, 6), jnp.float32, -1.0, 1.0)
    keys = jax.random.split(jax.random.key(3), 2)

    @jax.jit
    def ours(keys):
        state, obs0 = jax.vmap(lambda k: cheetah.reset(k, jnp.float32))(keys)

        def one(state, action):
            state, obs, reward, terminated, truncated = jax.vmap(cheetah.step)(state, action)
            return state, (obs, reward, terminated, truncated)

        return obs0, jax.lax.scan(one, state, actions)[1]

    @jax.jit
    def raw(keys):
        state = jax.vmap(cheetah.env.reset)(keys)
        final = jax.lax.scan(lambda s, a: (jax.vmap(cheetah.env.step)(s, a), None), state, actions)[0]
        wrapped = wrapper.wrap_for_brax_training(cheetah.env, episode_length=LIMIT)
        start = wrapped.reset(jax.random.key_data(keys))     # Brax's wrappers take raw uint32 keys
        wrapped_final = jax.lax.scan(lambda s, a: (wrapped.step(s, a), None), start, actions)[0]
        return state.obs, final.obs, start.obs, wrapped_final.obs

    return ours(keys), raw(keys)


def test_spec_of_cheetah_run(cheetah):
    from jax_td3.envs.playground import PlaygroundEnv

    spec = cheetah.spec
    assert (spec.env_id, spec.obs_dim, spec.act_dim, spec.max_episode_steps) == ("playground:CheetahRun", 17, 6,
                                                                                 LIMIT)
    assert spec.action_low == (-1.0,) * 6 and spec.action_high == (1.0,) * 6
    assert cheetah.impl == "jax" and cheetah.obs_key is None
    assert cheetah == PlaygroundEnv("CheetahRun", "jax", LIMIT) and hash(cheetah) == hash(PlaygroundEnv(
        "CheetahRun", "jax", LIMIT))
    default = make_jax_env("playground:CheetahRun", playground_impl="jax")
    assert default.spec.max_episode_steps == 1000          # the task's own episode_length
    assert default != cheetah


def test_reset_and_step_shapes_under_vmap(rollout):
    (obs0, (obs, reward, terminated, truncated)), _ = rollout
    assert obs0.shape == (2, 17) and obs.shape == (LIMIT, 2, 17) and reward.shape == (LIMIT, 2)
    assert obs.dtype == reward.dtype == np.float32 and terminated.dtype == truncated.dtype == np.bool_
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    assert not np.array_equal(obs0[0], obs0[1])            # each key its own start


def test_truncation_keeps_the_true_final_observation(rollout):
    """At the time limit the step returns the observation the physics reached, not a reset observation.
    Playground's training wrapper (``wrap_for_brax_training``) returns its cached reset observation there
    (Playground issue #305), and this test would fail with it."""
    (obs0, (obs, _, terminated, truncated)), (raw_start, raw_final, wrapped_start, wrapped_final) = rollout
    at_limit = np.arange(1, LIMIT + 1) >= LIMIT
    np.testing.assert_array_equal(np.asarray(truncated), np.stack([at_limit, at_limit], axis=1))
    assert not np.asarray(terminated).any()                # a truncation, not a termination
    np.testing.assert_array_equal(obs0, raw_start)         # our reset is Playground's
    np.testing.assert_array_equal(obs[-1], raw_final)      # the true final observation
    assert np.abs(np.asarray(obs[-1]) - np.asarray(raw_start)).max() > 1e-3   # ... which is not the start
    # The wrapper's observation at the same step is its cached start again; the check above fails on it.
    np.testing.assert_array_equal(wrapped_final, wrapped_start)
    assert np.abs(np.asarray(wrapped_final) - np.asarray(raw_final)).max() > 1e-3


def test_playgrounds_done_is_termination(cheetah):
    """Stepped without Playground's episode wrapper, CheetahRun's ``done`` is a NaN in the physics: the
    adapter reports it as terminated, not truncated, on the first step."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def first_step_from_a_broken_state(key):
        state, _ = cheetah.reset(key, jnp.float32)
        data = state.state.data
        broken = state._replace(state=state.state.replace(data=data.replace(qvel=data.qvel.at[0].set(jnp.nan))))
        return cheetah.step(broken, jnp.zeros(6, jnp.float32))[3:]

    terminated, truncated = first_step_from_a_broken_state(jax.random.key(0))
    assert bool(terminated) and not bool(truncated)


@pytest.mark.slow
def test_td3_on_playground_cheetah_runs_in_the_compiled_loop(tmp_path):
    pytest.importorskip("mujoco_playground", reason=NEEDS_PLAYGROUND)
    import json

    from jax_td3.cli import main

    out = tmp_path / "run"
    assert main(["train", "--compiled", "--env", "playground:CheetahRun", "--algo", "td3", "--num-envs", "4",
                 "--total-steps", "400", "--learning-starts", "200", "--eval-every", "400", "--eval-episodes", "2",
                 "--hidden", "16,16", "--batch-size", "32", "--updates-per-step", "0.5", "--no-progress",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 400 and summary["updates"] == 25 and summary["num_envs"] == 4
    assert np.isfinite(summary["final_eval_return_mean"])
