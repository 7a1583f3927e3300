"""benchmarks/zoo_agents.py reads the RL Baselines3 Zoo's published agents without Stable-Baselines3: its
forward passes equal PyTorch's on the same weights, and its unpickler reads the observation statistics."""

import importlib.util
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "zoo_agents.py"


@pytest.fixture(scope="module")
def zoo_agents():
    spec = importlib.util.spec_from_file_location("zoo_agents", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_zip(path, state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("policy.pth", buffer.getvalue())


@pytest.mark.parametrize("algo, config_text, activation", [
    ("ppo", "policy_kwargs: dict(activation_fn=nn.ReLU, net_arch=[...])", torch.nn.ReLU),
    ("a2c", "policy_kwargs: dict(log_std_init=-2)", torch.nn.Tanh),   # Stable-Baselines3 1.x's default
])
def test_gaussian_policy_mean_clipped_to_the_box(zoo_agents, tmp_path, algo, config_text, activation):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), activation(), torch.nn.Linear(8, 8), activation())
    head = torch.nn.Linear(8, 2)
    state = {f"mlp_extractor.policy_net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"action_net.{k}": v for k, v in head.state_dict().items()})
    state["value_net.weight"] = torch.zeros(1, 8)   # other entries of the file are ignored
    write_zip(tmp_path / "agent.zip", state)
    low, high = np.array([-0.05, -0.2]), np.array([0.05, 0.2])
    act = zoo_agents.load_policy(tmp_path / "agent.zip", algo, config_text, low, high)
    obs = 20 * np.random.default_rng(0).normal(size=(7, 5))   # large enough to reach the box
    with torch.no_grad():
        expected = head(net(torch.as_tensor(obs, dtype=torch.float32))).double().numpy()
    ours = act(obs)
    np.testing.assert_allclose(ours, np.clip(expected, low, high), rtol=0, atol=1e-6)  # float32 torch vs float64
    clipped = (ours == low) | (ours == high)
    assert clipped.any() and not clipped.all()   # both sides of the clip were exercised


def test_deterministic_actor_is_tanh_scaled_to_the_box(zoo_agents, tmp_path):
    torch.manual_seed(1)
    mu = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5), torch.nn.ReLU(),
                             torch.nn.Linear(5, 3), torch.nn.Tanh())
    write_zip(tmp_path / "agent.zip", {f"actor.mu.{k}": v for k, v in mu.state_dict().items()})
    low, high = np.array([-2.0, 0.0, -1.0]), np.array([1.0, 4.0, 1.0])
    act = zoo_agents.load_policy(tmp_path / "agent.zip", "ddpg", "", low, high)
    obs = np.random.default_rng(1).normal(size=(9, 4))
    with torch.no_grad():
        squashed = mu(torch.as_tensor(obs, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(act(obs), low + (squashed + 1) / 2 * (high - low), rtol=0, atol=1e-5)


def test_observation_statistics_are_read_without_the_library_that_pickled_them(zoo_agents, tmp_path, monkeypatch):
    # A stand-in for Stable-Baselines3's VecNormalize, pickled under its module path (with stand-in parent
    # packages, so this works whether or not the library is installed), then made unimportable.
    names = ["stable_baselines3", "stable_baselines3.common", "stable_baselines3.common.vec_env",
             "stable_baselines3.common.vec_env.vec_normalize"]
    module = types.ModuleType(names[-1])

    class RunningMeanStd:
        pass

    class VecNormalize:
        def __getstate__(self):
            return dict(self.__dict__)

    for cls in (RunningMeanStd, VecNormalize):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    stats = VecNormalize()
    stats.obs_rms = RunningMeanStd()
    stats.obs_rms.mean, stats.obs_rms.var = np.array([1.0, -2.0, 0.0]), np.array([4.0, 0.25, 1e-12])
    stats.epsilon, stats.clip_obs, stats.norm_obs = 1e-8, 10.0, True
    with monkeypatch.context() as patch:
        for name in names[:-1]:
            patch.setitem(sys.modules, name, types.ModuleType(name))
        patch.setitem(sys.modules, module.__name__, module)
        data = pickle.dumps(stats)
    assert b"stable_baselines3.common.vec_env.vec_normalize" in data
    (tmp_path / "vecnormalize.pkl").write_bytes(data)
    for name in names:   # whatever is installed, nothing of it may be used
        monkeypatch.setitem(sys.modules, name, None)

    normalise = zoo_agents.observation_normaliser(tmp_path / "vecnormalize.pkl")
    obs = np.array([3.0, -1.0, 0.5])
    expected = np.clip((obs - stats.obs_rms.mean) / np.sqrt(stats.obs_rms.var + 1e-8), -10.0, 10.0)
    np.testing.assert_array_equal(normalise(obs), expected)
    assert normalise(obs)[2] == 10.0   # a near-zero variance is clipped, as in training
    assert zoo_agents.observation_normaliser(tmp_path / "absent.pkl")(obs) is obs
