"""One schedule for every loop (``loops.schedule``) and the backend contract (``backends.base``)."""

import functools

import gymnasium as gym
import jax.numpy as jnp
import numpy as np
import pytest

from jax_td3.backends.base import Backend, FusedBackend, require_fused
from jax_td3.config import make_config
from jax_td3.errors import ConfigError
from jax_td3.loops import schedule
from jax_td3.loops.host import Trainer
from jax_td3.loops.vector import VectorTrainer
from jax_td3.settings import TrainSettings


class NaNRewardEnv(gym.Env):
    """obs = [t]; reward 1, NaN at this instance's steps in ``nan_steps`` (1-based); truncated at t = 50 (after
    the runs below: their episodes never end)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, nan_steps=()):
        self.nan_steps, self.t = tuple(nan_steps), 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([self.t], np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t in self.nan_steps else 1.0
        return np.array([self.t], np.float32), reward, False, self.t == 50, {}


def skipping_trainer(num_envs: int, vector: bool, **extra):
    """A run whose every environment's 2nd and 3rd rewards are NaN (skipped), learning from 6 transitions."""
    config = make_config("td3", obs_dim=1, act_dim=1, max_action=1.0, hidden=(8, 8), batch_size=4)
    settings = TrainSettings(**{**dict(total_steps=20, learning_starts=6, eval_every=1_000, eval_episodes=1,
                                       buffer_size=100, skip_nonfinite=True, num_envs=num_envs,
                                       updates_per_step=num_envs), **extra})
    env_fn = functools.partial(NaNRewardEnv, nan_steps=(2, 3))
    if vector:
        return VectorTrainer(config, settings, eval_env=NaNRewardEnv(), env_fn=env_fn)
    return Trainer(config, settings, env=env_fn(), eval_env=NaNRewardEnv())


def run_steps(trainer):
    records = []
    while not trainer.done:
        records.append(trainer.step())
    trainer.close()
    return records


def test_skip_nonfinite_moves_no_schedule_and_one_or_n_environments_learn_from_the_same_step():
    one, one_vector, two = (skipping_trainer(1, False), skipping_trainer(1, True), skipping_trainer(2, True))
    records = {name: run_steps(t) for name, t in (("one", one), ("one_vector", one_vector), ("two", two))}
    # Learning starts counted in environment steps, skipped transitions included: after step 7, not after
    # the step at which the buffer first holds more than 6 (step 9: two transitions were dropped).
    assert one.skipped_transitions == one_vector.skipped_transitions == 2 and len(one.buffer) == 18
    assert [len(r.updates) for r in records["one"]] == [0] * 6 + [1] * 14
    assert [len(r.updates) for r in records["one_vector"]] == [len(r.updates) for r in records["one"]]
    # Two environments, two updates per vector step: one update per transition, from the same step on.
    assert two.skipped_transitions == 4 and len(two.buffer) == 16
    assert [len(r.updates) for r in records["two"]] == [0] * 3 + [2] * 7
    done_one = np.cumsum([len(r.updates) for r in records["one"]])
    assert [int(done_one[r.step - 1]) for r in records["two"]] == list(np.cumsum([len(r.updates)
                                                                                   for r in records["two"]]))
    assert one.updates == two.updates == 14


def test_episode_schedule_learning_start_does_not_move_with_skipped_transitions():
    # No episode ends in these runs, so none owes updates; the rule is the schedule's all the same.
    settings = TrainSettings(learning_starts=6, update_schedule="episode", updates_per_episode=3)
    assert schedule.owed_updates(settings, 1, 5, [4], (1, 1)) == 0   # step 6: 6 transitions taken, not more
    assert schedule.owed_updates(settings, 1, 6, [4, 7], (1, 1)) == 6
    assert schedule.owed_updates(settings.replace(updates_per_episode="steps"), 1, 6, [4, 7], (1, 1)) == 11
    assert schedule.owed_updates(settings, 3, 1, [4], (1, 1)) == 0 and schedule.owed_updates(settings, 3, 2, [4],
                                                                                                 (1, 1)) == 3


@pytest.mark.parametrize("num_envs, learning_starts, fraction", [(1, 5, (1, 1)), (3, 30, (1, 2)), (4, 7, (3, 2)),
                                                                  (2, 0, (2, 1))])
def test_step_rules_agree_on_python_ints_and_jax_arrays_and_sum_to_updates_after(num_envs, learning_starts,
                                                                                   fraction):
    settings = TrainSettings(learning_starts=learning_starts, num_envs=num_envs)
    owed = [schedule.owed_updates(settings, num_envs, v, [], fraction) for v in range(40)]
    steps = jnp.arange(40, dtype=jnp.int32)
    on = schedule.learns_at(steps, learning_starts, num_envs)
    traced = jnp.where(on, schedule.updates_at(schedule.learning_step(steps, learning_starts, num_envs), *fraction), 0)
    assert [int(x) for x in traced] == owed
    # Vector step v learns exactly when more than learning_starts transitions were taken after it.
    assert [bool(x) for x in on] == [(v + 1) * num_envs > learning_starts for v in range(40)]
    assert [schedule.updates_after(v, learning_starts, num_envs, *fraction) for v in range(41)] == \
        [0] + list(np.cumsum(owed))


def test_evaluation_and_checkpoint_due_at_multiples_reached_or_passed():
    # One environment: every multiple, and the end.
    assert [t for t in range(1, 26) if schedule.evaluation_due(t - 1, t, 10, 25)] == [10, 20, 25]
    # Three environments: the vector step reaching or passing a multiple, and the last one (27 >= 25).
    assert [t for t in range(3, 28, 3) if schedule.evaluation_due(t - 3, t, 10, 25)] == [12, 21, 27]
    # Checkpoints: the same multiples, but not at the end (a run's end writes its own).
    assert [t for t in range(3, 28, 3) if schedule.checkpoint_due(t - 3, t, 10, 25)] == [12, 21]
    assert schedule.checkpoint_due(0, 40, 10, 100) and not schedule.checkpoint_due(41, 49, 10, 100)


def test_backends_are_the_protocols_the_loop_uses_and_a_missing_fused_call_is_one_line():
    import jax

    from jax_td3.backends import make_backend
    from jax_td3.update import init_train_state

    config = make_config("td3", obs_dim=3, act_dim=1, max_action=1.0, hidden=(8, 8), batch_size=4)
    state = init_train_state(config, jax.random.PRNGKey(0), np.dtype("float32"))
    jax_backend = make_backend("jax", config, state)
    assert isinstance(jax_backend, Backend) and isinstance(jax_backend, FusedBackend)
    assert require_fused(jax_backend, "updates_per_call") is jax_backend
    pytest.importorskip("torch")
    torch_backend = make_backend("torch", config, state)
    assert isinstance(torch_backend, Backend) and not isinstance(torch_backend, FusedBackend)
    with pytest.raises(ConfigError) as refusal:
        require_fused(torch_backend, "overlap")
    message = str(refusal.value)
    assert "'torch'" in message and "`overlap`" in message and "\n" not in message
