"""The checks a run makes before it builds anything (jax_td3.run.checks): sizes counted by hand."""

import jax
import numpy as np
import pytest

from jax_td3.config import make_config
from jax_td3.errors import ConfigError
from jax_td3.run.checks import (
    GiB,
    Need,
    available_host_memory,
    check_compiled_seeds,
    compiled_loop_needs,
    ensure_writable_dir,
    format_bytes,
    host_loop_needs,
    refuse_if_too_big,
    replay_bytes,
    train_state_bytes,
)
from jax_td3.settings import SEED_LIMIT, TrainSettings

# TD3 on obs 3, act 1, hidden 8,8, counted by hand (weights + biases):
ACTOR = (3 * 8 + 8) + (8 * 8 + 8) + (8 * 1 + 1)              # 113
ONE_CRITIC = ((3 + 1) * 8 + 8) + (8 * 8 + 8) + (8 * 1 + 1)   # 121
CRITICS = 2 * ONE_CRITIC                                      # twin critic: 242
# Parameters, target copies and the two Adam moments of each; three int32 counters
# (the actor's and the critic's Adam counts, the train state's step).
FLOATS = 4 * (ACTOR + CRITICS)                                # 1420
COUNTERS = 3 * 4


@pytest.fixture(scope="module")
def config():
    return make_config("td3", obs_dim=3, act_dim=1, action_low=[-2.0], action_high=[2.0], hidden=(8, 8))


def test_train_state_bytes_are_counted_exactly(config):
    assert (ACTOR, CRITICS, FLOATS) == (113, 242, 1420)
    assert train_state_bytes(config, "float32") == FLOATS * 4 + COUNTERS == 5692
    assert train_state_bytes(config, np.float64) == FLOATS * 8 + COUNTERS == 11372


def test_train_state_bytes_of_huge_networks_allocate_nothing():
    huge = make_config("td3", obs_dim=3, act_dim=1, action_low=[-2.0], action_high=[2.0], hidden=(100_000, 100_000))
    assert train_state_bytes(huge, "float32") > 400 * GiB  # would not fit; counted from shapes alone


def test_replay_bytes():
    # obs, next_obs (3 each), action (1), reward, not_done: 9 numbers a transition.
    assert replay_bytes(1000, 3, 1, "float32") == 1000 * 9 * 4
    assert replay_bytes(1000, 3, 1, "float64") == 1000 * 9 * 8


def test_host_loop_needs(config):
    settings = TrainSettings(buffer_size=1000)
    host, device = host_loop_needs(config, settings, device_is_host=False)
    assert host.total == 36_000 and device.total == 5692
    host, device = host_loop_needs(config, settings, device_is_host=True)
    assert host.total == 36_000 + 5692 and device.parts == ()
    # updates_per_call > 1 keeps a device copy of the ring; torch keeps its own networks on the host.
    host, device = host_loop_needs(config, settings.replace(updates_per_call=4), device_is_host=False)
    assert host.total == 36_000 and device.total == 5692 + 36_000
    host, device = host_loop_needs(config, settings.replace(backend="torch"), device_is_host=False)
    assert host.total == 36_000 + 5692 and device.total == 5692
    host, _ = host_loop_needs(config, settings.replace(dtype="float64"), device_is_host=True)
    assert host.total == 72_000 + 11372


def test_compiled_loop_needs(config):
    # From the shapes of what a compiled run of 5 agents with a ring of 100 transitions allocates.
    from jax_td3.envs.pendulum import PendulumEnv
    from jax_td3.loops.compiled import ChunkedRun, LoopSettings

    settings = LoopSettings(total_steps=100, eval_every=100, buffer_size=1000)
    run = ChunkedRun(config, settings, range(5), env=PendulumEnv(), devices=jax.devices()[:1])
    need = compiled_loop_needs(*run.allocation_shapes())
    parts = dict((text.split(" {}")[0], size) for text, size in need.parts)
    # The ring's five fields (and its two int32 counters), and the train state counted by hand.
    assert parts["replay buffers"] == 5 * (100 * 9 * 4 + 2 * 4)
    assert parts["networks and Adam"] == 5 * 5692
    assert "for 5 agents" in need.describe()


def test_refusal_says_what_is_needed_and_what_there_is():
    need = Need((("replay buffer {} at `buffer_size` 1,000,000,000", int(96.9 * GiB)),
                 ("networks and Adam {}", int(0.1 * GiB))))
    with pytest.raises(ConfigError) as err:
        refuse_if_too_big(need, int(20.3 * GiB))
    assert str(err.value) == ("the run needs 97.0 GiB (replay buffer 96.9 GiB at `buffer_size` 1,000,000,000; "
                              "networks and Adam 0.1 GiB) but 20.3 GiB of memory is available")
    refuse_if_too_big(need, int(98 * GiB))  # fits
    refuse_if_too_big(need, None)           # unknown: nothing is checked


def test_format_bytes():
    assert format_bytes(5692) == "5.6 KiB"
    assert format_bytes(36 * 1024 ** 2) == "36.0 MiB"
    assert format_bytes(3 * GiB // 2) == "1.5 GiB"


def test_available_host_memory():
    available = available_host_memory()
    assert available is None or available > 0


def test_ensure_writable_dir_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    assert ensure_writable_dir(out) == out
    assert not (tmp_path / "a").exists()
    (tmp_path / "existing").mkdir()
    ensure_writable_dir(tmp_path / "existing")
    assert (tmp_path / "existing").is_dir() and not any((tmp_path / "existing").iterdir())


@pytest.mark.parametrize("case", ["proc", "file", "under-a-file"])
def test_ensure_writable_dir_refuses(case, tmp_path):
    (tmp_path / "f").write_text("x")
    path = {"proc": "/proc/nope/run", "file": tmp_path / "f", "under-a-file": tmp_path / "f" / "run"}[case]
    with pytest.raises(ConfigError, match="`out`"):
        ensure_writable_dir(path)
    assert (tmp_path / "f").read_text() == "x"


def test_seed_range():
    assert TrainSettings(seed=SEED_LIMIT - 1).validate().seed == SEED_LIMIT - 1
    for seed in (-1, SEED_LIMIT, 2 ** 32, 99999999999999999999):
        with pytest.raises(ConfigError, match="`seed` must be in"):
            TrainSettings(seed=seed).validate()
    check_compiled_seeds(SEED_LIMIT - 10, 10)
    with pytest.raises(ConfigError, match="`num_seeds`"):
        check_compiled_seeds(SEED_LIMIT - 10, 11)
    # Every seed the compiled loop derives (agent i: seed + i; its evaluation: + 100) fits int32.
    assert SEED_LIMIT - 1 + 100 < 2 ** 31


def test_ensure_writable_dir_checks_again_when_another_process_removed_the_new_directory(tmp_path, monkeypatch):
    """The processes of one `--num-processes` run check the same new directory at once; one of them can
    remove it (its cleanup) between another's mkdir and test file. That is checked again, not refused."""
    import tempfile

    real, calls = tempfile.TemporaryFile, []

    def removed_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", removed_once)
    out = tmp_path / "new" / "run"
    assert ensure_writable_dir(out) == out
    assert len(calls) == 2 and not (tmp_path / "new").exists()
