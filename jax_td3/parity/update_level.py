"""Update-level parity: two implementations of one update, run side by side and compared after each.

Both adapters (``jax_td3.adapters``) start from the same state (the first one's, loaded into the
second), see the same batches (replay indices drawn from one NumPy generator over a fixed synthetic
buffer) and the same target-policy noise. After every update, every quantity both report is
compared with ``compare.compare``: target action, target Q, current Q, critic loss, each critic
gradient, each Adam moment, each critic parameter after Adam, actor Q values, loss and gradients
(on actor iterations only), actor parameters, and all target parameters after Polyak.
The schedule of the delayed update is checked too: each side must step its actor exactly on the
iterations where ``it % policy_freq == 0``, and leave its actor and targets untouched on the others
(only its actor when the config's ``target_update`` is "every_update": then the targets move on
every update).

The report keeps the largest differences of each quantity over all updates and the first update at
which any quantity left its tolerance.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import numpy as np

from jax_td3.adapters.base import ACTOR_STEP_FAMILIES, COUNTERS, DELAYED_FAMILIES, Adapter, family
from jax_td3.config import TD3Config
from jax_td3.dtypes import dtype_named
from jax_td3.errors import require_torch
from jax_td3.parity.compare import ParityReport, Tracker, compare

# float64: both sides do the same arithmetic in a different order; the differences are a few ulps
# (1e-16) and stay there over thousands of updates.
FLOAT64_TOLERANCE = 1e-10

# float32 (eps = 1.2e-7), compared one update at a time (the second side is re-synchronised to the
# first's state before each update, see ``compare_adapters``):
# - what is computed before any backward pass (target action, target Q, current Q, critic loss) is a
#   continuous function of the inputs and differs by rounding only: a few ulps accumulated over dot
#   products of <= ~1000 terms, ~1e-6 relative. Tolerance 1e-5.
# - gradients and everything after them (Adam moments, parameters, actor loss, targets) also depend on
#   which side of zero each ReLU input falls. An input within rounding of zero (there are B x units of
#   them per layer, so at 256-256/batch 256 about one per update) flips a unit's derivative for one
#   sample on one side only, changing that sample's share of the gradient (up to ~1/B of it). Measured
#   relative differences reach 6e-3 at 256-256/batch 256 and 1e-5 at 64-64/batch 32; tolerance 5e-2.
#   This still catches errors of method (a wrong loss, a missed clip, a step on the wrong iteration
#   give differences of order 1); subtle ones are float64's job.
FLOAT32_FORWARD_TOLERANCE = 1e-5
FLOAT32_TOLERANCE = 5e-2
FORWARD_QUANTITIES = ("target_action", "target_q", "current_q", "critic_loss")
# FastTD3 (float32): the projected distributions, the target, the logits and the cross-entropy are, like
# TD3's forward values, continuous functions of the inputs before any backward pass: a softmax over
# <= ~100 atoms (max-subtracted exponentials and one sum), the projection's two weights per atom
# (|b - floor(b)| <= 1, no cancellation beyond the clamp), a log-softmax and one dot product over the
# atoms per sample, each a few ulps on top of the logits' dot products. The normaliser's statistics are
# means and variances of <= ~1000 rows (the variance's cross-term uses the new mean: no catastrophic
# cancellation for the observations' scales), and the learning rates one cosine: ulps. Same 1e-5.
FASTTD3_FORWARD_QUANTITIES = ("critic_logits", "critic_lr", "actor_lr", "obs_normalizer.mean", "obs_normalizer.var")
# The projected distributions (and the target made of them) in float32 have one more source: the two
# frameworks' linspace put an atom of the support up to an ulp of max|z| apart, so a target's fractional
# position b = (Tz - v_min) / delta_z differs by up to eps * max|z| / delta_z, ~eps * (atoms - 1) / 2 on a
# symmetric support (6e-6 at 101 atoms; measured 6.5e-6 on +-10 with 101 atoms), and that share of the
# mass moves between two neighbouring atoms. Tolerance 1e-4 (supports of up to ~1600 atoms); a wrong
# projection moves O(1) of the mass.
FLOAT32_PROJECTION_TOLERANCE = 1e-4
PROJECTION_QUANTITIES = ("projected", "target_dist")
# Which critic clipped double Q took (``cdq_choice``) is compared exactly except where the two expected
# values sum_j proj_i[j] z_j are within rounding of each other: each is a dot product of <= ~100 terms
# bounded by max|z|, so the two implementations' values differ by up to ~atoms * eps * max|z| (1e-14 of
# max|z| in float64; in float32 the logits upstream already differ by up to the forward tolerance). Within
# CDQ_TIE * max|z| the choice may flip legitimately; it then picks between two distributions with the same
# value (with bootstrap 0, or a target clamped at one end of the support, the two projections are equal up
# to the softmax's rounding), and ``target_dist`` says whether what was learned differs.
CDQ_TIE = {"float64": 1e-12, "float32": 1e-5}


def default_tolerance(dtype: str, quantity: str = "") -> float:
    """The tolerance on ``max_rel`` of ``quantity`` in a comparison in ``dtype``."""
    if dtype == "float64":
        return FLOAT64_TOLERANCE
    if quantity in PROJECTION_QUANTITIES:
        return FLOAT32_PROJECTION_TOLERANCE
    forward = quantity in FORWARD_QUANTITIES or quantity in FASTTD3_FORWARD_QUANTITIES
    return FLOAT32_FORWARD_TOLERANCE if forward else FLOAT32_TOLERANCE


# -- synthetic data both sides share -------------------------------------------------------------

@dataclasses.dataclass
class SharedDraws:
    """A fixed synthetic replay buffer plus one NumPy generator for indices and target-policy noise."""

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
        """The next batch (Fujimoto's order) and N(0, 1) target-policy noise, in float64."""
        idx = self.rng.integers(0, self.obs.shape[0], batch_size)
        batch = (self.obs[idx], self.action[idx], self.next_obs[idx], self.reward[idx], self.not_done[idx])
        return batch, self.rng.standard_normal((batch_size, act_dim))


@dataclasses.dataclass
class NStepDraws:
    """FastTD3's shared draws: a fixed synthetic n-step buffer, observations the loop "collects" each
    step, and one NumPy generator for indices, collected rows and target-policy noise.

    Observations have a non-zero mean and a non-unit scale per dimension (so normalising matters).
    Each transition's window has k in 1..n_step steps (discount gamma^k, reward sum_{i<k} gamma^i r_i);
    bootstrap is 0 on about one in eight. The one-step rewards are mostly within the support, but about
    one transition in ten has its return beyond v_max or below v_min (the projection clamps at each end),
    and about one in twenty is exactly an atom of the support with bootstrap 0 (FastTD3's on-atom rule).
    """

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    reward: np.ndarray
    bootstrap: np.ndarray
    discount: np.ndarray
    obs_mean: np.ndarray
    obs_scale: np.ndarray
    rng: np.random.Generator
    collected_rows: int = 4

    @classmethod
    def make(cls, config: Any, seed: int, size: int | None = None) -> "NStepDraws":
        rng = np.random.default_rng(seed)
        n = size or max(10 * config.batch_size, 1000)
        low, high = np.asarray(config.action_low), np.asarray(config.action_high)
        obs_mean = rng.uniform(-3.0, 3.0, config.obs_dim)
        obs_scale = np.exp(rng.uniform(np.log(0.2), np.log(5.0), config.obs_dim))
        observe = lambda rows: obs_mean + obs_scale * rng.standard_normal((rows, config.obs_dim))
        k = rng.integers(1, config.n_step + 1, n)
        width = config.v_max - config.v_min
        one_step = 0.05 * width * rng.standard_normal((n, config.n_step))
        reward = np.sum(np.where(np.arange(config.n_step) < k[:, None], one_step * config.gamma ** np.arange(
            config.n_step), 0.0), axis=1)
        bootstrap = (rng.random(n) > 0.125).astype(np.float64)
        kind = rng.random(n)
        beyond = kind < 0.1   # half above v_max, half below v_min (by up to half the support's width)
        reward = np.where(beyond, np.where(kind < 0.05, config.v_max, config.v_min)
                          + np.sign(0.05 - kind) * rng.uniform(0.0, 0.5 * width, n), reward)
        on_atom = (kind >= 0.1) & (kind < 0.15)
        atoms = np.linspace(config.v_min, config.v_max, config.num_atoms)
        reward = np.where(on_atom, atoms[rng.integers(0, config.num_atoms, n)], reward)
        bootstrap = np.where(on_atom, 0.0, bootstrap)
        return cls(obs=observe(n), action=rng.uniform(low, high, (n, config.act_dim)), next_obs=observe(n),
                   reward=reward, bootstrap=bootstrap, discount=config.gamma ** k.astype(np.float64),
                   obs_mean=obs_mean, obs_scale=obs_scale, rng=rng)

    def next(self, batch_size: int, act_dim: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The next step's arrays (collected observations, then the batch in ``Batch``'s order) and N(0, 1)
        target-policy noise, in float64."""
        collected = self.obs_mean + self.obs_scale * self.rng.standard_normal((self.collected_rows, self.obs.shape[1]))
        idx = self.rng.integers(0, self.obs.shape[0], batch_size)
        batch = (collected, self.obs[idx], self.action[idx], self.next_obs[idx], self.reward[idx],
                 self.bootstrap[idx], self.discount[idx])
        return batch, self.rng.standard_normal((batch_size, act_dim))


def make_draws(config: TD3Config, seed: int) -> SharedDraws | NStepDraws:
    """The shared draws of ``config``'s algorithm: n-step ones for fasttd3, Fujimoto's batches otherwise."""
    return NStepDraws.make(config, seed) if config.algo == "fasttd3" else SharedDraws.make(config, seed)


# -- the engine ----------------------------------------------------------------------------------

def _delayed(reported: dict) -> dict:
    return {name: value for name, value in reported.items() if family(name) in DELAYED_FAMILIES}


def held_families(config: TD3Config) -> tuple[str, ...]:
    """The families that must not change on the updates that do not step the actor."""
    # FastTD3 has no actor target and moves its critic target on every update, like "every_update".
    return ("actor",) if config.target_update == "every_update" or config.algo == "fasttd3" else DELAYED_FAMILIES


def _exact(value: Any) -> bool:
    """An integer or boolean quantity (counters, the normaliser's count, the CDQ choice): compared exactly."""
    return np.asarray(value).dtype.kind in "biu"


def _exact_mismatches(name: str, config: TD3Config, dtype: str, reported: Sequence[dict]) -> int:
    if name == "cdq_choice":
        return cdq_mismatches(config, dtype, reported[0], reported[1])
    return int(np.sum(np.asarray(reported[0][name]) != np.asarray(reported[1][name])))


def cdq_mismatches(config: TD3Config, dtype: str, a: dict, b: dict) -> int:
    """Samples where the two sides' ``cdq_choice`` differ, leaving out ties within rounding (``CDQ_TIE``):
    the expected values are those of ``a``'s ``projected`` on the support."""
    support = np.linspace(config.v_min, config.v_max, config.num_atoms)  # type: ignore[attr-defined]
    values = np.asarray(a["projected"], np.float64) @ support
    tie = np.abs(values[0] - values[1]) <= CDQ_TIE[dtype] * np.max(np.abs(support))
    return int(np.sum((np.asarray(a["cdq_choice"]) != np.asarray(b["cdq_choice"])) & ~tie))


def _schedule_errors(reported: dict, before: dict, actor_iteration: bool,
                     held: tuple[str, ...] = DELAYED_FAMILIES) -> int:
    """Departures of one side from the delayed-update schedule at one update (0 if none)."""
    if "actor_updated" not in reported:
        raise KeyError("an adapter's update() must report `actor_updated`")
    errors = int(bool(reported["actor_updated"]) != actor_iteration)
    if not actor_iteration:  # (on actor iterations a zero gradient may legitimately move nothing)
        for fam in held:
            errors += int(any(not np.array_equal(before[name], value) for name, value in reported.items()
                              if family(name) == fam and name in before))
    return errors


def compare_adapters(a: Adapter, b: Adapter, config: TD3Config, *, dtype: str = "float64", updates: int = 1000,
                     seed: int = 0, tol: float | None = None, resync: bool | None = None,
                     progress: bool = False,
                     batches: Iterable[tuple[Sequence[Any], Any]] | None = None) -> ParityReport:
    """Run ``updates`` updates of adapters ``a`` and ``b`` in lockstep and compare after each.

    ``b`` starts from ``a``'s state (which need not be fresh: update ``it`` of the comparison is update
    ``step + it`` of the schedule). ``config`` gives the batch size, the action box and
    ``policy_freq``; both adapters must have been built for it and for ``dtype``. ``tol`` overrides
    the per-quantity default tolerances (``default_tolerance``). ``resync`` (default: on for
    float32, off for float64) loads ``a``'s state into ``b`` before every update, so each comparison
    measures one update's rounding rather than the drift of two float32 trajectories (which
    ``resync=False`` shows). ``batches``, a list of ``(batch, target_noise)`` in the comparison's
    dtype, replaces the synthetic draws (then ``updates`` is its length and ``seed`` is unused).
    """
    ndtype = dtype_named(dtype)
    resync = (dtype == "float32") if resync is None else resync
    start = a.state()
    b.load(start)
    done = int(start["step"])   # updates ``a`` had done before: the delayed schedule counts on from there
    before = [_delayed(start), _delayed(start)]
    given = list(batches) if batches is not None else None
    if given is not None:
        updates = len(given)
    draws = make_draws(config, seed) if given is None else None
    theirs = set(b.quantities)
    names = [name for name in a.quantities if name in theirs]
    tracker = Tracker()
    for name in names:
        exact = name in COUNTERS or name in ("cdq_choice", "obs_normalizer.count")
        tracker.expect(name, 0.0 if exact else default_tolerance(dtype, name) if tol is None else tol)
    tracker.expect("schedule", 0.0)
    held = held_families(config)

    iterator = range(1, updates + 1)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=f"parity {config.algo} {dtype}", unit="upd")
    for it in iterator:
        if resync and it > 1:
            state = a.state()
            b.load(state)
            before[1] = _delayed(state)
        if given is not None:
            fields, noise = given[it - 1]
        else:
            assert draws is not None   # made above whenever no batches were given
            fields, noise = draws.next(config.batch_size, config.act_dim)
        batch, noise = tuple(np.asarray(x).astype(ndtype) for x in fields), np.asarray(noise).astype(ndtype)
        reported = [a.update(batch, noise), b.update(batch, noise)]

        actor_iteration = (done + it) % config.policy_freq == 0
        checks = [name for name in names
                  if (actor_iteration or family(name) not in ACTOR_STEP_FAMILIES)
                  and name in reported[0] and name in reported[1]]
        exactly = {name for name in checks if _exact(reported[0][name]) or _exact(reported[1][name])}
        differences = compare([(name, reported[0][name], reported[1][name]) for name in checks
                               if name not in exactly])
        for name in checks:   # in report order, so the first divergence is the first quantity computed
            if name in exactly:
                tracker.record_exact(name, _exact_mismatches(name, config, dtype, reported), it)
            else:
                tracker.record(name, *differences[name], it)
        # After the values: a tensor that moved when it should not have is named by its value first.
        errors = sum(_schedule_errors(out, prev, actor_iteration, held) for out, prev in zip(reported, before))
        tracker.record_exact("schedule", errors, it)
        before = [_delayed(out) for out in reported]
    return ParityReport(config.algo, dtype, updates, tracker.stats, tracker.first, backends=(a.name, b.name))


def run_parity(config: TD3Config, *, dtype: str = "float64", updates: int = 1000, seed: int = 0,
               tol: float | None = None, agent: Any = None, resync: bool | None = None,
               progress: bool = False) -> ParityReport:
    """Our JAX update against the PyTorch reference: ``compare_adapters(JaxAdapter, TorchRefAdapter)``.

    Both start from the JAX initialisation of ``config`` with ``PRNGKey(seed)``; ``seed`` also seeds
    the shared batches and noise. ``agent`` may be any object with torch_ref's interface (e.g. a
    modified reference, to see where it departs); by default it is the torch_ref agent for
    ``config``. See ``compare_adapters`` for ``tol`` and ``resync``.
    """
    require_torch("run_parity (the PyTorch reference's side)")
    ours: Adapter
    reference: Adapter
    if config.algo == "fasttd3":
        from jax_td3.adapters.fasttd3_jax import FastTD3JaxAdapter
        from jax_td3.adapters.fasttd3_torch_ref import FastTD3TorchRefAdapter

        ours = FastTD3JaxAdapter(config, dtype, seed=seed)  # type: ignore[arg-type]  # a FastTD3Config
        reference = FastTD3TorchRefAdapter(config, dtype, agent=agent)  # type: ignore[arg-type]
    else:
        from jax_td3.adapters.jax import JaxAdapter
        from jax_td3.adapters.torch_ref import TorchRefAdapter

        ours = JaxAdapter(config, dtype, seed=seed)
        reference = TorchRefAdapter(config, dtype, agent=agent)
    return compare_adapters(ours, reference, config, dtype=dtype, updates=updates, seed=seed, tol=tol,
                            resync=resync, progress=progress)
