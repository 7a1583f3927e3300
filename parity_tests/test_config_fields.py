"""Every field of every algorithm's config reaches the PyTorch reference, or the reference would
disagree with the JAX update."""

import dataclasses

import pytest

from jax_td3.config import CONFIGS

# FastTD3 has its own update, state and fields (distributional critics, AdamW, n-step); its parity with
# torch_ref.fasttd3 is checked by its own tests, not by this walk over TD3's fields.
TD3_FAMILY = sorted(algo for algo in CONFIGS if algo != "fasttd3")

# A value other than every algorithm's default for each field the update reads.
NON_DEFAULT = dict(hidden=(7, 5, 6), critic_hidden=(6, 4, 5), policy_freq=3, batch_size=9, init="flax", gamma=0.9,
                   tau=0.05, policy_noise=0.3, noise_clip=0.4, actor_lr=2e-3, critic_lr=3e-3, adam_b1=0.8,
                   adam_b2=0.95, adam_eps=1e-6, critic_weight_decay=0.05, reward_scale=0.5,
                   critic_loss_scale=0.5, target_update="every_update", actor_q="min")


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
        assert {f.name for f in dataclasses.fields(CONFIGS[algo])} - env_sized == set(NON_DEFAULT), algo
