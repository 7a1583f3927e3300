"""The schedule of every training loop: when learning starts, how many updates each step owes, and
when an evaluation or a checkpoint is due. The host loop (``loops.host``, one or N environments) and the
compiled loop (``loops.compiled``) call these rules and write none of their own.

Pure functions of counters, no state, so the same after a resume; those a compiled program calls
(``learns_at``, ``learning_step``, ``updates_at``) work on Python ints and JAX integer arrays alike.

Counting. A *vector step* steps all N environments (``num_envs``; N = 1 is the one-environment loop)
and writes N transitions; vector step v (0-based) takes the transitions v N .. v N + N - 1.
``learning_starts``, ``eval_every``, ``checkpoint_every`` and ``total_steps`` count environment steps
(transitions), transitions dropped as non-finite (``skip_nonfinite``) included.

- Learning starts after the first vector step that takes the run past ``learning_starts`` environment
  steps: vector step v learns when (v + 1) N > ``learning_starts``, i.e. v >= ``learning_starts`` // N
  (``learns_at``). Without dropped transitions this is the replay buffer holding more than
  ``learning_starts`` transitions (before it wraps); with them the schedule does not move.
- Step schedule: ``updates_per_step`` (U) is held as an exact fraction p/q (``update_fraction``); after
  the j-th vector step with learning on (j = 1, 2, ...) a loop has made floor(j p / q) updates in all, so
  the j-th such step makes floor(j p / q) - floor((j - 1) p / q) of them (``updates_at``). U = 1 is one
  update per vector step, U = 2 two, U = 0.25 one on every 4th (the 4th, 8th, ...), U = 1.5 alternately
  one and two.
- Episode schedule: after a vector step with learning on, ``updates_per_episode`` updates for each
  episode that ended in it, or (``"steps"``) as many as those episodes had steps (``episode_updates``).
- An evaluation is due after the vector step that reaches or passes a multiple of ``eval_every``, and
  after the last one (the run stops at the first vector step reaching ``total_steps``); a checkpoint
  after the one that reaches or passes a multiple of ``checkpoint_every`` before the end (the end
  writes its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

# ``update_fraction`` is validated with the settings (the bottom layer) and re-exported here, beside the rule
# that runs on it.
from jax_td3.settings import update_fraction  # noqa: F401

if TYPE_CHECKING:  # for annotations only: these rules run on Python ints without JAX
    import jax

    from jax_td3.settings import TrainSettings

# A step counter: a Python int on the host, a JAX integer array inside a compiled program.
Count = TypeVar("Count", int, "jax.Array")


def first_learning_step(learning_starts: int, num_envs: int) -> int:
    """The first vector step (0-based) with learning on: after it more than ``learning_starts`` environment
    steps have been taken."""
    return learning_starts // num_envs


def learning_step(vector_step: Count, learning_starts: int, num_envs: int) -> Count:
    """The learning step number of vector step ``vector_step`` (0 for the first with learning on; negative
    before it). Python ints or JAX integer arrays."""
    return vector_step - first_learning_step(learning_starts, num_envs)


def learns_at(vector_step: Count, learning_starts: int, num_envs: int) -> bool | jax.Array:
    """Whether vector step ``vector_step`` (0-based) has learning on. Python ints or JAX integer arrays."""
    return vector_step >= first_learning_step(learning_starts, num_envs)


def updates_at(learning_step: Count, p: int, q: int) -> Count:
    """Updates made at the learning step number ``learning_step`` (0 for the first vector step with learning
    on): floor(j p / q) - floor((j - 1) p / q) with j = ``learning_step`` + 1, computed from (j - 1) mod q so
    that it never overflows int32. Works on Python ints and on JAX integer arrays alike."""
    before = (learning_step % q) * p % q
    return (before + p) // q


def updates_after(vector_steps: int, learning_starts: int, num_envs: int, p: int, q: int) -> int:
    """Step schedule: the updates made in all after ``vector_steps`` vector steps (Python ints)."""
    return max(vector_steps - first_learning_step(learning_starts, num_envs), 0) * p // q


def total_updates(settings: TrainSettings, num_envs: int) -> int | None:
    """The updates a host run of ``settings`` makes in all (the step schedule: ``updates_after`` the vector
    steps that reach ``total_steps``); None with the episode schedule, whose count depends on how the episodes
    end. What a learning-rate schedule over the whole run (FastTD3's cosine) runs over."""
    if settings.update_schedule != "step":
        return None
    vector_steps = -(-settings.total_steps // num_envs)   # the run stops at the first reaching total_steps
    return updates_after(vector_steps, settings.learning_starts, num_envs, *update_fraction(settings.updates_per_step))


def episode_updates(ended_lengths: list[int], updates_per_episode: int | str) -> int:
    """Episode schedule: the updates owed for the episodes of lengths ``ended_lengths`` that just ended
    (``updates_per_episode`` each, or with ``"steps"`` one per step they had)."""
    if updates_per_episode == "steps":
        return sum(ended_lengths)
    assert isinstance(updates_per_episode, int)  # TrainSettings allows a positive int or "steps"
    return updates_per_episode * len(ended_lengths)


def owed_updates(settings: TrainSettings, num_envs: int, vector_step: int, ended_lengths: list[int],
                 fraction: tuple[int, int]) -> int:
    """The updates owed after vector step ``vector_step`` (0-based) of a host run of ``num_envs``
    environments with ``settings`` (``TrainSettings``: ``update_schedule``, ``learning_starts``,
    ``updates_per_episode``): ``updates_at`` with the step schedule, ``episode_updates`` with the episode
    schedule (``ended_lengths``: the episodes that ended in the step); none before learning starts.
    ``fraction``: ``update_fraction(settings.updates_per_step)``."""
    if not learns_at(vector_step, settings.learning_starts, num_envs):
        return 0
    if settings.update_schedule == "step":
        return updates_at(learning_step(vector_step, settings.learning_starts, num_envs), *fraction)
    return episode_updates(ended_lengths, settings.updates_per_episode)


def crosses_multiple(steps_before: int, steps_after: int, every: int) -> bool:
    """Whether going from ``steps_before`` to ``steps_after`` steps reaches or passes a multiple of ``every``."""
    return steps_after // every > steps_before // every


def evaluation_due(steps_before: int, steps_after: int, eval_every: int, total_steps: int) -> bool:
    """An evaluation after a vector step from ``steps_before`` to ``steps_after`` environment steps: at a
    multiple of ``eval_every`` reached or passed, and at the end of the run."""
    return crosses_multiple(steps_before, steps_after, eval_every) or steps_after >= total_steps


def checkpoint_due(steps_before: int, steps_after: int, checkpoint_every: int, total_steps: int) -> bool:
    """A periodic checkpoint after a vector step (or a chunk) from ``steps_before`` to ``steps_after``
    environment steps: at a multiple of ``checkpoint_every`` reached or passed, before the end (the end of
    a run writes its own)."""
    return crosses_multiple(steps_before, steps_after, checkpoint_every) and steps_after < total_steps
