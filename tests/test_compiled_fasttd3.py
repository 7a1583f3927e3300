"""FastTD3 in the compiled loop: its device n-step replay equals the host buffer, exploration scales,
the observation normaliser, exact resume, the memory estimate, and (``-m slow``) learning Pendulum.

Programs are compiled without LLVM optimisations and shared by the tests of this module (a module
fixture): XLA's CPU compile dominates these tiny runs.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_td3.config import make_config
from jax_td3.envs import pendulum
from jax_td3.envs.base import EnvSpec
from jax_td3.envs.pendulum import PendulumEnv
from jax_td3.fasttd3 import device_replay
from jax_td3.fasttd3.normalizer import normalizer_init, normalizer_update
from jax_td3.fasttd3.replay import NStepReplayBuffer
from jax_td3.loops import compiled
from jax_td3.loops.compiled import ChunkedRun, LoopSettings

FAST_COMPILE = {"xla_backend_optimization_level": 0}
CONFIG = make_config("fasttd3", hidden=(8, 8), critic_hidden=(16, 16), num_atoms=11, v_min=-60.0, v_max=0.0,
                     batch_size=16, max_action=2.0, n_step=3, policy_noise=0.2)
# 4 environments, 120 vector steps; 30 steps per environment's ring, so the rings wrap; 1.5 updates per
# vector step (alternately one and two).
SETTINGS = LoopSettings(total_steps=480, learning_starts=40, eval_every=160, eval_episodes=2, buffer_size=120,
                        num_envs=4, updates_per_step=1.5)
CHUNK = 80


@dataclasses.dataclass(frozen=True)
class ShortPendulum(PendulumEnv):
    """Pendulum with short episodes: truncated after 9 steps, terminated once |theta_dot| exceeds 2."""

    spec: EnvSpec = EnvSpec("ShortPendulum", 3, 1, (-2.0,), (2.0,), 9)

    def step(self, env_state, action):
        state, obs, reward, _, _ = pendulum.step(env_state, action)
        return state, obs, reward, jnp.abs(state.theta_dot) > 2.0, state.t >= 9


def to_numpy(x):
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def host(tree):
    return jax.tree_util.tree_map(to_numpy, tree)


@pytest.fixture(scope="module")
def run():
    with jax.enable_x64(True):
        return ChunkedRun(CONFIG, SETTINGS, [0, 1], env=ShortPendulum(), dtype=jnp.float64, chunk_steps=CHUNK,
                          devices=jax.devices()[:1], compiler_options=FAST_COMPILE)


def finish(run, agents, done):
    """``run.run_from`` on the host: the final agents and the returns (evaluations, K, E)."""
    agents, evaluations = run.run_from(agents, done)
    return host(agents), np.stack([e.returns for e in evaluations])


def test_run_of_two_seeds_resumes_exactly_and_normalises_what_it_saw(run):
    with jax.enable_x64(True):
        live, first = run.start()
        live, done = run.advance(live, 0)    # one chunk: 20 vector steps, no ring has wrapped yet
        after_chunk = host(live)
        saved = run.host_state(live)
        uninterrupted = finish(run, live, done)
        resumed = finish(run, run.agents_from_host(saved), done)
    agents, curve = uninterrupted
    assert np.all(np.isfinite(first.returns)) and np.all(np.isfinite(curve)) and curve.shape == (3, 2, 2)
    assert not np.array_equal(curve[:, 0], curve[:, 1])                    # two seeds, two runs
    for x, y in zip(jax.tree_util.tree_leaves(resumed[0]), jax.tree_util.tree_leaves(agents), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(resumed[1], curve)
    np.testing.assert_array_equal(agents.updates, [SETTINGS.updates] * 2)    # (120 - 10) x 1.5 updates
    assert SETTINGS.updates == 165 and np.all(agents.train_state.step == 165)
    assert np.all(agents.replay.size == 30)

    # The normaliser saw each vector step's 4 observations before acting: the replay's obs rows.
    for k in range(2):
        with jax.enable_x64(True):
            stats = normalizer_init(3, jnp.float64)
            for t in range(20):
                stats = normalizer_update(stats, after_chunk.replay.obs[k, t])
        got = jax.tree_util.tree_map(lambda x: x[k], after_chunk.train_state.obs_normalizer)
        assert int(got.count) == 80 == int(stats.count)
        np.testing.assert_allclose(got.mean, stats.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got.var, stats.var, rtol=1e-12, atol=1e-15)
    assert np.all(agents.train_state.obs_normalizer.count == 480)   # 4 observations per vector step


def test_exploration_scales_are_redrawn_where_an_episode_ended_and_only_there():
    check_scales_redrawn_where_an_episode_ended(CONFIG)


def check_scales_redrawn_where_an_episode_ended(config):
    """14 vector steps of ``config`` (with a per-environment replay, which records where episodes ended)."""
    # No update in this run (learning would start after its end), so none is compiled.
    settings = SETTINGS.replace(total_steps=160, eval_every=160, learning_starts=160)
    agent = jax.jit(lambda seed: compiled.init_agent(config, settings, ShortPendulum(), seed, jnp.float32))(3)
    one_step = jax.jit(lambda a, s: compiled.run_steps(config, settings, ShortPendulum(), a, s, 1)).lower(
        agent, jnp.int32(0)).compile(FAST_COMPILE)
    ended_somewhere = kept_somewhere = 0
    for step in range(14):
        before = np.asarray(agent.explore_scale)
        agent = one_step(agent, jnp.int32(step))
        row = (int(agent.replay.position) - 1) % agent.replay.capacity
        ended = np.asarray(agent.replay.terminated[row] | agent.replay.truncated[row])
        after = np.asarray(agent.explore_scale)
        np.testing.assert_array_equal(after[~ended], before[~ended])
        assert np.all(after[ended] != before[ended])
        assert np.all((after >= config.std_min) & (after < config.std_max))
        ended_somewhere += ended.sum()
        kept_somewhere += (~ended).sum()
    assert ended_somewhere >= 4 and kept_somewhere >= 4


def test_memory_estimate_is_the_bytes_the_run_allocates(run):
    from jax_td3.run.checks import compiled_loop_needs, tree_bytes

    with jax.enable_x64(True):
        agents, draws = run.allocation_shapes()
        need = compiled_loop_needs(agents, draws)
        allocated = run.initial_agents()
        # Every block draws for progress_block(160 / 4) = 4 vector steps.
        largest = jax.jit(run.pieces.draws, static_argnums=2)(run.hparams, allocated.key, 4)
    assert agents.replay.obs.shape == (2, 30, 4, 3)      # K, slots per environment, N, obs_dim
    assert agents.explore_scale.shape == (2, 4) and draws.scale_uniform.shape == (2, 4, 4)
    assert draws.replay_bits.shape == (2, 4, 2, CONFIG.batch_size)   # K, steps, up to 2 updates, batch
    assert need.total == tree_bytes(allocated) + tree_bytes(largest)
    assert "replay buffers {} at 120 transitions for 2 agents" in dict(need.parts)


def host_transitions(stream, n_step, gamma, bootstrap_truncation):
    """Per environment, the host buffer's transitions by start (one host buffer per environment: its i-th
    written transition starts at step i, since starts finish in order)."""
    obs, action, reward, next_obs, terminated, truncated = stream
    steps, num_envs = reward.shape
    out = []
    for e in range(num_envs):
        buffer = NStepReplayBuffer(steps, obs.shape[-1], action.shape[-1], 1, n_step, gamma,
                                   disable_bootstrap=not bootstrap_truncation, dtype=np.float64)
        written = []
        for t in range(steps):
            buffer.add(obs[t, e], action[t, e], reward[t, e], next_obs[t, e], terminated[t, e], truncated[t, e])
            written.append(len(buffer))
        out.append((buffer.gather(np.arange(len(buffer))), written))
    return out


@pytest.mark.parametrize("bootstrap_truncation", [True, False])
def test_device_nstep_transitions_equal_the_host_buffers(x64, bootstrap_truncation):
    rng = np.random.default_rng(7)
    steps, num_envs, obs_dim, act_dim, n_step, capacity, gamma = 40, 3, 2, 1, 3, 7, 0.9
    stream = (rng.normal(size=(steps, num_envs, obs_dim)), rng.normal(size=(steps, num_envs, act_dim)),
              rng.normal(size=(steps, num_envs)), rng.normal(size=(steps, num_envs, obs_dim)),
              rng.random((steps, num_envs)) < 0.15, rng.random((steps, num_envs)) < 0.1)
    reference = host_transitions(stream, n_step, gamma, bootstrap_truncation)

    add = jax.jit(lambda r, *row: device_replay.nstep_replay_add(r, *row, n_step))
    gather = jax.jit(lambda r, s, e: device_replay.nstep_gather(r, s, e, n_step, gamma, bootstrap_truncation))
    replay = device_replay.nstep_replay_init(capacity, num_envs, obs_dim, act_dim, jnp.float64)
    compared = 0
    for t in range(steps):
        replay = add(replay, *(x[t] for x in stream))
        size, position = int(replay.size), int(replay.position)
        finished = np.asarray(device_replay.finished_starts(replay))
        for e in range(num_envs):
            batch, written = reference[e]
            oldest = t + 1 - size                        # the step in the ring's oldest slot
            starts = np.arange(oldest, oldest + finished[e])
            # The device holds every finished start the host wrote that its ring still holds.
            assert oldest + finished[e] == written[t]
            # Every slot (one shape, one compilation); the finished starts come first, oldest first.
            slots = (position - size + np.arange(capacity)) % capacity
            got = gather(replay, jnp.asarray(slots, jnp.int32), jnp.full(capacity, e, jnp.int32))
            for name in batch._fields:
                want = getattr(batch, name)[starts]
                np.testing.assert_allclose(np.asarray(getattr(got, name))[:finished[e]].reshape(want.shape), want,
                                           rtol=1e-14, atol=1e-15, err_msg=f"{name} env {e} step {t}")
            compared += len(starts)
    assert compared > 500
    # The sampler draws each environment's batch share from its finished starts only.
    bits = jax.random.bits(jax.random.key(0), (300,), jnp.uint32)
    slots, envs = device_replay.nstep_indices_from_bits(replay, bits)
    np.testing.assert_array_equal(envs, np.arange(300) % num_envs)
    age = (np.asarray(slots) - (int(replay.position) - int(replay.size))) % capacity
    assert np.all(age < np.asarray(device_replay.finished_starts(replay))[np.asarray(envs)])


@pytest.mark.parametrize("changes, settings_changes, message", [
    ({"n_step": 12}, {}, "needs `learning_starts` >= 44"),
    ({}, {"buffer_size": 8}, "`n_step` 3 needs at least 3"),
    ({"actor_lr_end": 1e-4}, {}, "needs `lr_schedule_updates`"),
])
def test_fasttd3_sizes_the_device_replay_cannot_serve_are_refused(changes, settings_changes, message):
    from jax_td3.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        ChunkedRun(CONFIG.replace(**changes), SETTINGS.replace(**settings_changes), [0], env=PendulumEnv())


@pytest.mark.slow
def test_compiled_fasttd3_learns_pendulum_with_the_preset():
    from jax_td3.presets import PRESETS

    preset = {k: v for k, v in PRESETS["fasttd3-pendulum"].items() if k not in ("algo", "env")}
    loop_names = {f.name for f in dataclasses.fields(LoopSettings)}
    settings = LoopSettings(**{k: v for k, v in preset.items() if k in loop_names})
    config = make_config("fasttd3", max_action=2.0, **{k: v for k, v in preset.items() if k not in loop_names})
    result = compiled.train_compiled(config, settings, [0, 1, 2], env=PendulumEnv())
    final = result.eval_returns[:, -1].mean(axis=1)
    assert np.all(final >= -250), final


def test_cli_compiled_fasttd3_run_its_checkpoint_and_export_evaluate_alike(tmp_path, capsys):
    """``train --compiled --algo fasttd3`` through the command (plan, config, memory check, outputs): the
    counts it reports are the run's (4 environments x 40 vector steps; 1.5 updates per vector step once
    learning starts at 40 transitions), its metrics hold the evaluations at 0, 80 and 160, and ``eval`` of
    its checkpoint and of its export to PyTorch (with the normaliser) give the same return."""
    import json

    pytest.importorskip("torch")
    pytest.importorskip("gymnasium")
    from jax_td3.cli import main
    from jax_td3.run.logger import read_metrics

    out, agent = tmp_path / "run", tmp_path / "agent.pt"
    assert main(["train", "--compiled", "--algo", "fasttd3", "--env", "Pendulum-v1", "--num-envs", "4",
                 "--updates-per-step", "1.5", "--hidden", "8,8", "--critic-hidden", "16,16", "--num-atoms", "11",
                 "--v-min", "-60", "--v-max", "0", "--batch-size", "16", "--n-step", "2", "--total-steps", "160",
                 "--learning-starts", "40", "--eval-every", "80", "--eval-episodes", "1", "--buffer-size", "80",
                 "--seed", "5", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 160 and summary["updates"] == 45   # (160 - 40) / 4 vector steps x 1.5
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [0, 80, 160] and [int(r["updates"]) for r in rows] == [0, 15, 45]
    assert rows[-1]["eval_return_mean"] == pytest.approx(summary["final_eval_return_mean"], rel=1e-6)
    assert main(["export", str(out), "--to", "torch", str(agent)]) == 0
    capsys.readouterr()
    returns = []
    for source in (out, agent):
        assert main(["eval", str(source), "--episodes", "2"]) == 0
        returns.append(capsys.readouterr().out.split("return ")[1].split(" over")[0])
    assert returns[0] == returns[1], returns
