"""Every field of every algorithm's config reaches the PyTorch reference, or the reference would
disagree with the JAX update."""

import dataclasses

import pytest

from jax_td3.config import CONFIGS

# FastTD3 has its own update, state and fields (distributional critics, AdamW, n-step): its own walk below.
TD3_FAMILY = sorted(algo for algo in CONFIGS if algo != "fasttd3")

# A value other than every algorithm's default for each field the update reads.
NON_DEFAULT = dict(hidden=(7, 5, 6), critic_hidden=(6, 4, 5), policy_freq=3, batch_size=9, init="flax", gamma=0.9,
                   tau=0.05, policy_noise=0.3, noise_clip=0.4, actor_lr=2e-3, critic_lr=3e-3, adam_b1=0.8,
                   adam_b2=0.95, adam_eps=1e-6, critic_weight_decay=0.05, reward_scale=0.5,
                   critic_loss_scale=0.5, target_update="every_update", actor_q="min")
# Fields the TD3 family's update does not read (the compiled loop's replay, exploration and observation
# statistics do), and where each is covered instead: tests/test_compiled_td3_replay.py (the n-step batch and its
# target against a brute-force computation; scales redrawn only where an episode ended; one scale for all equal
# to the global std; the batch handed to the update, acting and evaluation normalised with the statistics of
# that moment, the statistics against normalizer_update, exact resume).
TD3_NOT_READ = {"n_step": "replay side", "std_min": "loop side", "std_max": "loop side",
                "obs_normalization": "loop side"}


@pytest.mark.parametrize("algo", TD3_FAMILY)
def test_every_config_field_reaches_the_pytorch_reference(algo):
    """Every field away from its default at once: JAX and torch_ref still agree update by update
    (float64), so the reference received each of them (one it ignored would make the two differ;
    hidden sizes and init reach it through the state copied across, which would not even load)."""
    from jax_td3.config import make_config
    from jax_td3.parity import run_parity

    values = dict(NON_DEFAULT)
    if CONFIGS[algo].critic_arch != "mlp":  # these critics take exactly two sizes
        values["hidden"], values["critic_hidden"] = values["hidden"][:2], values["critic_hidden"][:2]
    config = make_config(algo, obs_dim=3, act_dim=2, max_action=1.5, **values)
    assert all(getattr(config, field) == value for field, value in values.items())
    report = run_parity(config, dtype="float64", updates=6)
    assert report.passed, report.first_divergence


def test_the_walk_covers_every_field_the_update_reads():
    env_sized = {"obs_dim", "act_dim", "action_low", "action_high"}  # covered by make_config's box
    for algo in TD3_FAMILY:
        fields = {f.name for f in dataclasses.fields(CONFIGS[algo])} - env_sized
        assert fields == set(NON_DEFAULT) | set(TD3_NOT_READ), algo
    assert not set(NON_DEFAULT) & set(TD3_NOT_READ)


# FastTD3: every field it reads away from its default (FastTD3's defaults differ from TD3's: each value here
# differs from both), all at once. Inherited fields keep their meaning.
FASTTD3_NON_DEFAULT = dict(
    hidden=(7, 5, 6), critic_hidden=(6, 4, 5), policy_freq=3, batch_size=9, tau=0.05, policy_noise=0.3,
    noise_clip=0.4, actor_lr=2e-3, critic_lr=3e-3, adam_b1=0.8, adam_b2=0.95, adam_eps=1e-6, reward_scale=0.5,
    critic_loss_scale=0.5, num_atoms=21, v_min=-30.0, v_max=40.0, use_cdq=False, init_scale=0.05, weight_decay=0.03,
    actor_lr_end=1e-4, critic_lr_end=2e-4, lr_schedule_updates=5, max_grad_norm=0.05, obs_normalization=False,
    critic_layer_norm=True)
# Fields the update does not read, and where each is covered instead.
FASTTD3_NOT_READ = {
    # Refused away from their defaults by FastTD3Config.validate (test_fasttd3_refuses_the_td3_only_fields).
    "init": "PyTorch's initialisation always", "critic_weight_decay": "AdamW's weight_decay instead",
    "target_update": "the critic target moves every update", "actor_q": "use_cdq decides",
    # The replay builds each transition's return and discount from them (the update reads the batch's
    # reward/bootstrap/discount): tests/test_fasttd3_replay.py::test_every_stored_transition_is_the_references.
    # The walk's draws still use them (n-step windows, discount gamma^k).
    "gamma": "replay side", "n_step": "replay side",
    # The loop's per-environment exploration: tests/test_fasttd3_replay.py
    # ::test_exploration_scales_are_in_range_and_only_ended_environments_redraw, tests/test_fasttd3_train.py.
    "std_min": "loop side", "std_max": "loop side",
    # torch_ref computes in the state's dtype and refuses it; the JAX products are checked by
    # tests/test_fasttd3_core.py::test_layer_norm_and_bfloat16_products.
    "bfloat16_matmuls": "parity never uses it",
}
FASTTD3_DRAWS = dict(gamma=0.9, n_step=2)


def test_every_fasttd3_config_field_reaches_the_pytorch_reference():
    """As above for FastTD3: every field it reads walked away from its default at once, JAX and
    torch_ref.fasttd3 agree (float64) over updates that cross an actor step (3, 6), a clipped gradient,
    the cosine schedule (5 updates) and its end. The sizes, num_atoms and init_scale reach the reference
    through the state copied across (init_scale is checked on torch_ref's own initialisation by
    test_fasttd3_torch_ref.py::test_actor_output_layer_init_and_any_number_of_hidden_sizes)."""
    from jax_td3.config import make_config
    from jax_td3.parity import run_parity

    values = {**FASTTD3_NON_DEFAULT, **FASTTD3_DRAWS}
    config = make_config("fasttd3", obs_dim=3, act_dim=2, action_low=(-1.0, 0.5), action_high=(2.0, 1.0), **values)
    defaults = CONFIGS["fasttd3"]()
    assert all(getattr(config, field) == value != getattr(defaults, field) for field, value in values.items())
    report = run_parity(config, dtype="float64", updates=7)
    assert report.passed, report.table()


def test_the_fasttd3_walk_covers_every_field():
    env_sized = {"obs_dim", "act_dim", "action_low", "action_high"}  # covered by the walk's asymmetric box
    fields = {f.name for f in dataclasses.fields(CONFIGS["fasttd3"])} - env_sized
    assert fields == set(FASTTD3_NON_DEFAULT) | set(FASTTD3_NOT_READ)
    assert not set(FASTTD3_NON_DEFAULT) & set(FASTTD3_NOT_READ)
    assert set(FASTTD3_DRAWS) <= set(FASTTD3_NOT_READ)


@pytest.mark.parametrize("field", ["init", "critic_weight_decay", "target_update", "actor_q"])
def test_fasttd3_refuses_the_td3_only_fields(field):
    from jax_td3.config import make_config
    from jax_td3.errors import ConfigError

    with pytest.raises(ConfigError, match=f"does not use {field}"):
        make_config("fasttd3", **{field: NON_DEFAULT[field]}).validate()
