"""Environment construction: Box checks, clear one-line errors, lazy imports."""

import subprocess
import sys

import pytest

from jax_td3.cli import main
from jax_td3.envs import EnvError, env_spec, make_env
from jax_td3.errors import JaxTD3Error


def test_pendulum_spec():
    env = make_env("Pendulum-v1", seed=0)
    spec = env_spec(env)
    assert (spec.obs_dim, spec.act_dim) == (3, 1)
    assert (spec.action_low, spec.action_high, spec.max_episode_steps) == ((-2.0,), (2.0,), 200)
    assert spec.action_scale == (2.0,)
    env.close()


def test_discrete_action_space_is_refused():
    with pytest.raises(EnvError, match="Discrete action space"):
        make_env("CartPole-v1")


def test_unknown_id_is_refused_in_one_line():
    with pytest.raises(EnvError) as info:
        make_env("NoSuchEnv-v3")
    assert "unknown environment id 'NoSuchEnv-v3'" in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, JaxTD3Error)  # the CLI maps it to exit code 2


def test_pybullet_id_registers_lazily():
    pytest.importorskip("pybullet_envs_gymnasium")
    env = make_env("HalfCheetahBulletEnv-v0", seed=0)
    spec = env_spec(env)
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (26, 6, 1000)
    env.close()


@pytest.mark.parametrize("env_id, message", [("CartPole-v1", "Discrete action space"),
                                              ("NoSuchEnv-v3", "unknown environment id")])
def test_cli_exits_2_with_one_line(env_id, message, tmp_path, capsys):
    code = main(["train", "--env", env_id, "--total-steps", "10", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_loop_modules_do_not_import_gymnasium():
    code = ("import sys, jax_td3.loops.host, jax_td3.run.training, jax_td3.settings, jax_td3.envs, jax_td3.backends, "
            "jax_td3.buffer, jax_td3.noise, "
            "jax_td3.run.checkpoint, jax_td3.presets, jax_td3.run.logger, jax_td3.update, jax_td3.replay; "
            "bad = [m for m in ('gymnasium', 'pybullet', 'pybullet_envs_gymnasium', 'torch', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
