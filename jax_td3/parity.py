"""The cross-check engine: run the JAX update and the PyTorch reference side by side.

Both sides start from the same weights (the JAX init, copied with ``convert``),
see the same batches (replay indices drawn once from one numpy generator) and the
same target-policy noise. After every update every quantity is compared: target
action, target Q, current Q, critic loss, each critic gradient, each Adam moment,
each critic parameter after Adam, actor loss and gradients (on actor iterations),
actor parameters, and all target parameters after Polyak. The schedule of the
delayed update is checked too: the actor and the targets must change exactly on
the iterations where ``it % policy_freq == 0``.

Differences are measured per tensor as ``max_abs = max |jax - torch|`` and the
normwise ``max_rel`` of ``compare`` (Frobenius norm of the difference over the norm of
the tensor's family, e.g. all critic gradients), so an entry that happens to be near
zero does not blow the ratio up.
The report keeps the largest of each over all updates and the first update at
which any quantity left its tolerance.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_ref
from jax_td3 import convert
from jax_td3.config import TD3Config
from jax_td3.update import ADAM_STATE_INDEX, Batch, TrainState, init_train_state, update_with_internals

# float64: both sides do the same arithmetic in a different order; the differences are a few ulps
# (1e-16) and stay there over thousands of updates.
FLOAT64_TOLERANCE = 1e-10

# float32 (eps = 1.2e-7), compared one update at a time (the torch side is re-synchronised to the JAX
# state before each update, see ``run_parity``):
# - what is computed before any backward pass (target action, target Q, current Q, critic loss) is a
#   continuous function of the inputs and differs by rounding only: a few ulps accumulated over dot
#   products of <= ~1000 terms, ~1e-6 relative. Tolerance 1e-5.
# - gradients and everything after them (Adam moments, parameters, actor loss, targets) also depend on
#   which side of zero each ReLU input falls. An input within rounding of zero (there are B x units of
#   them per layer, so at 256-256/batch 256 about one per update) flips a unit's derivative for one
#   sample on one side only, changing that sample's share of the gradient (up to ~1/B of it). Measured
#   relative differences reach 6e-3 at 256-256/batch 256 and 1e-5 at 64-64/batch 32; tolerance 5e-2. This still catches
#   errors of method (a wrong loss, a missed clip, a step on the wrong iteration give differences of
#   order 1); subtle ones are float64's job.
FLOAT32_FORWARD_TOLERANCE = 1e-5
FLOAT32_TOLERANCE = 5e-2
FORWARD_QUANTITIES = ("target_action", "target_q", "current_q", "critic_loss")


def default_tolerance(dtype: str, quantity: str = "") -> float:
    if dtype == "float64":
        return FLOAT64_TOLERANCE
    return FLOAT32_FORWARD_TOLERANCE if quantity in FORWARD_QUANTITIES else FLOAT32_TOLERANCE


@dataclasses.dataclass
class QuantityStats:
    max_abs: float = 0.0
    max_rel: float = 0.0
    tol: float = 0.0
    first_violation: int | None = None   # update number (1-based) where max_rel first exceeded tol


@dataclasses.dataclass
class Divergence:
    update: int
    quantity: str
    max_abs: float
    max_rel: float
    tol: float


@dataclasses.dataclass
class ParityReport:
    algo: str
    dtype: str
    updates: int
    quantities: dict[str, QuantityStats]
    first_divergence: Divergence | None

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def to_dict(self) -> dict:
        out = {
            "passed": self.passed,
            "algo": self.algo,
            "dtype": self.dtype,
            "updates": self.updates,
            "quantities": {name: {"max_abs": s.max_abs, "max_rel": s.max_rel, "tol": s.tol}
                           for name, s in self.quantities.items()},
        }
        out["first_divergence"] = dataclasses.asdict(self.first_divergence) if self.first_divergence else None
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def table(self) -> str:
        lines = []
        if self.first_divergence:
            d = self.first_divergence
            lines.append(f"FIRST DIVERGENCE at update {d.update}: {d.quantity} "
                         f"(max_abs {d.max_abs:.3e}, max_rel {d.max_rel:.3e} > tol {d.tol:.1e})")
            lines.append("")
        width = max(len(n) for n in self.quantities)
        lines.append(f"{'quantity':<{width}}  {'max_abs':>10}  {'max_rel':>10}  {'tol':>8}  ok")
        for name, s in self.quantities.items():
            ok = "yes" if s.first_violation is None else f"NO (first at update {s.first_violation})"
            lines.append(f"{name:<{width}}  {s.max_abs:10.3e}  {s.max_rel:10.3e}  {s.tol:8.1e}  {ok}")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append("")
        lines.append(f"{verdict}: {self.algo}, {self.dtype}, {self.updates} updates, {len(self.quantities)} quantities")
        return "\n".join(lines)


# A loss that is the mean of terms of both signs can be near zero by cancellation; it is measured
# against the root mean square of its terms instead of against itself.
LOSS_TERMS = {"actor_loss": "actor_q"}


def family(name: str) -> str:
    """The group a per-tensor quantity belongs to: 'critic_grad.l1.weight' -> 'critic_grad'."""
    return name.split(".", 1)[0]


def compare(pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """``{name: (max_abs, max_rel)}`` for (name, jax value, torch value) triples.

    ``max_rel = ||jax - torch|| / max(||jax family||, ||torch family||)``: the normwise relative
    difference of the whole family (all critic gradients, all actor parameters ...), attributed to
    each tensor. Measuring a tensor against its family rather than against itself keeps the ratio
    meaningful for tensors that are near zero by cancellation (the output bias gradient is the
    mean of the batch's TD errors); losses in ``LOSS_TERMS`` are measured against their terms.
    """
    values = [(name, np.asarray(a, np.float64), np.asarray(b, np.float64)) for name, a, b in pairs]
    sums: dict[str, list[float]] = {}   # family -> [sum a^2, sum b^2, entries]
    for name, a, b in values:
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape mismatch {a.shape} vs {b.shape}")
        acc = sums.setdefault(family(name), [0.0, 0.0, 0])
        acc[0] += float(np.sum(a * a))
        acc[1] += float(np.sum(b * b))
        acc[2] += a.size
    out = {}
    for name, a, b in values:
        delta = a - b
        max_abs = float(np.max(np.abs(delta))) if delta.size else 0.0
        if not np.isfinite(max_abs):
            out[name] = (float("inf"), float("inf"))
            continue
        if name in LOSS_TERMS and LOSS_TERMS[name] in sums:
            sa, sb, count = sums[LOSS_TERMS[name]]
            scale = np.sqrt(max(sa, sb) / count)
        else:
            scale = np.sqrt(max(sums[family(name)][:2]))
        out[name] = (max_abs, float(np.linalg.norm(delta)) / scale if scale > 0 else max_abs)
    return out


# -- synthetic data both sides share -------------------------------------------------------------

@dataclasses.dataclass
class SharedDraws:
    """A fixed synthetic replay buffer plus one numpy generator for indices and target-policy noise."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    reward: np.ndarray
    not_done: np.ndarray
    rng: np.random.Generator

    @classmethod
    def make(cls, config: TD3Config, seed: int, size: int | None = None) -> "SharedDraws":
        rng = np.random.default_rng(seed)
        n = size or max(10 * config.batch_size, 1000)
        low, high = np.asarray(config.action_low), np.asarray(config.action_high)
        return cls(
            obs=rng.standard_normal((n, config.obs_dim)),
            action=rng.uniform(low, high, (n, config.act_dim)),
            next_obs=rng.standard_normal((n, config.obs_dim)),
            reward=rng.standard_normal((n, 1)),
            not_done=(rng.random((n, 1)) > 0.1).astype(np.float64),
            rng=rng,
        )

    def next(self, batch_size: int, act_dim: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The next batch (Fujimoto order) and N(0, 1) target-policy noise."""
        idx = self.rng.integers(0, self.obs.shape[0], batch_size)
        batch = (self.obs[idx], self.action[idx], self.next_obs[idx], self.reward[idx], self.not_done[idx])
        return batch, self.rng.standard_normal((batch_size, act_dim))


# -- what to compare -----------------------------------------------------------------------------

def _jax_value(tree, index, transpose: bool) -> np.ndarray:
    layer, leaf, c = index
    x = np.asarray(tree["params"][layer][leaf])
    x = x if c is None else x[c]
    return x.T if transpose else x


def _param_quantities(config, network: str, prefix: str, jax_tree_of: Callable, torch_of: Callable,
                      template) -> Iterator[tuple[str, Callable, Callable]]:
    """(name, jax getter, torch getter) for every parameter of ``network`` under the label ``prefix``."""
    for name, index, transpose in convert.param_pairs(config, network, template):
        yield (f"{prefix}.{name}",
               lambda ctx, index=index, transpose=transpose: _jax_value(jax_tree_of(ctx), index, transpose),
               lambda ctx, name=name: torch_of(ctx, name))


class _Context:
    """What one update produced on both sides."""

    def __init__(self, state: TrainState, internals: dict, metrics: dict, agent, info: dict):
        self.state, self.internals, self.metrics, self.agent, self.info = state, internals, metrics, agent, info
        self.critic = dict(agent.critic.named_parameters())
        self.actor = dict(agent.actor.named_parameters())
        self.critic_target = dict(agent.critic_target.named_parameters())
        self.actor_target = dict(agent.actor_target.named_parameters())


def _t(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _adam(state_tree, which):
    return getattr(state_tree[ADAM_STATE_INDEX], which)


def build_quantities(config: TD3Config, template: TrainState):
    """Two lists of (name, jax getter, torch getter): the critic part (every update) and the actor part
    (actor iterations only), each in the order the update computes them."""
    def opt_state(agent, net, name, key):
        params = getattr(agent, net)
        p = dict(params.named_parameters())[name]
        return _t(getattr(agent, f"{net}_optimizer").state[p][key])

    critic = [
        ("target_action", lambda c: np.asarray(c.internals["target_action"]), lambda c: _t(c.info["target_action"])),
        ("target_q", lambda c: np.asarray(c.internals["target_q"]), lambda c: _t(c.info["target_q"])),
        ("current_q", lambda c: np.asarray(c.internals["current_q"]), lambda c: _t(c.info["current_q"])),
        ("critic_loss", lambda c: np.asarray(c.metrics["critic_loss"]), lambda c: _t(c.info["critic_loss"])),
    ]
    def gradient_and_adam(net: str, template_params):
        """Gradient, Adam m and Adam v of every parameter of ``net`` ("critic" or "actor")."""
        opt = f"{net}_opt_state"
        return [*_param_quantities(config, net, f"{net}_grad", lambda c: c.internals[f"{net}_grads"],
                                   lambda c, n: _t(c.info[f"{net}_grads"][n]), template_params),
                *_param_quantities(config, net, f"{net}_adam_m", lambda c: _adam(getattr(c.state, opt), "mu"),
                                   lambda c, n: opt_state(c.agent, net, n, "exp_avg"), template_params),
                *_param_quantities(config, net, f"{net}_adam_v", lambda c: _adam(getattr(c.state, opt), "nu"),
                                   lambda c, n: opt_state(c.agent, net, n, "exp_avg_sq"), template_params)]

    cp, ap = template.critic_params, template.actor_params
    critic += gradient_and_adam("critic", cp)
    critic += _param_quantities(config, "critic", "critic", lambda c: c.state.critic_params,
                                lambda c, n: _t(c.critic[n]), cp)
    actor = [("actor_q", lambda c: np.asarray(c.internals["actor_q"]), lambda c: _t(c.info["actor_q"])),
             ("actor_loss", lambda c: np.asarray(c.metrics["actor_loss"]), lambda c: _t(c.info["actor_loss"]))]
    actor += gradient_and_adam("actor", ap)

    # Checked every update: between actor iterations both sides must hold them unchanged.
    every = []
    every += _param_quantities(config, "actor", "actor", lambda c: c.state.actor_params,
                               lambda c, n: _t(c.actor[n]), ap)
    every += _param_quantities(config, "critic", "critic_target", lambda c: c.state.critic_target_params,
                               lambda c, n: _t(c.critic_target[n]), cp)
    every += _param_quantities(config, "actor", "actor_target", lambda c: c.state.actor_target_params,
                               lambda c, n: _t(c.actor_target[n]), ap)
    return critic, actor, every


# -- the runner ----------------------------------------------------------------------------------

def _dtypes(dtype: str):
    if dtype == "float64":
        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        return jnp.float64, torch.float64, np.float64
    if dtype == "float32":
        return jnp.float32, torch.float32, np.float32
    raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")


def _changed(before, after) -> bool:
    return any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)))


def run_parity(config: TD3Config, *, dtype: str = "float64", updates: int = 1000, seed: int = 0,
               tol: float | None = None, agent=None, resync: bool | None = None,
               progress: bool = False) -> ParityReport:
    """Run ``updates`` updates on both sides in lockstep and compare everything after each.

    ``tol`` overrides the per-quantity default tolerances (``default_tolerance``).
    ``resync`` (default: on for float32, off for float64) copies the JAX state into the torch agent
    before every update, so each comparison measures one update's rounding rather than the drift of two
    float32 trajectories (which ``resync=False`` shows).
    ``agent`` may be any object with torch_ref's interface (e.g. a modified reference, to see where it
    departs); by default it is the torch_ref agent for ``config``. JAX matmuls run at full float32
    precision ("highest"), which matters on GPUs whose default is TF32.
    """
    jdtype, tdtype, ndtype = _dtypes(dtype)
    resync = (dtype == "float32") if resync is None else resync
    state = init_train_state(config, jax.random.PRNGKey(seed), jdtype)
    agent = agent if agent is not None else convert.make_torch_agent(config, dtype=tdtype)
    convert.state_to_torch(config, state, agent)
    draws = SharedDraws.make(config, seed)
    critic_qs, actor_qs, every_qs = build_quantities(config, state)
    stats = {name: QuantityStats(tol=default_tolerance(dtype, name) if tol is None else tol)
             for name, _, _ in critic_qs + actor_qs + every_qs}
    stats["schedule"] = QuantityStats(tol=0.0)
    first: Divergence | None = None
    step = jax.jit(update_with_internals, static_argnums=0)

    iterator = range(1, updates + 1)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=f"parity {config.algo} {dtype}", unit="upd")
    with jax.default_matmul_precision("highest"):
        for it in iterator:
            if resync and it > 1:
                convert.state_to_torch(config, state, agent)
            batch_np, noise_np = draws.next(config.batch_size, config.act_dim)
            batch = Batch(*(jnp.asarray(x, jdtype) for x in batch_np))
            new_state, metrics, internals = step(config, state, batch, jnp.asarray(noise_np, jdtype))
            new_state, metrics, internals = jax.device_get((new_state, metrics, internals))
            info = agent.train(torch_ref.Batch(*(torch.from_numpy(x.astype(ndtype)) for x in batch_np)),
                               torch.from_numpy(noise_np.astype(ndtype)), record=True)
            ctx = _Context(new_state, internals, metrics, agent, info)

            actor_iteration = it % config.policy_freq == 0
            schedule_errors = int(bool(metrics["actor_updated"]) != actor_iteration)
            schedule_errors += int(("actor_loss" in info) != actor_iteration)
            if not actor_iteration:  # (on actor iterations a zero gradient may legitimately move nothing)
                schedule_errors += sum(int(_changed(before, after)) for before, after in (
                    (state.actor_params, new_state.actor_params),
                    (state.actor_target_params, new_state.actor_target_params),
                    (state.critic_target_params, new_state.critic_target_params)))
            s = stats["schedule"]
            s.max_abs = s.max_rel = max(s.max_abs, float(schedule_errors))
            if schedule_errors and s.first_violation is None:
                s.first_violation = it
                first = first or Divergence(it, "schedule", float(schedule_errors), float(schedule_errors), 0.0)

            checks = critic_qs + (actor_qs if actor_iteration else []) + every_qs
            differences = compare([(name, jax_get(ctx), torch_get(ctx)) for name, jax_get, torch_get in checks])
            for name, (max_abs, max_rel) in differences.items():
                s = stats[name]
                s.max_abs, s.max_rel = max(s.max_abs, max_abs), max(s.max_rel, max_rel)
                if not max_rel <= s.tol and s.first_violation is None:
                    s.first_violation = it
                    if first is None:
                        first = Divergence(it, name, max_abs, max_rel, s.tol)
            state = new_state
    return ParityReport(config.algo, dtype, updates, stats, first)
