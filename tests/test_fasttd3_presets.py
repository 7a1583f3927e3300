"""The FastTD3 presets resolve to FastTD3's settings, per-task overrides apply for the run's env, and
explicit values win over both."""

from jax_td3.presets import PRESETS, TASK_OVERRIDES, resolve
from jax_td3.run.training import plan_run


def test_fasttd3_playground_resolves_to_fasttd3s_playground_settings(tmp_path):
    plan = plan_run({"out": str(tmp_path), "env": "playground:WalkerWalk"}, "fasttd3-playground")
    config, settings = plan.config_overrides, plan.settings
    assert plan.algo == "fasttd3" and settings.env == "playground:WalkerWalk"   # no overrides for WalkerWalk
    assert (config["hidden"], config["critic_hidden"], config["num_atoms"]) == ((512, 256, 128), (1024, 512, 256), 101)
    assert (config["v_min"], config["v_max"], config["gamma"], config["tau"]) == (-10.0, 10.0, 0.97, 0.1)
    assert (config["batch_size"], config["n_step"], config["policy_noise"]) == (32_768, 1, 0.001)
    assert (config["std_min"], config["std_max"], config["weight_decay"]) == (0.001, 0.4, 0.1)
    assert (config["actor_lr"], config["critic_lr"]) == (3e-4, 3e-4)
    assert (settings.num_envs, settings.updates_per_step) == (1_024, 2)
    assert (settings.buffer_size, settings.learning_starts) == (10_240 * 1_024, 10 * 1_024)
    assert (settings.total_steps, settings.eval_every) == (150_000 * 1_024, 5_000 * 1_024)


def test_fasttd3_playground_applies_the_tasks_overrides(tmp_path):
    plan = plan_run({"out": str(tmp_path)}, "fasttd3-playground")            # the preset's env: CheetahRun
    config = plan.config_overrides
    assert plan.settings.env == "playground:CheetahRun"
    assert (config["n_step"], config["v_min"], config["v_max"]) == (3, -500.0, 500.0)
    assert (config["std_min"], config["policy_noise"], config["std_max"]) == (0.1, 0.1, 0.4)
    plan = plan_run({"out": str(tmp_path), "env": "playground:Go1Getup"}, "fasttd3-playground")
    assert (plan.settings.updates_per_step, plan.settings.total_steps) == (8, 50_000 * 1_024)
    assert (plan.config_overrides["std_min"], plan.config_overrides["std_max"]) == (0.2, 0.8)
    assert plan_run({"out": str(tmp_path), "env": "playground:LeapCubeReorient"},
                    "fasttd3-playground").config_overrides["use_cdq"] is False


def test_explicit_values_win_over_preset_and_task_overrides(tmp_path):
    plan = plan_run({"out": str(tmp_path), "n_step": 5, "v_max": 300.0, "num_envs": 64, "batch_size": 256},
                    "fasttd3-playground")
    config = plan.config_overrides
    assert (config["n_step"], config["v_max"], config["v_min"], config["batch_size"]) == (5, 300.0, -500.0, 256)
    assert plan.settings.num_envs == 64
    # A task's overrides belong to its preset: another preset on the same env does not get them.
    assert resolve({"env": "playground:CheetahRun"}, "fasttd3-cpu")["n_step"] == 3
    assert resolve({"env": "playground:CheetahRun"}, "fasttd3-cpu")["v_max"] == PRESETS["fasttd3-cpu"]["v_max"]
    assert resolve({"env": "playground:CheetahRun"}, None)["algo"] == "td3"


def test_fasttd3_cpu_uses_every_mechanism_at_cpu_size(tmp_path):
    plan = plan_run({"out": str(tmp_path)}, "fasttd3-cpu")
    config, settings = plan.config_overrides, plan.settings
    assert (plan.algo, settings.env, settings.num_envs) == ("fasttd3", "brax:halfcheetah", 256)
    assert (config["n_step"], settings.updates_per_step, config["obs_normalization"]) == (3, 2, True)
    assert config["batch_size"] < PRESETS["fasttd3-playground"]["batch_size"]
    assert settings.learning_starts >= (config["n_step"] - 1) * settings.num_envs     # the compiled loop's rule
    assert settings.total_steps % settings.num_envs == 0 and settings.eval_every % settings.num_envs == 0


def test_every_task_override_names_a_known_setting():
    from jax_td3.presets import DEFAULTS
    from jax_td3.run.training import CONFIG_SETTINGS

    for preset, tasks in TASK_OVERRIDES.items():
        assert preset in PRESETS
        for values in tasks.values():
            assert set(values) <= set(DEFAULTS) | set(CONFIG_SETTINGS)
