"""The library changes nothing process-wide: JAX's x64 mode, torch's threads and third-party functions are
as the caller left them after any call (the command line sets what its own process needs)."""

import dataclasses

import jax
import numpy as np
import pytest

from jax_td3.config import make_config
from jax_td3.errors import ConfigError

CONFIG = make_config("td3", obs_dim=3, act_dim=1, max_action=2.0, hidden=(8, 8))


@pytest.fixture
def x32():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", before)


def test_float64_without_x64_is_a_one_line_error_and_switches_nothing_on(x32):
    from jax_td3.backends.jax_backend import JaxBackend
    from jax_td3.update import init_train_state

    state = init_train_state(CONFIG, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match=r'jax.config.update\("jax_enable_x64", True\)') as error:
        JaxBackend(CONFIG, state, "float64")
    assert "\n" not in str(error.value)
    assert not jax.config.jax_enable_x64


def test_evaluating_a_float64_checkpoint_scopes_x64_to_the_call(x32, tmp_path):
    from jax_td3.backends.base import pack_train_state
    from jax_td3.evaluate import evaluate_checkpoint
    from jax_td3.run.checkpoint import save_checkpoint
    from jax_td3.update import init_train_state

    with jax.enable_x64(True):
        state = init_train_state(CONFIG, jax.random.PRNGKey(3), np.float64)
    contents = {"config": {"algo": "td3", "fields": dataclasses.asdict(CONFIG)}, "compiled": {"seeds": [3]},
                "train_states": [pack_train_state(state)]}
    path = save_checkpoint(tmp_path, 10, contents, {"backend": "jax-compiled", "dtype": "float64",
                                                     "env": "Pendulum-v1"})
    result = evaluate_checkpoint(path, episodes=1)
    assert np.isfinite(result["eval_return_mean"])
    assert not jax.config.jax_enable_x64


def test_the_torch_backend_leaves_torch_threads_alone():
    torch = pytest.importorskip("torch")
    from jax_td3.backends.torch_backend import TorchBackend
    from jax_td3.update import init_train_state

    before = torch.get_num_threads()
    TorchBackend(CONFIG, init_train_state(CONFIG, jax.random.PRNGKey(0)), "float32")
    assert torch.get_num_threads() == before


def test_the_sb3_seams_are_removed_after_each_update():
    torch = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3", reason="stable-baselines3 not installed (extra `thirdparty`)")
    import stable_baselines3.common.policies as policies_module
    import stable_baselines3.td3.td3 as td3_module

    from jax_td3.adapters.sb3 import SEAMS_LOCK, SB3Adapter

    config = make_config("td3", obs_dim=3, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0),
                         hidden=(8, 8), batch_size=8)
    originals = (torch.Tensor.normal_, td3_module.F, policies_module.preprocess_obs)
    adapter = SB3Adapter(config, "float32")
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((8, 3)), rng.uniform(-1, 1, (8, 2)), rng.standard_normal((8, 3)),
             rng.standard_normal((8, 1)), np.ones((8, 1)))
    for _ in range(2):
        adapter.update(batch, rng.standard_normal((8, 2)))
        assert (torch.Tensor.normal_, td3_module.F, policies_module.preprocess_obs) == originals
        assert not SEAMS_LOCK.locked()


def test_compiler_options_follow_the_environment_at_call_time(monkeypatch):
    from jax_td3 import xla_options

    monkeypatch.delenv("JAX_TD3_XLA_DEFAULTS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    default = xla_options.compiler_options()
    monkeypatch.setenv("JAX_TD3_XLA_DEFAULTS", "1")
    assert xla_options.compiler_options() is None
    monkeypatch.delenv("JAX_TD3_XLA_DEFAULTS")
    assert xla_options.compiler_options() == default


def test_the_command_line_switches_x64_on_for_a_resumed_float64_run(x32, tmp_path):
    """``jax-td3 train --resume`` takes the run's dtype from its newest checkpoint, as the run driver does."""
    import argparse

    from jax_td3.cli.train import _set_process_settings
    from jax_td3.run.checkpoint import save_checkpoint

    args = argparse.Namespace(algo=None, dtype=None, backend=None, preset=None, out=str(tmp_path), resume=True,
                              compiled=False)
    _set_process_settings(args)
    assert not jax.config.jax_enable_x64            # no checkpoint yet: the default, float32
    save_checkpoint(tmp_path, 10, {}, {"dtype": "float64", "backend": "jax"})
    _set_process_settings(args)
    assert jax.config.jax_enable_x64
