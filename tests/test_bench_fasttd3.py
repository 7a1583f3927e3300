"""FastTD3 in the benchmarks: the fast PyTorch update (``jax_td3.bench.torch_fasttd3``) against a
plain re-computation of docs/algorithms.md and against the JAX update, its FLOP count, and a tiny
``jax-td3 bench --algos fasttd3`` run."""

from __future__ import annotations

import importlib
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jax_td3.bench import flops
from jax_td3.bench.suite import SuiteSettings, cell_config
from jax_td3.bench.torch_fasttd3 import FastAgent, project
from jax_td3.cli import main
from jax_td3.config import FastTD3Config

HAS_JAX_FASTTD3 = importlib.util.find_spec("jax_td3.fasttd3.update") is not None
NO_JAX_FASTTD3 = "jax_td3.fasttd3.update (the JAX FastTD3 update) is not in this checkout"


def _config(**changes):
    # Support -5..5 with 11 atoms: integer atoms, so integer targets land exactly on one.
    base = dict(obs_dim=4, act_dim=2, action_low=(-2.0, -1.0), action_high=(2.0, 1.0), hidden=(8, 6),
                critic_hidden=(10, 7), batch_size=8, num_atoms=11, v_min=-5.0, v_max=5.0, policy_noise=0.2,
                init_scale=0.3, weight_decay=0.1, actor_lr=1e-2, critic_lr=2e-2)
    return FastTD3Config(**{**base, **changes}).validate()


OPTIONS = dict(max_grad_norm=0.05, critic_layer_norm=True, actor_lr_end=1e-3, critic_lr_end=2e-3,
               lr_schedule_updates=2, reward_scale=0.5, critic_loss_scale=2.0)
VARIANTS = {
    "defaults": {},
    "clip_layer_norm_cosine": OPTIONS,
    "no_cdq_clip_layer_norm_cosine": dict(OPTIONS, use_cdq=False),
}


def _batch(generator, config):
    b, f64 = config.batch_size, dict(generator=generator, dtype=torch.float64)
    # Integer rewards with bootstrap 0 land on an atom; +-9 clamp to the support's ends.
    reward = torch.tensor([0.0, -9.0, 9.0, 3.0], dtype=torch.float64).repeat(b // 4) + \
        torch.cat([torch.zeros(b // 2, dtype=torch.float64), torch.randn(b - b // 2, **f64)])
    bootstrap = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).repeat(b // 4)
    high = torch.tensor(config.action_high, dtype=torch.float64)
    return [3 * torch.randn(b, config.obs_dim, **f64) + 1, (2 * torch.rand(b, config.act_dim, **f64) - 1) * high,
            3 * torch.randn(b, config.obs_dim, **f64) + 1, reward, bootstrap,
            torch.full((b,), 0.9, dtype=torch.float64)]


def test_flops_match_a_hand_count_for_a_tiny_fasttd3():
    # obs 3, act 1, actor 4, critic 5, 3 atoms, batch 2, policy_freq 2. Sum of n_in * n_out: actor
    # 3*4 + 4*1 = 16, one critic (3+1)*5 + 5*3 = 35; a matmul pass costs 2 * B * sum = 4 * sum here.
    config = FastTD3Config(obs_dim=3, act_dim=1, hidden=(4,), critic_hidden=(5,), num_atoms=3, batch_size=2)
    actor_pass, critic_pass = 4 * 16, 4 * 35
    critic_no_first, actor_no_first = 4 * 15, 4 * 4     # input gradients skip the first layer
    every_update = (actor_pass + 2 * critic_pass         # the actor on next_obs, both target critics
                    + 2 * critic_pass + 2 * critic_pass  # both critics forward and weight gradients
                    + 2 * critic_no_first)               # their input gradients
    actor_update = (actor_pass + 2 * critic_pass         # mu(s), both critics at it
                    + 2 * critic_pass                    # both critics' input gradients, first layer too
                    + actor_pass + actor_no_first)       # actor weight and input gradients
    assert every_update + actor_update / 2 == 1376 == flops.matmul_flops(config, batch=2)
    # Element-wise: 2 critics x 2 samples x 3 atoms = 12 elements, 19 FLOPs each every update and 9 on
    # actor steps; 6 target atoms x 9; target action 2 x 9; parameters: critics 2 x (20+5 + 15+3) = 86
    # (AdamW 12 + Polyak 3 each), actor 12+4 + 4+1 = 21 (AdamW 12 on actor steps).
    elementwise = 12 * 19 + 6 * 9 + 2 * 9 + 86 * (12 + 3) + (12 * 9 + 21 * 12) / 2
    assert elementwise == 1770 == flops.elementwise_flops(config, batch=2)
    assert flops.update_flops(config, batch=2) == 1376 + 1770
    clipped = config.replace(max_grad_norm=1.0)
    assert flops.elementwise_flops(clipped, batch=2) == 1770 + 3 * 86 + 3 * 21 / 2
    # The actor step's critic products are stacked (both critics), as the target critics' are.
    gemms = flops.update_gemms(config.replace(batch_size=256), 256)
    assert gemms[(2, 256, 5, 3)] == 2 + 1 / 2     # forward: target critics, critics; at mu(s)
    assert gemms[(2, 256, 3, 5)] == 1 + 1 / 2     # input gradient: critic step; actor step
    assert gemms[(1, 256, 3, 4)] == 1 + 1 / 2     # the actor on next_obs; on obs at actor steps


# -- a plain re-computation of the spec ---------------------------------------------------------------

def _mlp(x, layers, norms=()):
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            if norms:
                x = F.layer_norm(x, x.shape[-1:], eps=1e-5) * norms[i][0] + norms[i][1]
            x = torch.relu(x)
    return x


def _members(net, member):
    layers = [(w[member].detach().clone(), b[member, 0].detach().clone()) for w, b in zip(net.weights, net.biases)]
    norms = [(s[member, 0].detach().clone(), b[member, 0].detach().clone())
             for s, b in zip(net.norm_scales, net.norm_biases)]
    return layers, norms


def _loop_projection(p, reward, bootstrap, discount, z, v_min, v_max):
    b_size, atoms = p.shape
    dz = (v_max - v_min) / (atoms - 1)
    out = torch.zeros_like(p)
    for s in range(b_size):
        for j in range(atoms):
            bj = (min(max(float(reward[s] + bootstrap[s] * discount[s] * z[j]), v_min), v_max) - v_min) / dz
            lo, up = int(np.floor(bj)), int(np.ceil(bj))
            if lo == up:
                if lo > 0:
                    lo -= 1
                else:
                    up += 1
            out[s, lo] += p[s, j] * (up - bj)
            out[s, up] += p[s, j] * (bj - lo)
    return out


class _Plain:
    """Each network as lists of leaf tensors, AdamW written out: the spec line by line."""

    def __init__(self, agent, config):
        self.config = config
        self.actor, _ = _members(agent.actor, 0)
        self.critics = [_members(agent.critic, i) for i in range(2)]
        self.targets = [_members(agent.critic_target, i) for i in range(2)]
        self.mean, self.var = agent.obs_mean.clone(), agent.obs_var.clone()
        self.z = torch.linspace(config.v_min, config.v_max, config.num_atoms, dtype=torch.float64)
        self.moments = {}
        self.counts = {"actor": 0, "critic": 0}
        self.step = 0

    def leaves(self, which):
        if which == "actor":
            return [t for layer in self.actor for t in layer]
        return [t for layers, norms in self.critics for part in (layers, norms) for layer in part for t in layer]

    def adamw(self, which, grads, lr):
        c = self.config
        self.counts[which] += 1
        t = self.counts[which]
        leaves = self.leaves(which)
        if c.max_grad_norm > 0:
            norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
            if norm > c.max_grad_norm:
                grads = [g / norm * c.max_grad_norm for g in grads]
        for i, (p, g) in enumerate(zip(leaves, grads)):
            m, v = self.moments.get((which, i), (torch.zeros_like(p), torch.zeros_like(p)))
            m, v = c.adam_b1 * m + (1 - c.adam_b1) * g, c.adam_b2 * v + (1 - c.adam_b2) * g * g
            self.moments[which, i] = (m, v)
            step = (m / (1 - c.adam_b1 ** t)) / (torch.sqrt(v / (1 - c.adam_b2 ** t)) + c.adam_eps)
            p.data -= lr * (step + c.weight_decay * p.data)

    def lr(self, lr, lr_end):
        c = self.config
        if lr_end is None or c.lr_schedule_updates == 0:
            return lr
        t = min(self.step, c.lr_schedule_updates)
        return lr_end + (lr - lr_end) * (1 + np.cos(np.pi * t / c.lr_schedule_updates)) / 2

    def act(self, o):
        scale, bias = (torch.tensor(v, dtype=torch.float64) for v in (self.config.action_scale,
                                                                        self.config.action_bias))
        return scale * torch.tanh(_mlp(o, self.actor)) + bias

    def update(self, batch, noise):
        c = self.config
        obs, action, next_obs, reward, bootstrap, discount = batch
        norm = lambda x: (x - self.mean) / (torch.sqrt(self.var) + 1e-2)
        o, o2 = norm(obs), norm(next_obs)
        scale = torch.tensor(c.action_scale, dtype=torch.float64)
        with torch.no_grad():
            smoothing = torch.clamp(noise * c.policy_noise * scale, -c.noise_clip * scale, c.noise_clip * scale)
            a2 = torch.clamp(self.act(o2) + smoothing, torch.tensor(c.action_low, dtype=torch.float64),
                             torch.tensor(c.action_high, dtype=torch.float64))
            projected = [_loop_projection(torch.softmax(_mlp(torch.cat([o2, a2], 1), *self.targets[i]), -1),
                                          reward * c.reward_scale, bootstrap, discount, self.z, c.v_min, c.v_max)
                         for i in range(2)]
            if c.use_cdq:
                v1, v2 = (p @ self.z for p in projected)
                projected = [torch.where((v1 < v2)[:, None], projected[0], projected[1])] * 2
        for leaf in self.leaves("critic") + self.leaves("actor"):
            leaf.requires_grad_(True)
        loss = sum(-(projected[i] * torch.log_softmax(_mlp(torch.cat([o, action], 1), *self.critics[i]), -1))
                   .sum(-1).mean() for i in range(2)) * c.critic_loss_scale
        lr_t = lambda lr, end: self.lr(lr, end)
        self.adamw("critic", torch.autograd.grad(loss, self.leaves("critic")), lr_t(c.critic_lr, c.critic_lr_end))
        if (self.step + 1) % c.policy_freq == 0:
            a = self.act(o)
            q1, q2 = (torch.softmax(_mlp(torch.cat([o, a], 1), *self.critics[i]), -1) @ self.z for i in range(2))
            q = torch.minimum(q1, q2) if c.use_cdq else (q1 + q2) / 2
            self.adamw("actor", torch.autograd.grad(-q.mean(), self.leaves("actor")), lr_t(c.actor_lr, c.actor_lr_end))
        with torch.no_grad():
            for (layers, norms), (t_layers, t_norms) in zip(self.critics, self.targets):
                for online, target in zip(layers + norms, t_layers + t_norms):
                    for p, t in zip(online, target):
                        t.copy_(c.tau * p + (1 - c.tau) * t)
        self.step += 1


def _assert_networks_equal(agent, plain, rtol, atol):
    for member in range(2):
        for mine, theirs in ((_members(agent.critic, member), plain.critics[member]),
                             (_members(agent.critic_target, member), plain.targets[member])):
            for a, b in zip(sum(map(list, mine), []), sum(map(list, theirs), [])):
                for x, y in zip(a, b):
                    np.testing.assert_allclose(x.numpy(), y.detach().numpy(), rtol=rtol, atol=atol)
    for a, b in zip(_members(agent.actor, 0)[0], plain.actor):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.numpy(), y.detach().numpy(), rtol=rtol, atol=atol)


def test_projection_equals_the_loop_over_atoms():
    generator = torch.Generator().manual_seed(0)
    config = _config()
    reward, bootstrap, discount = _batch(generator, config)[3:]
    p = torch.softmax(torch.randn(2, 8, 11, generator=generator, dtype=torch.float64), -1)
    z = torch.linspace(-5, 5, 11, dtype=torch.float64)
    fast = project(p, reward, bootstrap, discount, z, -5.0, 5.0)
    for i in range(2):
        np.testing.assert_allclose(fast[i].numpy(), _loop_projection(p[i], reward, bootstrap, discount, z, -5.0,
                                                                     5.0).numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(fast.sum(-1).numpy(), 1.0, rtol=1e-13)
    # Bootstrap 0: reward 0 is atom 5, -9 and 9 clamp to the support's ends; all the mass goes there.
    for sample, atom in ((0, 5), (1, 0), (2, 10)):
        np.testing.assert_allclose(fast[:, sample, atom].numpy(), 1.0, rtol=1e-13)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_update_equals_the_plain_spec_in_float64(variant):
    config = _config(**VARIANTS[variant])
    torch.manual_seed(0)
    agent = FastAgent(config, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    agent.obs_mean.copy_(torch.randn(config.obs_dim, generator=generator, dtype=torch.float64))
    agent.obs_var.copy_(torch.rand(config.obs_dim, generator=generator, dtype=torch.float64) * 4 + 0.5)
    plain = _Plain(agent, config)
    for _ in range(4):   # two actor steps (policy_freq 2), and past the end of the cosine schedule
        batch = _batch(generator, config)
        noise = torch.randn(config.batch_size, config.act_dim, generator=generator, dtype=torch.float64)
        agent.update(batch, noise)
        plain.update(batch, noise)
    _assert_networks_equal(agent, plain, rtol=1e-9, atol=1e-12)
    assert not torch.equal(agent.critic.weights[0], agent.critic_target.weights[0])   # it moved


@pytest.mark.skipif(not HAS_JAX_FASTTD3, reason=NO_JAX_FASTTD3)
@pytest.mark.parametrize("variant", [pytest.param("defaults", marks=pytest.mark.slow), "clip_layer_norm_cosine",
                                     pytest.param("no_cdq_clip_layer_norm_cosine", marks=pytest.mark.slow)])
def test_fast_update_equals_the_jax_update_in_float64(variant, x64):
    import jax
    import jax.numpy as jnp

    from jax_td3.fasttd3.state import Batch

    fasttd3_update = importlib.import_module("jax_td3.fasttd3.update")   # not in every checkout yet
    init_train_state, update = fasttd3_update.init_train_state, fasttd3_update.update

    config = _config(**VARIANTS[variant])
    state = init_train_state(config, jax.random.PRNGKey(0), jnp.float64)
    rng = np.random.default_rng(1)
    normalizer = state.obs_normalizer._replace(mean=jnp.asarray(rng.standard_normal(config.obs_dim)),
                                               var=jnp.asarray(rng.uniform(0.5, 4.5, config.obs_dim)),
                                               count=jnp.asarray(100, state.obs_normalizer.count.dtype))
    state = state._replace(obs_normalizer=normalizer)
    agent = FastAgent(config, dtype=torch.float64)
    agent.load_jax_state(state)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        batch = _batch(generator, config)
        noise = torch.randn(config.batch_size, config.act_dim, generator=generator, dtype=torch.float64)
        agent.update(batch, noise)
        state, _ = update(config, state, Batch(*(jnp.asarray(x.numpy()) for x in batch)), jnp.asarray(noise.numpy()))
    reloaded = FastAgent(config, dtype=torch.float64)   # the JAX state after its updates
    reloaded.load_jax_state(state)
    for name in ("actor", "critic", "critic_target"):
        for a, b in zip(getattr(agent, name).parameters(), getattr(reloaded, name).parameters()):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-9, err_msg=name)
    assert agent.step == int(state.step) == 3


@pytest.mark.slow
def test_compiled_fast_update_equals_eager_in_float64():
    config = _config()
    eager, compiled = (FastAgent(config, dtype=torch.float64) for _ in range(2))
    compiled.actor.load_state_dict(eager.actor.state_dict())
    compiled.critic.load_state_dict(eager.critic.state_dict())
    compiled.critic_target.load_state_dict(eager.critic_target.state_dict())
    torch._dynamo.reset()
    compiled.compile()
    generator = torch.Generator().manual_seed(3)
    for _ in range(4):
        batch = _batch(generator, config)
        noise = torch.randn(config.batch_size, config.act_dim, generator=generator, dtype=torch.float64)
        eager.update(batch, noise)
        compiled.update(batch, noise)
    for mine, theirs in ((compiled.actor, eager.actor), (compiled.critic_target, eager.critic_target)):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_sample_draws_whole_rows_of_the_device_buffer():
    config = _config(batch_size=64)
    agent = FastAgent(config, replay_capacity=10)
    rows = np.arange(10, dtype=np.float32)
    agent.add(rows[:, None] * np.ones((1, 4)), rows[:, None] * np.ones((1, 2)), rows[:, None] + np.zeros((1, 4)) + 100,
              rows + 200, rows + 300, rows + 400)
    (obs, action, next_obs, reward, bootstrap, discount), noise = agent.sample(torch.Generator().manual_seed(0))
    index = action[:, 0]
    assert len(set(index.tolist())) > 1 and set(index.tolist()) <= set(range(10))
    torch.testing.assert_close(next_obs, index[:, None].expand(64, 4) + 100)
    offsets = torch.tensor([[200.0], [300.0], [400.0]])
    torch.testing.assert_close(torch.stack([reward, bootstrap, discount]), index + offsets)
    assert noise.shape == (64, 2)


def test_a_fasttd3_only_grid_defaults_to_its_sizes_and_the_default_grid_leaves_it_out():
    record = SuiteSettings(algos=("fasttd3",)).record()
    assert record["hidden"] == [[1024, 512, 256]] and record["batch"] == [4096, 32768]
    assert (record["fasttd3_obs_dim"], record["fasttd3_act_dim"]) == (67, 21)
    assert SuiteSettings().record()["algos"] == ["td3", "ourddpg"]
    config = cell_config("fasttd3", (1024, 512, 256), 4096)
    assert (config.hidden, config.critic_hidden, config.num_atoms, config.batch_size) == (
        (512, 256, 128), (1024, 512, 256), 101, 4096)


def test_tiny_fasttd3_run_times_the_fast_torch_update_and_the_jax_update(tmp_path):
    impls = ["torch_ref", "torch_tuned", "torch_cudagraph", "jax_jit", "jax_vmap"]
    code = main(["bench", "--algos", "fasttd3", "--hidden", "16-8", "--batch", "8", "--impls", *impls,
                 "--repetitions", "2", "--min-rep-time", "0.002", "--device", "cpu", "--out-dir", str(tmp_path),
                 "--name", "tiny", "--no-progress", "--no-plots"])
    assert code == 0
    rows = {row["impl"]: row for row in json.loads((tmp_path / "tiny.json").read_text())["rows"]}
    assert list(rows) == impls
    assert rows["torch_ref"]["status"] == rows["jax_vmap"]["status"] == "skipped"
    assert "CUDA" in rows["torch_cudagraph"]["reason"]
    config = cell_config("fasttd3", (16, 8), 8)
    measured = ["torch_tuned", "jax_jit"] if HAS_JAX_FASTTD3 else ["torch_tuned"]
    if not HAS_JAX_FASTTD3:
        assert rows["jax_jit"]["status"] == "skipped" and "jax_td3.fasttd3.update" in rows["jax_jit"]["reason"]
    for impl in measured:
        row = rows[impl]
        assert row["status"] == "ok", row
        assert row["flops_per_update"] == flops.update_flops(config, 8) > flops.matmul_flops(config, 8)
        # The floor charges the element-wise FLOPs at the matmul rate: floor time x that rate = all FLOPs.
        assert row["floor_s_per_update"] * row["floor_rate_flops_per_s"] == pytest.approx(
            row["flops_per_update"], rel=1e-9)
    assert "| fasttd3 | 16-8 | 8 | torch_tuned |" in (tmp_path / "tiny.md").read_text()
