"""The rules both training loops follow, written once in a form either can call.

The host loop calls these with NumPy arrays and its NumPy generator's draws; the compiled
loop with JAX arrays and draws it made in bulk. The arithmetic is the same expression
either way, so a rule cannot drift between the loops.

- Warm-up: for the first ``random_steps`` environment steps the action is uniform over the
  box, ``low + (high - low) * u`` with ``u ~ U(0, 1)`` (NumPy's ``uniform`` computes exactly this).
- After it: the actor's action plus exploration noise, clipped to the box. Gaussian noise has
  the standard deviation ``expl_noise * action_scale`` per dimension (``expl_noise`` is in units of
  half the box width, as in Fujimoto's code for a symmetric box).
- Evaluation runs the noiseless policy on environments seeded with ``seed + EVAL_SEED_OFFSET``,
  so that every evaluation of a run starts from the same states, none of them a training start.
"""

from __future__ import annotations

from typing import Any, Callable

EVAL_SEED_OFFSET = 100

# A Python number, a NumPy array or a JAX array (traced or not): each rule below takes any of them.
Numeric = Any


def evaluation_seed(seed: Numeric) -> Numeric:
    """The seed of a run's evaluation environments (an int, or a JAX/NumPy integer array of seeds)."""
    return seed + EVAL_SEED_OFFSET


def in_warmup(step: Numeric, random_steps: Numeric) -> Numeric:
    """True while actions are uniformly random: ``step`` (0-based) is before ``random_steps``."""
    return step < random_steps


def warmup_action(uniform: Numeric, low: Numeric, high: Numeric) -> Numeric:
    """The uniform action over ``[low, high]`` from ``uniform`` draws in [0, 1)."""
    return low + (high - low) * uniform


def gaussian_std(expl_noise: Numeric, action_scale: Numeric) -> Numeric:
    """Per-dimension std of Gaussian exploration noise: ``expl_noise`` in units of the action scale."""
    return expl_noise * action_scale


def explore_action(clip: Callable[..., Numeric], policy_action: Numeric, noise: Numeric, low: Numeric,
                   high: Numeric) -> Numeric:
    """The action sent to the environment after warm-up: policy action plus noise, clipped to the box.

    ``clip`` is ``numpy.clip`` or ``jax.numpy.clip``.
    """
    return clip(policy_action + noise, low, high)
