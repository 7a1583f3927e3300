"""torch_ref.fasttd3 against numbers worked out by hand (no JAX in the arithmetic): the C51 projection,
the observation normaliser, AdamW with optax's clipping rule, the cosine learning rate, clipped double
Q over distributions, the delayed actor and Polyak on every update. float64 throughout."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from torch_ref.fasttd3 import Batch, DistributionalQNetwork, EmpiricalNormalization, FastTD3, clip_grad_norm

D = torch.float64
OBS, ACT, B = 3, 2, 6
LOW, HIGH = (-1.0, -2.0), (1.0, 0.5)


def make_agent(**overrides: object) -> FastTD3:
    torch.manual_seed(0)
    kwargs: dict = dict(hidden=(8, 6), critic_hidden=(10, 7, 5), num_atoms=11, v_min=-5.0, v_max=5.0,
                        policy_noise=0.3, noise_clip=0.4, policy_freq=2, actor_lr=1e-2, critic_lr=2e-2,
                        weight_decay=0.1, init_scale=0.5, dtype=D)
    kwargs.update(overrides)
    agent = FastTD3(OBS, ACT, LOW, HIGH, **kwargs)
    gen = torch.Generator().manual_seed(1)
    agent.normalizer_update(torch.randn(20, OBS, generator=gen, dtype=D) * 3 + 1)
    return agent


def make_batch(seed: int = 2) -> tuple[Batch, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=D)

    action = torch.rand(B, ACT, generator=gen, dtype=D) * (torch.tensor(HIGH, dtype=D) - torch.tensor(LOW, dtype=D))
    batch = Batch(obs=randn(B, OBS), action=action + torch.tensor(LOW, dtype=D), next_obs=randn(B, OBS),
                  reward=randn(B) * 2, bootstrap=torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=D),
                  discount=torch.full((B,), 0.99, dtype=D) ** torch.tensor([1, 2, 3, 1, 1, 3], dtype=D))
    return batch, randn(B, ACT)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


# -- projection ---------------------------------------------------------------------------------------

def qnetwork() -> DistributionalQNetwork:
    torch.manual_seed(3)
    return DistributionalQNetwork(OBS, ACT, num_atoms=5, v_min=-2.0, v_max=2.0, hidden=(6,), dtype=D)


def project(reward: list[float], bootstrap: list[float], discount: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(projection, the next-state distribution it moved) for one sample per entry."""
    net = qnetwork()
    n = len(reward)
    gen = torch.Generator().manual_seed(4)
    obs, act = torch.randn(n, OBS, generator=gen, dtype=D), torch.randn(n, ACT, generator=gen, dtype=D)
    support = torch.linspace(-2.0, 2.0, 5, dtype=D)
    proj = net.projection(obs, act, torch.tensor(reward, dtype=D), torch.tensor(bootstrap, dtype=D),
                          torch.tensor(discount, dtype=D), support)
    return proj, F.softmax(net(obs, act), dim=1).detach()


def test_projection_conserves_probability_mass():
    gen = torch.Generator().manual_seed(5)
    reward = (torch.randn(50, generator=gen, dtype=D) * 3).tolist()  # some land outside [-2, 2]
    bootstrap = (torch.rand(50, generator=gen, dtype=D) > 0.3).to(D).tolist()
    proj, _ = project(reward, bootstrap, [0.97] * 50)
    assert proj.dtype == D
    assert (proj >= 0).all()
    torch.testing.assert_close(proj.sum(1), torch.ones(50, dtype=D), rtol=0, atol=1e-12)


def test_targets_on_atoms_keep_all_their_mass_there():
    # Tz = z (reward 0, bootstrap 1, discount 1): every atom, the first and last included, maps onto
    # itself, so the projection is the distribution itself.
    proj, p = project([0.0, 0.0], [1.0, 1.0], [1.0, 1.0])
    torch.testing.assert_close(proj, p, rtol=0, atol=1e-15)
    # Tz = 0 for every atom (no bootstrap): all mass on atom 2 (z = 0); Tz = -2: on atom 0; Tz = 1: atom 3.
    proj, _ = project([0.0, -2.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    expected = torch.zeros(3, 5, dtype=D)
    expected[0, 2] = expected[1, 0] = expected[2, 3] = 1.0
    torch.testing.assert_close(proj, expected, rtol=0, atol=1e-15)


def test_targets_between_atoms_split_linearly():
    # Tz = 0.25 lies a quarter of the way from atom 2 (z = 0) to atom 3 (z = 1).
    proj, _ = project([0.25], [0.0], [1.0])
    torch.testing.assert_close(proj[0], torch.tensor([0, 0, 0.75, 0.25, 0], dtype=D), rtol=0, atol=1e-15)


def test_targets_outside_the_support_are_clamped_to_its_ends():
    proj, _ = project([100.0, -100.0, 3.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    # The third: Tz = 3 + z >= 1, so atoms z = -2, -1 move to 1 and 2, and z >= 0 clamp to 2.
    _, p3 = project([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    expected = torch.zeros(3, 5, dtype=D)
    expected[0, 4] = expected[1, 0] = 1.0
    expected[2, 3] = p3[2, 0]
    expected[2, 4] = p3[2, 1:].sum()
    torch.testing.assert_close(proj, expected, rtol=0, atol=1e-15)


# -- normaliser ---------------------------------------------------------------------------------------

def fasttd3_statistics(rows: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """FastTD3's merge, feature by feature in Python floats: the mean moves by (batch_mean - mean) *
    n / new_count; the cross term uses the batch mean's distance to the NEW mean."""
    means, variances = [], []
    for j in range(rows[0].shape[1]):
        mean, var, count = 0.0, 1.0, 0
        for x in rows:
            column = x[:, j].tolist()
            n = len(column)
            batch_mean = sum(column) / n
            batch_var = sum((c - batch_mean) ** 2 for c in column) / n
            new_count = count + n
            mean = mean + (batch_mean - mean) * (n / new_count)
            delta2 = batch_mean - mean
            var = (var * count + batch_var * n + delta2 ** 2 * (count * n / new_count)) / new_count
            count = new_count
        means.append(mean)
        variances.append(var)
    return means, variances


def test_normaliser_statistics():
    """The mean is the plain mean of every row seen; the variance is FastTD3's merge, which is the plain
    population variance after the first batch and below it afterwards (its cross term is measured from
    the updated mean, so shrunk by count / new_count): what FastTD3 computes, kept as it is."""
    norm = EmpiricalNormalization(4, dtype=D)
    gen = torch.Generator().manual_seed(6)
    rows = [torch.randn(n, 4, generator=gen, dtype=D) * torch.tensor([1.0, 5.0, 0.1, 2.0], dtype=D) + 3
            for n in (7, 1, 2, 16, 5)]
    norm(rows[0])  # update=True by default (the module is in training mode)
    torch.testing.assert_close(norm.mean, rows[0].mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.var, rows[0].var(0, unbiased=False), rtol=0, atol=1e-12)
    for x in rows[1:]:
        norm(x)
    seen = torch.cat(rows)
    assert int(norm.count) == len(seen)
    assert norm.mean.dtype == norm.var.dtype == norm.std.dtype == D
    torch.testing.assert_close(norm.mean, seen.mean(0), rtol=0, atol=1e-12)
    means, variances = fasttd3_statistics(rows)
    torch.testing.assert_close(norm.mean, torch.tensor(means, dtype=D), rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.var, torch.tensor(variances, dtype=D), rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.std, torch.tensor(variances, dtype=D).sqrt(), rtol=0, atol=1e-12)
    assert (norm.var < seen.var(0, unbiased=False)).all()

    x = torch.randn(3, 4, generator=gen, dtype=D)
    before = (norm.mean, norm.var, int(norm.count))
    out = norm(x, update=False)
    expected = (x - torch.tensor(means, dtype=D)) / (torch.tensor(variances, dtype=D).sqrt() + 1e-2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert torch.equal(norm.mean, before[0]) and torch.equal(norm.var, before[1]) and int(norm.count) == before[2]


def test_the_update_reads_the_normaliser_and_leaves_it_alone():
    agent = make_agent()
    batch, noise = make_batch()
    mean, var, count = agent.obs_normalizer.mean, agent.obs_normalizer.var, int(agent.obs_normalizer.count)
    qnet = copy.deepcopy(agent.qnet)
    info = agent.train(batch, noise, record=True)
    assert torch.equal(agent.obs_normalizer.mean, mean) and torch.equal(agent.obs_normalizer.var, var)
    assert int(agent.obs_normalizer.count) == count == 20
    obs = (batch.obs - mean) / (var.sqrt() + 1e-2)
    logits = torch.stack(qnet(obs, batch.action)).detach()
    torch.testing.assert_close(info["critic_logits"], logits, rtol=0, atol=1e-14)


# -- one update: target, loss, optimiser ------------------------------------------------------------

def test_target_action_and_critic_loss():
    agent = make_agent()
    batch, noise = make_batch()
    actor = copy.deepcopy(agent.actor)
    info = agent.train(batch, noise, record=True)
    next_obs = agent.normalize_obs(batch.next_obs)
    scale = (torch.tensor(HIGH, dtype=D) - torch.tensor(LOW, dtype=D)) / 2
    eps = torch.clamp(noise * 0.3 * scale, -0.4 * scale, 0.4 * scale)
    expected = torch.clamp(actor(next_obs).detach() + eps, torch.tensor(LOW, dtype=D), torch.tensor(HIGH, dtype=D))
    torch.testing.assert_close(info["target_action"], expected, rtol=0, atol=1e-14)

    log_p = F.log_softmax(info["critic_logits"], dim=2)
    loss = -(info["target_dist"] * log_p).sum(2).mean(1).sum()
    torch.testing.assert_close(info["critic_loss"], loss, rtol=0, atol=1e-13)
    for key in ("target_action", "projected", "target_dist", "critic_logits", "critic_loss", "critic_grad_norm",
                "q_mean", "actor_loss"):
        assert info[key].dtype == D, key


@pytest.mark.parametrize("max_grad_norm, adam_eps", [(0.0, 1e-8), (0.01, 0.5)])
def test_first_adamw_step_by_hand(max_grad_norm, adam_eps):
    """First step: m_hat = g, v_hat = g^2, so p' = p - lr * (g / (|g| + eps) + wd * p), g clipped first."""
    agent = make_agent(policy_freq=1, max_grad_norm=max_grad_norm, adam_eps=adam_eps)
    batch, noise = make_batch()
    critic, actor = snapshot(agent.qnet), snapshot(agent.actor)
    info = agent.train(batch, noise, record=True)
    for before, grads, norm, module, lr in ((critic, info["critic_grads"], info["critic_grad_norm"], agent.qnet, 2e-2),
                                            (actor, info["actor_grads"], info["actor_grad_norm"], agent.actor, 1e-2)):
        torch.testing.assert_close(norm, torch.sqrt(sum((g ** 2).sum() for g in grads.values())), rtol=1e-14, atol=0)
        scale = max_grad_norm / norm if 0 < max_grad_norm < norm else 1.0
        assert max_grad_norm == 0 or scale < 1  # the clipped case clips
        for name, p in module.named_parameters():
            g = grads[name] * scale
            expected = before[name] - lr * (g / (g.abs() + adam_eps) + 0.1 * before[name])
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-14, msg=name)


def test_clip_rule_is_optax_s():
    p, q = torch.nn.Parameter(torch.zeros(2, dtype=D)), torch.nn.Parameter(torch.zeros((), dtype=D))
    p.grad, q.grad = torch.tensor([3.0, 0.0], dtype=D), torch.tensor(4.0, dtype=D)
    assert clip_grad_norm([p, q], 10.0).item() == 5.0          # below: unchanged
    assert p.grad.tolist() == [3.0, 0.0] and q.grad.item() == 4.0
    assert clip_grad_norm([p, q], 0.0).item() == 5.0           # 0: no clipping
    assert q.grad.item() == 4.0
    assert clip_grad_norm([p, q], 1.0).item() == 5.0           # above: g / norm * max, no 1e-6
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.0], dtype=D), rtol=0, atol=1e-16)
    torch.testing.assert_close(q.grad, torch.tensor(0.8, dtype=D), rtol=0, atol=1e-16)


def test_cosine_learning_rate_endpoints_and_the_rates_used():
    agent = make_agent(lr_schedule_updates=4, critic_lr_end=2e-3, actor_lr_end=1e-3)

    def close(got: tuple[float, ...], want: tuple[float, ...]) -> bool:
        # lr_end + (lr - lr_end) * 1 is lr only up to roundoff
        return len(got) == len(want) and all(math.isclose(g, w, rel_tol=1e-15) for g, w in zip(got, want))

    assert close(agent.learning_rates(0), (2e-2, 1e-2))
    assert agent.learning_rates(4) == agent.learning_rates(9) == (2e-3, 1e-3)
    assert close(agent.learning_rates(2), ((2e-2 + 2e-3) / 2, (1e-2 + 1e-3) / 2))
    assert close(agent.learning_rates(1), (2e-3 + 1.8e-2 * (1 + math.sqrt(0.5)) / 2,
                                           1e-3 + 9e-3 * (1 + math.sqrt(0.5)) / 2))
    batch, noise = make_batch()
    for step in range(6):
        info = agent.train(batch, noise)
        rates = agent.learning_rates(step)  # updates done before this one
        assert (info["critic_lr"], info["actor_lr"]) == rates
        assert (agent.q_optimizer.param_groups[0]["lr"], agent.actor_optimizer.param_groups[0]["lr"]) == rates
    assert make_agent(critic_lr_end=2e-3).learning_rates(3) == (2e-2, 1e-2)  # no schedule length: constant


# -- clipped double Q, delay, Polyak -------------------------------------------------------------------

def test_cdq_takes_the_projection_with_the_lower_expected_value():
    agent = make_agent()
    batch, noise = make_batch()
    info = agent.train(batch, noise, record=True)
    support = agent.qnet.q_support
    values = (info["projected"] * support).sum(2)
    choice = values[0] < values[1]
    assert choice.dtype == torch.bool and 0 < int(choice.sum()) < B  # both kinds occur in this batch
    assert torch.equal(info["cdq_choice"], choice)
    chosen = torch.where(choice[:, None], info["projected"][0], info["projected"][1])
    assert torch.equal(info["target_dist"][0], chosen) and torch.equal(info["target_dist"][1], chosen)

    tied = make_agent()
    tied.qnet_target.qnet2.load_state_dict(tied.qnet_target.qnet1.state_dict())
    info = tied.train(batch, noise, record=True)
    assert not info["cdq_choice"].any()  # equal values: critic 2's projection (strict <)

    own = make_agent(use_cdq=False)
    info = own.train(batch, noise, record=True)
    assert torch.equal(info["target_dist"], info["projected"])


def test_actor_ascends_the_min_or_the_mean_of_the_new_critics():
    for use_cdq in (True, False):
        agent = make_agent(policy_freq=1, use_cdq=use_cdq)
        batch, noise = make_batch()
        actor = copy.deepcopy(agent.actor)
        info = agent.train(batch, noise, record=True)
        obs = agent.normalize_obs(batch.obs)
        q1, q2 = (agent.qnet.get_value(F.softmax(logits, dim=1)).detach()
                  for logits in agent.qnet(obs, actor(obs)))  # the critic after this update's step
        expected = torch.minimum(q1, q2) if use_cdq else (q1 + q2) / 2
        torch.testing.assert_close(info["actor_q"], expected, rtol=0, atol=1e-14)
        torch.testing.assert_close(info["actor_loss"], -expected.mean(), rtol=0, atol=1e-14)


def test_actor_moves_only_on_every_policy_freq_th_update():
    agent = make_agent(policy_freq=2)
    batch, noise = make_batch()
    before = snapshot(agent.actor)
    info = agent.train(batch, noise)
    assert info["actor_updated"] is False and info["actor_loss"].item() == 0.0
    assert all(torch.equal(p, before[name]) for name, p in snapshot(agent.actor).items())
    info = agent.train(batch, noise)
    assert info["actor_updated"] is True and agent.step == 2
    assert all(not torch.equal(p, before[name]) for name, p in snapshot(agent.actor).items())


def test_polyak_moves_the_critic_target_on_every_update():
    agent = make_agent(policy_freq=3, tau=0.3)
    batch, noise = make_batch()
    for _ in range(3):
        target = snapshot(agent.qnet_target)
        agent.train(batch, noise)
        online = snapshot(agent.qnet)
        for name, p in snapshot(agent.qnet_target).items():
            torch.testing.assert_close(p, 0.3 * online[name] + 0.7 * target[name], rtol=0, atol=1e-15, msg=name)
            assert not torch.equal(p, target[name])


def test_layer_norm_sits_after_each_hidden_linear_before_its_relu():
    agent = make_agent(critic_layer_norm=True)
    names = [type(m).__name__ for m in [*agent.qnet.qnet1.net, *agent.qnet.qnet1.fc_head]]
    assert names == ["Linear", "LayerNorm", "ReLU"] * 3 + ["Linear"]
    assert agent.qnet.qnet1.net[1].eps == 1e-5
    batch, noise = make_batch()
    agent.train(batch, noise)  # the target's LayerNorm parameters move with Polyak too
    assert {n for n, _ in agent.qnet_target.named_parameters()} == {n for n, _ in agent.qnet.named_parameters()}


def test_actor_output_layer_init_and_any_number_of_hidden_sizes():
    torch.manual_seed(7)
    agent = FastTD3(OBS, ACT, LOW, HIGH, hidden=(400,), critic_hidden=(9,), init_scale=0.01, dtype=D)
    weight = agent.actor.fc_mu[0].weight.detach()
    assert weight.shape == (ACT, 400) and abs(weight.std().item() - 0.01) < 0.001
    assert torch.equal(agent.actor.fc_mu[0].bias.detach(), torch.zeros(ACT, dtype=D))
    assert len(agent.actor.net) == 0 and len(agent.qnet.qnet1.net) == 0
    # All-zero output layer: the action is the box's centre.
    assert torch.equal(FastTD3(OBS, ACT, LOW, HIGH, init_scale=0.0, dtype=D).actor(torch.ones(1, OBS, dtype=D)),
                       torch.tensor([[0.0, -0.75]], dtype=D))


def test_constructor_defaults_are_the_config_s():
    from jax_td3.config import FastTD3Config

    config = FastTD3Config()
    params = inspect.signature(FastTD3).parameters
    fields = {f.name for f in dataclasses.fields(FastTD3Config)}
    shared = [name for name in params if name in fields and params[name].default is not inspect.Parameter.empty]
    box = {"obs_dim", "act_dim", "action_low", "action_high"}  # no defaults: the environment's
    assert set(params) - {"device", "dtype"} - box == set(shared)  # every other keyword is a config field
    assert len(shared) == 26
    for name in shared:
        assert params[name].default == getattr(config, name), name
