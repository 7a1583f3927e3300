"""TD3 in the compiled loop with FastTD3's mechanisms: the per-environment replay with n-step returns
(``replay_layout`` per_env, ``n_step``) feeding TD3's own update, per-environment exploration scales
(``std_min``, ``std_max``) and the observation normaliser (``obs_normalization``, its statistics beside TD3's
train state); the host loop, update-level parity, ``eval`` and ``export`` refuse them.

Programs are compiled without LLVM optimisations and shared by the tests (a module fixture).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_td3 import losses
from jax_td3.config import make_config
from jax_td3.errors import ConfigError
from jax_td3.fasttd3 import device_replay
from jax_td3.fasttd3.normalizer import EPS, normalizer_init, normalizer_update
from jax_td3.loops import compiled
from jax_td3.loops.compiled import ChunkedRun, LoopSettings
from jax_td3.networks import actor_action, init_critic_params
from jax_td3.replay import replay_add, replay_gather, replay_init
from jax_td3.update import Batch
from tests.test_compiled_fasttd3 import ShortPendulum, check_scales_redrawn_where_an_episode_ended, finish, host

FAST_COMPILE = {"xla_backend_optimization_level": 0}
GAMMA = 0.9
# One hand-made stream of 2 environments over 7 steps (rows: steps; columns: environments). Environment 0:
# truncated at step 2, terminated at step 5, then an episode still running; environment 1: terminated at
# step 1, truncated at step 6.
REWARD = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [5.0, 50.0], [6.0, 60.0], [7.0, 70.0]])
TERMINATED = np.zeros((7, 2), bool)
TRUNCATED = np.zeros((7, 2), bool)
TERMINATED[5, 0] = TRUNCATED[2, 0] = TERMINATED[1, 1] = TRUNCATED[6, 1] = True


def stream(obs_dim=3, act_dim=1):
    rng = np.random.default_rng(3)
    steps, n = REWARD.shape
    return (rng.normal(size=(steps, n, obs_dim)), rng.normal(size=(steps, n, act_dim)), REWARD,
            rng.normal(size=(steps, n, obs_dim)), TERMINATED, TRUNCATED)


def brute_force(t, e, n_step, bootstrap_truncation):
    """(R, k, bootstrap) of the window from step t of environment e, step by step."""
    total, k = 0.0, 0
    for i in range(n_step):
        total += GAMMA ** i * REWARD[t + i, e]
        k += 1
        if TERMINATED[t + i, e] or TRUNCATED[t + i, e]:
            break
    last = t + k - 1
    ends = TERMINATED[last, e] or (TRUNCATED[last, e] and not bootstrap_truncation)
    return total, k, 0.0 if ends else 1.0


def written(n_step, capacity=8):
    replay = device_replay.nstep_replay_init(capacity, 2, 3, 1, jnp.float64)
    for row in zip(*stream()):
        replay = device_replay.nstep_replay_add(replay, *row, n_step)
    return replay


@pytest.mark.parametrize("bootstrap_truncation", [True, False])
def test_td3_batch_holds_the_n_step_return_and_its_target_is_the_brute_force_one(x64, bootstrap_truncation):
    n_step = 3
    replay = written(n_step)
    # Environment 0's episode from step 3 ends at 5: its starts 3..5 are finished, 6 is not; environment 1's
    # episode ends at 6 (a truncation), so all its starts are finished.
    np.testing.assert_array_equal(device_replay.finished_starts(replay), [6, 7])
    starts = [(t, 0) for t in range(6)] + [(t, 1) for t in range(7)]
    slots = jnp.asarray([t for t, _ in starts], jnp.int32)
    envs = jnp.asarray([e for _, e in starts], jnp.int32)
    batch = device_replay.nstep_td3_gather(replay, slots, envs, n_step, GAMMA, bootstrap_truncation)
    fasttd3 = device_replay.nstep_gather(replay, slots, envs, n_step, GAMMA, bootstrap_truncation)
    obs, action, _, next_obs, _, _ = stream()
    config = make_config("td3", hidden=(8, 8), gamma=GAMMA, reward_scale=0.5)
    critics = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64),
                                     init_critic_params(config, jax.random.key(1)))
    next_action = jnp.asarray(np.linspace(-0.9, 0.9, len(starts))[:, None])
    target = np.asarray(losses.td_target(config, critics, batch, next_action))[:, 0]
    q_next = np.min(np.asarray(losses.critic_values(config, critics, batch.next_obs, next_action)), axis=0)[:, 0]
    kinds = set()
    for b, (t, e) in enumerate(starts):
        total, k, bootstrap = brute_force(t, e, n_step, bootstrap_truncation)
        kinds.add((k, bootstrap))
        np.testing.assert_array_equal(batch.obs[b], obs[t, e])
        np.testing.assert_array_equal(batch.action[b], action[t, e])
        np.testing.assert_array_equal(batch.next_obs[b], next_obs[t + k - 1, e])
        np.testing.assert_allclose(batch.reward[b, 0], total, rtol=1e-15)
        np.testing.assert_allclose(batch.not_done[b, 0], bootstrap * GAMMA ** (k - 1), rtol=1e-15)
        # TD3's target: r * reward_scale + not_done * gamma * min Q' = R/2 + bootstrap * gamma^k * min Q'.
        np.testing.assert_allclose(target[b], 0.5 * total + bootstrap * GAMMA ** k * q_next[b], rtol=1e-14)
        # The same window as fasttd3's batch: not_done * gamma is its bootstrap * discount.
        np.testing.assert_array_equal(batch.reward[b, 0], fasttd3.reward[b])
        np.testing.assert_allclose(batch.not_done[b, 0] * GAMMA, fasttd3.bootstrap[b] * fasttd3.discount[b],
                                   rtol=1e-15)
    # Full windows, windows cut by a termination and by a truncation (bootstrapping or not), single steps.
    assert {(3, 1.0), (1, 0.0), (2, 0.0)} <= kinds
    assert ((1, 1.0) in kinds or (2, 1.0) in kinds) == bootstrap_truncation


@pytest.mark.parametrize("bootstrap_truncation", [True, False])
def test_n_step_1_per_environment_gives_the_flat_replays_transition_and_target(x64, bootstrap_truncation):
    obs, action, reward, next_obs, terminated, truncated = stream()
    steps, n = reward.shape
    flat = replay_init(steps * n, 3, 1, jnp.float64)
    for t in range(steps):   # as the compiled loop writes a vector step (loops.compiled.env_step)
        ends = terminated[t] | (truncated[t] & (not bootstrap_truncation))
        flat = replay_add(flat, Batch(obs[t], action[t], next_obs[t], reward[t][:, None], (1.0 - ends)[:, None]))
    replay = written(1)
    np.testing.assert_array_equal(device_replay.finished_starts(replay), [7, 7])
    slots, envs = np.divmod(np.arange(steps * n), n)   # flat slot t * N + e is environment e's step t
    per_env = device_replay.nstep_td3_gather(replay, jnp.asarray(slots, jnp.int32), jnp.asarray(envs, jnp.int32),
                                             1, GAMMA, bootstrap_truncation)
    flat_batch = replay_gather(flat, jnp.arange(steps * n))
    for name in Batch._fields:
        np.testing.assert_array_equal(getattr(per_env, name), getattr(flat_batch, name), err_msg=name)
    assert 0 < float(jnp.sum(per_env.not_done)) < steps * n


CONFIG = make_config("td3", hidden=(8, 8), batch_size=16, max_action=2.0, n_step=3, std_min=0.05, std_max=0.5,
                     obs_normalization=True)
# 4 environments, 60 vector steps; 30 steps per environment's ring, so the rings wrap; 1.5 updates per step.
SETTINGS = LoopSettings(total_steps=240, learning_starts=40, eval_every=80, eval_episodes=2, buffer_size=120,
                        num_envs=4, updates_per_step=1.5)


@pytest.fixture(scope="module")
def run():
    with jax.enable_x64(True):
        return ChunkedRun(CONFIG, SETTINGS, [0, 1], env=ShortPendulum(), dtype=jnp.float64, chunk_steps=40,
                          devices=jax.devices()[:1], compiler_options=FAST_COMPILE)


def test_td3_with_n_step_returns_exploration_scales_and_normaliser_runs_and_resumes_exactly(run):
    with jax.enable_x64(True):
        live, first = run.start()
        start = host(live)
        live, done = run.advance(live, 0)    # one chunk: 10 vector steps, no ring has wrapped yet
        after_chunk = host(live)
        saved = run.host_state(live)
        agents, curve = finish(run, live, done)
        resumed, resumed_curve = finish(run, run.agents_from_host(saved), done)
        assert isinstance(run.agent_shapes().replay, device_replay.NStepReplayState)
    for x, y in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(agents), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(resumed_curve, curve)
    assert np.all(np.isfinite(first.returns)) and np.all(np.isfinite(curve)) and curve.shape == (3, 2, 2)
    assert not np.array_equal(curve[:, 0], curve[:, 1])
    assert agents.replay.obs.shape == (2, 30, 4, 3) and np.all(agents.replay.size == 30)
    assert SETTINGS.updates == 75 and np.all(agents.train_state.step == 75) and np.all(agents.updates == 75)
    # Each environment's scale: in [std_min, std_max), redrawn on episode ends (every 9 steps at most).
    for scales in (start.explore_scale, agents.explore_scale):
        assert scales.shape == (2, 4) and np.all((scales >= 0.05) & (scales < 0.5))
    assert np.all(start.explore_scale != agents.explore_scale)
    # The statistics saw each vector step's 4 observations before acting (the replay's raw obs rows), are
    # saved with the agents (``host_state``) and sit beside TD3's train state, not in it.
    assert any(name.startswith("obs_normalizer/") for name in saved)
    assert not hasattr(agents.train_state, "obs_normalizer") and start.obs_normalizer.count.tolist() == [0, 0]
    for k in range(2):
        with jax.enable_x64(True):
            stats = normalizer_init(3, jnp.float64)
            for t in range(10):
                stats = normalizer_update(stats, after_chunk.replay.obs[k, t])
        got = jax.tree_util.tree_map(lambda x: x[k], after_chunk.obs_normalizer)
        assert int(got.count) == 40 == int(stats.count)
        np.testing.assert_allclose(got.mean, stats.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got.var, stats.var, rtol=1e-12, atol=1e-15)
        assert np.all(np.abs(np.asarray(got.mean)) > 1e-3) and not np.allclose(got.var, 1.0)
    assert np.all(agents.obs_normalizer.count == 240)    # 4 observations per vector step, 60 steps


def test_td3s_exploration_scales_are_redrawn_where_an_episode_ended_and_only_there():
    check_scales_redrawn_where_an_episode_ended(CONFIG)


def test_one_exploration_scale_for_all_is_the_global_std_bit_for_bit():
    """std_min = std_max = expl_noise: the per-environment path (scales drawn and redrawn) acts as the
    global std does, so the whole run is the same."""
    settings = LoopSettings(total_steps=60, learning_starts=20, eval_every=60, eval_episodes=1, buffer_size=60,
                            num_envs=2, expl_noise=0.3)
    global_std = make_config("td3", hidden=(8, 8), batch_size=8, max_action=2.0)
    results = []
    for config in (global_std, global_std.replace(std_min=0.3, std_max=0.3)):
        run = ChunkedRun(config, settings, [5], env=ShortPendulum(), devices=jax.devices()[:1],
                         compiler_options=FAST_COMPILE)
        results.append(host(run.run().agents))
    plain, scaled = results
    np.testing.assert_array_equal(scaled.explore_scale, np.full((1, 2), np.float32(0.3)))
    assert plain.explore_scale is None
    for x, y in zip(jax.tree_util.tree_leaves(plain._replace(explore_scale=None)),
                    jax.tree_util.tree_leaves(scaled._replace(explore_scale=None)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.any(plain.replay.reward != 0) and int(plain.train_state.step[0]) == 20


@pytest.mark.parametrize("layout", ["flat", "per_env"])
def test_td3s_update_gets_the_sampled_batch_normalised_with_the_statistics_of_that_moment(x64, monkeypatch, layout):
    """``learn`` hands TD3's update the raw batch the replay gives for the step's draws, its obs and next_obs
    normalised with the agent's statistics as they are: (x - mean) / (sqrt(var) + EPS), by hand in NumPy."""
    config = make_config("td3", hidden=(8, 8), batch_size=6, max_action=2.0, obs_normalization=True)
    settings = LoopSettings(total_steps=40, learning_starts=8, eval_every=40, eval_episodes=1, buffer_size=40,
                            num_envs=2, replay_layout=layout)
    agent = compiled.init_agent(config, settings, ShortPendulum(), 0, jnp.float64)
    obs, action, reward, next_obs, terminated, truncated = stream()
    rng = np.random.default_rng(7)
    stats = agent.obs_normalizer
    for t in range(7):
        if layout == "per_env":
            replay = device_replay.nstep_replay_add(agent.replay, obs[t], action[t], reward[t], next_obs[t],
                                                    terminated[t], truncated[t], 1)
        else:
            replay = replay_add(agent.replay, Batch(obs[t], action[t], next_obs[t], reward[t][:, None],
                                                    (1.0 - terminated[t])[:, None]))
        stats = normalizer_update(stats, rng.normal(3.0, 2.0, size=(2, 3)))
        agent = agent._replace(replay=replay, obs_normalizer=stats)
    bits = jax.random.bits(jax.random.key(4), (1, 6), jnp.uint32)
    draws = compiled.StepDraws(None, None, None, bits, jnp.zeros((1, 6, 1)))
    handed = []

    def update(config, state, batch, noise):
        handed.append(batch)
        return state, {"critic_loss": jnp.zeros(()), "actor_loss": jnp.zeros(()), "actor_updated": jnp.bool_(False)}

    monkeypatch.setattr(compiled, "update", update)
    after = compiled.learn(config, settings, agent, jnp.int32(5), draws)
    if layout == "per_env":
        raw = device_replay.nstep_td3_sample(agent.replay, bits[0], 1, config.gamma, True)
    else:
        raw = replay_gather(agent.replay, compiled.replay_indices_from_bits(agent.replay, bits[0]))
    (batch,) = handed
    mean, std = np.asarray(stats.mean), np.sqrt(np.asarray(stats.var)) + EPS
    assert np.all(np.abs(mean - 3.0) < 1.5) and np.all(np.abs(std - 2.0) < 1.5)   # far from mean 0, std 1
    for name in ("obs", "next_obs"):
        np.testing.assert_allclose(getattr(batch, name), (np.asarray(getattr(raw, name)) - mean) / std,
                                   rtol=1e-13, atol=1e-14, err_msg=name)
        assert not np.allclose(getattr(batch, name), getattr(raw, name))
    for name in ("action", "reward", "not_done"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(raw, name), err_msg=name)
    assert int(after.updates) == 1 and after.obs_normalizer is stats   # learning reads the statistics only


def test_td3_acts_and_evaluates_on_observations_normalised_with_the_statistics(x64, monkeypatch):
    """One vector step after the warm-up: the statistics see the 2 current observations first, then each
    environment acts on its observation normalised with them; evaluation normalises with the statistics as
    they are. Both against a hand computation in NumPy (the actor's forward pass is ``networks.actor_action``)."""
    config = make_config("td3", hidden=(8, 8), batch_size=6, max_action=2.0, obs_normalization=True)
    settings = LoopSettings(total_steps=40, learning_starts=38, eval_every=40, eval_episodes=3, buffer_size=40,
                            num_envs=2, expl_noise=0.3)
    env = ShortPendulum()
    monkeypatch.setattr(compiled, "learn", lambda config, settings, agent, step, draws: agent)   # acting only
    agent = compiled.init_agent(config, settings, env, 2, jnp.float64)
    seen = np.random.default_rng(5).normal([1.0, -0.5, 2.0], [0.3, 0.2, 1.5], size=(4, 3))
    agent = agent._replace(obs_normalizer=normalizer_update(agent.obs_normalizer, seen))
    draws = jax.tree_util.tree_map(lambda x: x[0], compiled.draw_block(config, settings, env, jax.random.key(9), 1,
                                                                       jnp.float64))
    after = compiled.env_step(config, settings, env, agent, jnp.int32(19), draws)   # transitions 38, 39: no warm-up

    def by_hand(stats, obs):
        return (np.asarray(obs) - np.asarray(stats.mean)) / (np.sqrt(np.asarray(stats.var)) + EPS)

    rows = np.concatenate([seen, np.asarray(agent.obs)])
    assert int(after.obs_normalizer.count) == 6
    np.testing.assert_allclose(after.obs_normalizer.mean, rows.mean(axis=0), rtol=1e-13)
    params = agent.train_state.actor_params
    mu = np.asarray(actor_action(config, params, jnp.asarray(by_hand(after.obs_normalizer, agent.obs))))
    expected = np.clip(mu + np.asarray(draws.action_noise) * 0.3 * 2.0, -2.0, 2.0)
    np.testing.assert_allclose(after.replay.action[:2], expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(after.replay.obs[:2], agent.obs)                  # the replay keeps raw ones
    raw_mu = np.asarray(actor_action(config, params, agent.obs))
    assert np.max(np.abs(mu - raw_mu)) > 1e-3

    key = jax.random.key(11)
    returns = compiled.evaluate(config, settings, env, params, key, jnp.float64, None, after.obs_normalizer)
    env_states, obs = jax.vmap(lambda k: env.reset(k, jnp.float64))(jax.random.split(key, 3))
    total, running = np.zeros(3), np.ones(3, bool)
    for _ in range(env.spec.max_episode_steps):
        actions = actor_action(config, params, jnp.asarray(by_hand(after.obs_normalizer, obs)))
        env_states, obs, reward, terminated, truncated = jax.vmap(env.step)(env_states, actions)
        total += np.where(running, np.asarray(reward), 0.0)
        running &= ~np.asarray(terminated | truncated)
    np.testing.assert_allclose(returns, total, rtol=1e-12)
    unnormalised = compiled.evaluate(config.replace(obs_normalization=False), settings, env, params, key, jnp.float64)
    assert not np.allclose(unnormalised, returns)


def test_td3_without_the_normaliser_keeps_no_statistics():
    settings = LoopSettings(total_steps=40, learning_starts=8, eval_every=40, eval_episodes=1, buffer_size=40,
                            num_envs=2)
    agent = jax.eval_shape(lambda: compiled.init_agent(make_config("td3", max_action=2.0), settings,
                                                       ShortPendulum(), 0, jnp.float32))
    assert agent.obs_normalizer is None and make_config("td3").obs_normalization is False
    assert make_config("fasttd3").obs_normalization is True


@pytest.mark.parametrize("changes, settings_changes, message", [
    ({"n_step": 2}, {"replay_layout": "flat"}, "`n_step` 2 needs it; use per_env"),
    ({"n_step": 12}, {}, "td3 with `n_step` 12 needs `learning_starts` >= 44"),
    ({"n_step": 3}, {"buffer_size": 8}, "`n_step` 3 needs at least 3"),
])
def test_sizes_and_layouts_the_per_environment_replay_cannot_serve_are_refused(changes, settings_changes, message):
    with pytest.raises(ConfigError, match=message):
        ChunkedRun(make_config("td3", max_action=2.0, **changes), SETTINGS.replace(**settings_changes), [0],
                   env=ShortPendulum())


def test_fasttd3_refuses_the_flat_layout():
    with pytest.raises(ConfigError, match="fasttd3 keeps one ring per environment; use per_env"):
        ChunkedRun(make_config("fasttd3", max_action=2.0), SETTINGS.replace(replay_layout="flat"), [0],
                   env=ShortPendulum())


@pytest.mark.parametrize("flags, message", [
    (["--n-step", "3"], "td3 runs --n-step > 1 in the compiled loop only (--compiled)"),
    (["--std-min", "0.1", "--std-max", "0.2"], "td3 runs per-environment exploration scales (--std-min, --std-max) "
                                               "in the compiled loop only (--compiled)"),
    (["--replay-layout", "per_env"], "--replay-layout per_env is the compiled loop's (--compiled)"),
    (["--obs-normalization"], "td3 runs --obs-normalization in the compiled loop only (--compiled)"),
    (["--std-min", "0.1"], "std_min and std_max go together"),
    (["--replay-layout", "ring"], "invalid choice: 'ring'"),
])
def test_the_host_loop_refuses_them_in_one_line(flags, message, capsys, tmp_path):
    from jax_td3.cli import main

    try:
        code = main(["train", "--algo", "td3", "--total-steps", "10", "--out", str(tmp_path / "run"), *flags])
    except SystemExit as exit:   # argparse's own refusals
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_update_level_parity_refuses_them_for_td3(capsys):
    from jax_td3.cli import main

    assert main(["parity", "--algo", "td3", "--n-step", "2", "--std-min", "0.1", "--std-max", "0.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("td3: --n-step, --std-min, --std-max belong to the compiled training loop (jax-td3 train "
                        "--compiled); an update-level comparison has no replay, exploration or observation "
                        "statistics"), err
    assert main(["parity", "--algo", "ddpg", "--obs-normalization"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ddpg: --obs-normalization belongs to the compiled training loop" in err and len(err.splitlines()) == 1


def test_export_and_eval_of_a_compiled_td3_run_apply_its_observation_statistics(tmp_path, capsys):
    """A compiled td3 run with the normaliser: its checkpoint holds the statistics (the saved agents), the
    export writes them as fasttd3's "obs_normalizer" state_dict beside torch_ref's networks and its actor acts
    as the compiled loop's (networks.actor_action on normalize), and ``eval`` of the checkpoint and of the
    export apply them (the same returns; other statistics in the export give other returns)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("gymnasium")
    from jax_td3.cli import main
    from jax_td3.export import obs_normalizer_from_checkpoint, train_state_from_checkpoint
    from jax_td3.fasttd3.normalizer import normalize
    from torch_ref.fasttd3 import EmpiricalNormalization
    from torch_ref.networks import Actor

    out, agent, other = tmp_path / "run", tmp_path / "agent.pt", tmp_path / "other.pt"
    assert main(["train", "--compiled", "--algo", "td3", "--obs-normalization", "--hidden", "8,8", "--batch-size", "16",
                 "--total-steps", "300", "--learning-starts", "100", "--eval-every", "300", "--eval-episodes", "1",
                 "--seed", "3", "--no-progress", "--out", str(out)]) == 0
    config, dtype, state, checkpoint = train_state_from_checkpoint(out)
    stats = obs_normalizer_from_checkpoint(config, checkpoint)
    assert config.obs_normalization and int(stats.count) == 300 and not np.allclose(stats.var, 1.0)
    assert main(["export", str(out), "--to", "torch", str(agent)]) == 0
    blob = torch.load(agent, weights_only=True)
    c = blob["config"]
    assert c["algo"] == "td3" and c["obs_normalization"] is True and "module" not in c
    actor = Actor(c["obs_dim"], c["act_dim"], c["action_low"], c["action_high"], c["hidden"]).to(torch.float32)
    actor.load_state_dict(blob["actor"])
    normalizer = EmpiricalNormalization(c["obs_dim"])
    normalizer.load_state_dict(blob["obs_normalizer"])
    obs = np.random.default_rng(0).uniform(-8, 8, (5, 3)).astype(np.float32)
    with torch.no_grad():
        exported = actor(normalizer(torch.as_tensor(obs), update=False)).numpy()
    compiled_loop = np.asarray(actor_action(config, state.actor_params, normalize(stats, obs)))
    np.testing.assert_allclose(exported, compiled_loop, rtol=1e-5, atol=1e-6)   # float32: torch's and XLA's roundings
    assert np.max(np.abs(compiled_loop - np.asarray(actor_action(config, state.actor_params, obs)))) > 1e-3

    capsys.readouterr()
    returns = []
    blob["obs_normalizer"]["_mean"] = blob["obs_normalizer"]["_mean"] + 1.0
    torch.save(blob, other)
    for source in (out, agent, other):
        assert main(["eval", str(source), "--episodes", "2"]) == 0
        returns.append(capsys.readouterr().out.split("return ")[1].split(" over")[0])
    assert returns[0] == returns[1] != returns[2], returns
