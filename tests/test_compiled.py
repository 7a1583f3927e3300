"""The fully compiled loop: determinism, vmapped seeds and hyperparameter sweeps equal separate runs.

Programs are compiled once per module, without LLVM optimisations (XLA's CPU
compile dominates the cost of these tiny runs), and run several times: seeds and
hyperparameters are inputs of the compiled programs, not constants (``ChunkedRun.for_agents``).

Agents vmapped together are compared with separate runs in float64 to a relative
1e-9: XLA generates different loops for a batch of K agents than for one (other
vectorisation, fused multiply-adds, reduction order), so the results agree to
rounding rather than bit for bit. A few hundred float64 updates accumulate
rounding of order 1e-13; a real difference (another seed, another hyperparameter,
agents mixed up) shows at 1e-3 or more.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_td3.config import make_config
from jax_td3.envs.pendulum import PendulumEnv
from jax_td3.loops import compiled
from jax_td3.loops.compiled import ChunkedRun, LoopSettings

CONFIG = make_config("td3", hidden=(8, 8), batch_size=16, max_action=2.0)
SETTINGS = LoopSettings(total_steps=300, learning_starts=100, eval_every=100, eval_episodes=2, buffer_size=250)


FAST_COMPILE = {"xla_backend_optimization_level": 0}
RTOL, ATOL = 1e-9, 1e-12


class Runner:
    """One compiled run of K agents (float64 on one device), run with any seeds and hyperparameters."""

    def __init__(self, num_agents, on_progress=None, on_eval=None):
        self.on_eval = on_eval
        with jax.enable_x64(True):
            self.run = ChunkedRun(CONFIG, SETTINGS, [0] * num_agents, env=PendulumEnv(), dtype=jnp.float64,
                                  devices=jax.devices()[:1], on_progress=on_progress, compiler_options=FAST_COMPILE)

    def __call__(self, seeds, config=CONFIG, settings=SETTINGS):
        with jax.enable_x64(True):
            result = self.run.for_agents(seeds, config, settings).run(self.on_eval)
            return jax.tree_util.tree_map(to_numpy, result.agents), result.eval_returns


@pytest.fixture(scope="module")
def single():
    return Runner(1)


class Recorder:
    """Host-callback sink: what the program reported while it ran."""

    def __init__(self):
        self.progress, self.rows = [], []

    def on_progress(self, step):
        self.progress.append(int(step))

    def on_eval(self, step, returns, critic_loss, actor_loss, updates):
        self.rows.append((int(step), np.asarray(returns), np.asarray(updates)))


@pytest.fixture(scope="module")
def recorder():
    return Recorder()


@pytest.fixture(scope="module")
def triple(recorder):
    return Runner(3, recorder.on_progress, recorder.on_eval)


def to_numpy(x):
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def assert_trees_close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)


def agent(agents, i):
    return jax.tree_util.tree_map(lambda x: x[i:i + 1], agents)


def test_run_shapes_counters_and_learning_signal(single):
    agents, returns = single([0])
    assert returns.shape == (1, len(compiled.eval_steps(SETTINGS)), SETTINGS.eval_episodes)
    np.testing.assert_array_equal(compiled.eval_steps(SETTINGS), [0, 100, 200, 300])
    # One update per step after learning_starts; the shared counter equals it.
    assert int(agents.updates[0]) == SETTINGS.updates == 200
    assert int(agents.train_state.step[0]) == 200
    # Ring buffer holds every transition (capacity = min(buffer, total steps) = 250 < 300: wrapped).
    assert int(agents.replay.size[0]) == 250 and int(agents.replay.position[0]) == 300 % 250
    # Pendulum rewards are in [-16.3, 0]: returns of 200-step episodes are in [-3255, 0].
    assert np.all(returns <= 0) and np.all(returns >= -200 * 16.2736045)
    # No update before learning_starts: the policy (hence the evaluation) is unchanged at step 100.
    np.testing.assert_array_equal(returns[0, 0], returns[0, 1])
    assert not np.array_equal(returns[0, 1], returns[0, 3])


def test_same_seed_same_curve_and_state(single):
    agents_a, returns_a = single([7])
    agents_b, returns_b = single([7])
    np.testing.assert_array_equal(returns_a, returns_b)
    assert_trees_equal(agents_a, agents_b)
    _, returns_c = single([8])
    assert not np.array_equal(returns_a, returns_c)


def test_vmapped_seeds_equal_individual_runs(single, triple):
    seeds = [3, 4, 5]
    agents, returns = triple(seeds)
    for i, seed in enumerate(seeds):
        agents_i, returns_i = single([seed])
        np.testing.assert_allclose(returns[i:i + 1], returns_i, rtol=RTOL)
        assert_trees_close(agent(agents, i), agents_i)


def test_hyperparameter_sweep_equals_separate_runs(single, triple):
    actor_lrs, taus, expl_noises = [1e-3, 3e-4, 3e-3], [0.005, 0.05, 0.01], [0.1, 0.3, 0.0]
    sweep = dataclasses.replace(CONFIG, actor_lr=np.array(actor_lrs), tau=np.array(taus))
    agents, returns = triple([1, 1, 1], sweep, SETTINGS.replace(expl_noise=np.array(expl_noises)))
    finals = []
    for i in range(3):
        config_i = CONFIG.replace(actor_lr=actor_lrs[i], tau=taus[i])
        agents_i, returns_i = single([1], config_i, SETTINGS.replace(expl_noise=expl_noises[i]))
        np.testing.assert_allclose(returns[i:i + 1], returns_i, rtol=RTOL)
        assert_trees_close(agent(agents, i), agents_i)
        finals.append(returns_i[0, -1])
    # Same seed, different hyperparameters: the agents really differ.
    assert np.abs(finals[0] - finals[1]).max() > 1e-3 and np.abs(finals[1] - finals[2]).max() > 1e-3


def test_callbacks_report_progress_and_every_evaluation(triple, recorder):
    recorder.progress.clear()
    recorder.rows.clear()
    _, returns = triple([0, 1, 2])
    block = compiled.progress_block(SETTINGS.eval_every)
    assert recorder.progress == list(range(block, SETTINGS.total_steps + 1, block))
    steps = [0, 100, 200, 300]
    assert [row[0] for row in recorder.rows] == steps
    for (_, reported, updates), step_returns, step in zip(recorder.rows, np.swapaxes(returns, 0, 1), steps):
        # Host callbacks run outside this thread's float64 context, so they see float32 copies.
        np.testing.assert_array_equal(reported, step_returns.astype(reported.dtype))
        np.testing.assert_array_equal(updates, [max(step - SETTINGS.learning_starts, 0)] * 3)


def test_uneven_eval_period_adds_a_final_evaluation():
    assert list(compiled.eval_steps(SETTINGS.replace(total_steps=250))) == [0, 100, 200, 250]
    assert compiled.progress_block(1000) == 100 and compiled.progress_block(100_000) == 1000
    assert compiled.progress_block(1009) == 1009  # a prime: no divisor near 100, no intermediate ticks


@pytest.mark.parametrize("flags, message", [
    (["--env", "HalfCheetahBulletEnv-v0"], "no JAX-native environment 'HalfCheetahBulletEnv-v0' (JAX-native: "
                                          "Pendulum-v1)"),
    (["--exploration", "ou"], "--compiled does not support --exploration ou"),
    (["--backend", "torch"], "--compiled does not support --backend torch"),
])
def test_cli_rejects_what_the_compiled_path_cannot_run(flags, message, capsys, tmp_path):
    from jax_td3.cli import main

    assert main(["train", "--compiled", "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_cli_writes_every_output_with_one_value_per_seed(tmp_path):
    import json

    from jax_td3.cli import main
    from jax_td3.run.logger import read_metrics

    out = tmp_path / "run"
    assert main(["train", "--compiled", "--num-seeds", "2", "--total-steps", "300", "--learning-starts", "100",
                 "--eval-every", "100", "--eval-episodes", "2", "--hidden", "8,8", "--batch-size", "16",
                 "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["final_eval_return"]) == 2
    assert summary["final_eval_return_mean"] == pytest.approx(np.mean(summary["final_eval_return"]))
    assert summary["compile_seconds"] > 0 and summary["wall_seconds"] >= summary["run_seconds"]
    assert summary["env_steps"] == 300 and summary["updates"] == 200
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [0, 100, 200, 300]
    assert rows[-1]["eval_return_seed0"] == pytest.approx(summary["final_eval_return"][0], rel=1e-6)
    assert (out / "learning_curve.png").exists() and (out / "config.json").exists()
    assert summary["last_checkpoint"] and (out / "checkpoints").is_dir()


# -- many environments per agent, fractional updates, chunks ---------------------------------

# Evaluation returns of ``single([0])`` as the loop computed them before it stepped several environments
# per agent (seed 0, float64, SETTINGS): one environment and one update per step must still give them.
# Recomputed once since, when the initial weights were made independent of fused multiply-adds: these
# programs compile without LLVM optimisations (FAST_COMPILE), where the old ``u * 2 bound - bound`` was
# not fused and rounded twice, so some initial weights moved by a float32 ulp (the loop itself had not
# changed: the old code still gave the old numbers, here bit for bit). Compared to RTOL = 1e-9: on another
# processor (other vector widths, FMA or not) the 200 float64 updates round differently by of order 1e-13
# relative (checked under the AVX cap of tests/test_instruction_set.py); a change in the loop shows at
# 1e-3 or more.
SINGLE_ENV_RETURNS = [[-1178.3060364229964, -1152.9453524928686], [-1178.3060364229964, -1152.9453524928686],
                      [-1102.208170480839, -1179.6804735233268], [-1195.7761804059298, -1331.8765284998535]]


def test_one_env_one_update_per_step_is_the_single_environment_loop(single):
    _, returns = single([0])
    np.testing.assert_allclose(returns[0], SINGLE_ENV_RETURNS, rtol=RTOL)


def run_once(settings, seeds=(0,), config=CONFIG, chunk_steps=None):
    with jax.enable_x64(True):
        result = compiled.train_compiled(config, settings, list(seeds), env=PendulumEnv(), dtype=np.float64,
                                         devices=jax.devices()[:1], compiler_options=FAST_COMPILE,
                                         chunk_steps=chunk_steps)
        return jax.tree_util.tree_map(to_numpy, result.agents), result.eval_returns


MANY = SETTINGS.replace(total_steps=1200, learning_starts=100, eval_every=600, buffer_size=1200, num_envs=3)


def test_many_environments_write_their_own_continuous_trajectories():
    agents, returns = run_once(MANY.replace(learning_starts=1200))  # no update: only the environments
    replay = jax.tree_util.tree_map(lambda x: x[0], agents.replay)
    assert int(replay.size) == 1200 and returns.shape == (1, 3, 2)
    # Slot v * 3 + i holds environment i's transition of vector step v: each environment's next_obs is its
    # own next obs, except where its 200-step episode ended (vector step 199) and it was reset.
    obs, next_obs = replay.obs.reshape(400, 3, 3), replay.next_obs.reshape(400, 3, 3)
    breaks = np.argwhere(~np.all(next_obs[:-1] == obs[1:], axis=2))
    np.testing.assert_array_equal(breaks, [[199, 0], [199, 1], [199, 2]])
    assert np.all(replay.not_done == 1)                        # truncation only: every transition bootstraps
    assert len({tuple(np.round(o, 12)) for o in obs[0]}) == 3  # three different starts
    # Warm-up actions are uniform over [-2, 2] for every transition before learning_starts (here: all).
    assert replay.action.min() >= -2 and replay.action.max() <= 2 and np.ptp(replay.action) > 3.9


@pytest.mark.parametrize("updates_per_step, expected", [(0.25, 100), (1.5, 600), (2.0, 800)])
def test_fractional_and_several_updates_per_step(updates_per_step, expected):
    # 400 vector steps of 3 environments, learning from the first: floor(400 U) updates in all.
    settings = MANY.replace(learning_starts=0, updates_per_step=updates_per_step)
    assert settings.updates == expected
    agents, returns = run_once(settings)
    assert int(agents.updates[0]) == int(agents.train_state.step[0]) == expected
    assert np.all(np.isfinite(returns))


def test_the_update_schedule_spreads_fractional_updates_evenly():
    settings = MANY.replace(learning_starts=9, updates_per_step=0.75)   # learning from vector step 3 on
    assert settings.update_fraction == (3, 4) and settings.max_updates_per_step == 1
    counts = [int(compiled.updates_this_step(settings, jnp.int32(step))) for step in range(3, 3 + 12)]
    assert counts == [0, 1, 1, 1] * 3
    assert [settings.updates_after(3 + j) for j in (0, 1, 4, 12)] == [0, 0, 3, 9]
    settings = settings.replace(updates_per_step=1.5)
    counts = [int(compiled.updates_this_step(settings, jnp.int32(step))) for step in range(3, 3 + 6)]
    assert counts == [1, 2, 1, 2, 1, 2] and settings.max_updates_per_step == 2


@pytest.mark.parametrize("changes, message", [
    ({"num_envs": 7}, "`total_steps` 1,200 must be a multiple of `num_envs` 7"),
    ({"num_envs": 16, "total_steps": 800}, "`eval_every` 600 must be a multiple of `num_envs` 16"),
    ({"updates_per_step": 0.0}, "`updates_per_step` must be a positive number"),
    ({"updates_per_step": 1 / 3000}, "must be a ratio of small whole numbers"),
])
def test_loop_settings_refuse_sizes_that_do_not_fit(changes, message):
    from jax_td3.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        MANY.replace(**changes)


def chunks_of_50_against_one_chunk_per_period(settings):
    """The run in chunks of 50 transitions and in one chunk per period agree; returns the first's returns."""
    agents, returns = run_once(settings)
    chunked_agents, chunked_returns = run_once(settings, chunk_steps=50)
    # Chunks of other sizes are compiled apart, so XLA may round differently (see RTOL).
    np.testing.assert_allclose(chunked_returns, returns, rtol=RTOL)
    assert_trees_close(chunked_agents, agents)
    return chunked_returns


def test_chunked_run_equals_one_chunk_per_period_and_resumes_exactly():
    settings = SETTINGS.replace(num_envs=2, total_steps=400, updates_per_step=0.5)
    chunked_returns = chunks_of_50_against_one_chunk_per_period(settings)

    def finish(run, agents, done):   # the rest of the run, on the host: agents and returns (evaluations, K, E)
        agents, evaluations = run.run_from(agents, done)
        return jax.tree_util.tree_map(to_numpy, agents), np.stack([e.returns for e in evaluations])

    with jax.enable_x64(True):
        run = compiled.ChunkedRun(CONFIG, settings, [0], env=PendulumEnv(), dtype=np.float64, chunk_steps=50,
                                  devices=jax.devices()[:1], compiler_options=FAST_COMPILE)
        live, _ = run.start()
        done = 0
        while done < 150:   # stop between evaluations, as a checkpoint may
            live, done = run.advance(live, done)
        saved = run.host_state(live)
        uninterrupted = finish(run, live, done)
        resumed = finish(run, run.agents_from_host(saved), done)
    assert_trees_equal(resumed[0], uninterrupted[0])
    np.testing.assert_array_equal(resumed[1], uninterrupted[1])
    # Evaluations leave the training state alone: skipping the one at 100 changes no later return.
    np.testing.assert_array_equal(uninterrupted[1][:, 0], chunked_returns[0, 2:])


def test_a_last_partial_period_as_long_as_a_chunk_draws_as_one_chunk_per_period_does():
    # eval_every 100 over 2 environments: periods of 50 vector steps in blocks of 5; chunks of 50
    # transitions are 25 vector steps, and so is the last, partial period (400 to 450). That period runs
    # as one block whatever the chunk size; a program cached under the chunk's length alone would run it
    # in the chunks' blocks of 5 and draw other random numbers.
    chunks_of_50_against_one_chunk_per_period(SETTINGS.replace(num_envs=2, total_steps=450, updates_per_step=0.5))


@pytest.mark.parametrize("layout", ["flat", "per_env"])
def test_a_finished_run_with_a_full_ring_resumes_to_more_steps_exactly(layout):
    # 200 steps of 2 environments fill the ring (capacity min(buffer_size 250, total_steps 200)) exactly: its
    # write position is back at slot 0 although it never wrapped. Resumed with total_steps 300 (capacity 250),
    # the run goes on as one of 300 steps from the start does, bit for bit.
    longer = SETTINGS.replace(num_envs=2, total_steps=300, updates_per_step=0.5, replay_layout=layout)
    with jax.enable_x64(True):
        def make(settings):
            return ChunkedRun(CONFIG, settings, [0], env=PendulumEnv(), dtype=np.float64, chunk_steps=50,
                              devices=jax.devices()[:1], compiler_options=FAST_COMPILE)

        finished = make(longer.replace(total_steps=200))
        agents, _ = finished.run_from(finished.start()[0], 0)
        filled = 200 if layout == "flat" else 100   # slots: transitions, or vector steps per environment
        assert agents.replay.obs.shape[1] == filled
        assert np.asarray(agents.replay.position).tolist() == [0]
        assert np.asarray(agents.replay.size).tolist() == [filled]
        saved = finished.host_state(agents)
        run = make(longer)
        resumed, resumed_evaluations = run.run_from(run.agents_from_host(saved), 200)
        whole, whole_evaluations = run.run_from(run.start()[0], 0)
        resumed, whole = (jax.tree_util.tree_map(to_numpy, x) for x in (resumed, whole))
    assert resumed.replay.obs.shape[1] == filled * 5 // 4
    assert_trees_equal(resumed, whole)
    assert [e.step for e in resumed_evaluations] == [300]
    np.testing.assert_array_equal(resumed_evaluations[0].returns, whole_evaluations[-1].returns)


def test_a_resume_with_longer_chunks_from_between_them_evaluates_on_schedule():
    # Checkpointed after one chunk of 50 steps, resumed with chunks of 100: the first resumed chunk runs the
    # 50 steps up to the next chunk boundary (it ran 100, evaluated nowhere and ended at step 350).
    settings = SETTINGS.replace(num_envs=2, updates_per_step=0.5)
    with jax.enable_x64(True):
        def make(chunk_steps):
            return ChunkedRun(CONFIG, settings, [0], env=PendulumEnv(), dtype=np.float64, chunk_steps=chunk_steps,
                              devices=jax.devices()[:1], compiler_options=FAST_COMPILE)

        short = make(50)
        agents, done = short.advance(short.start()[0], 0)
        assert done == 50
        saved = short.host_state(agents)
        whole, whole_evaluations = short.run_from(agents, done)
        run = make(100)
        resumed, evaluations = run.run_from(run.agents_from_host(saved), done)
        resumed, whole = (jax.tree_util.tree_map(to_numpy, x) for x in (resumed, whole))
    assert [e.step for e in evaluations] == [e.step for e in whole_evaluations] == [100, 200, 300]
    assert int(resumed.updates[0]) == int(whole.updates[0]) == (150 - 50) // 2
    # The same random draws (whole blocks); chunks of other sizes are compiled apart (see RTOL).
    assert_trees_close(resumed, whole)
    np.testing.assert_allclose(evaluations[-1].returns, whole_evaluations[-1].returns, rtol=RTOL)


def test_memory_estimate_is_the_bytes_the_run_allocates():
    from jax_td3.run.checks import compiled_loop_needs, tree_bytes

    # 250 steps of 2 environments: a last, partial evaluation period of 25 vector steps, drawn as one block
    # (the whole periods draw blocks of progress_block(50) = 5 steps).
    settings = SETTINGS.replace(total_steps=250, num_envs=2, updates_per_step=1.5)
    run = ChunkedRun(CONFIG, settings, [0, 1, 2], env=PendulumEnv(), devices=jax.devices()[:1],
                     compiler_options=FAST_COMPILE)
    need = compiled_loop_needs(*run.allocation_shapes())
    agents = run.initial_agents()
    largest = jax.jit(run.pieces.draws, static_argnums=2)(run.hparams, agents.key, 25)
    assert largest.replay_bits.shape == (3, 25, 2, CONFIG.batch_size)   # K, steps, M updates, batch
    assert need.total == tree_bytes(agents) + tree_bytes(largest)
    assert dict((text, size) for text, size in need.parts)["random draws {} for 3 agents"] == tree_bytes(largest)
    # Without a partial period every block has the progress block's 5 steps.
    whole = ChunkedRun(CONFIG, settings.replace(total_steps=200), [0, 1, 2], env=PendulumEnv(),
                       devices=jax.devices()[:1])
    assert whole.allocation_shapes()[1].replay_bits.shape == (3, 5, 2, CONFIG.batch_size)


def test_cli_refuses_chunks_without_compiled_and_sizes_that_do_not_fit(capsys, tmp_path):
    from jax_td3.cli import main

    # (--num-envs without --compiled is the Gymnasium loop's vector env: tests/test_vector_envs.py)
    assert main(["train", "--chunk-steps", "100", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--chunk-steps 100 needs --compiled" in err and len(err.splitlines()) == 1
    assert main(["train", "--compiled", "--num-envs", "3", "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--total-steps 15,000 must be a multiple of --num-envs 3" in err or \
        "--eval-every 1,000 must be a multiple of --num-envs 3" in err, err
