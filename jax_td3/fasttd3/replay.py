"""FastTD3's host replay: n-step transitions built as the environments step, and per-environment
exploration scales.

``NStepReplayBuffer`` keeps, for each environment, a window of its last one-step transitions not yet
written as the start of an n-step transition. A start is written to the flat ring once its window is
complete: ``n_step`` steps later, or at the step that ended its episode (then every start pending in
that environment is written, each with its own shorter window, and the window is emptied). So an
n-step window never crosses an episode boundary, and sampling is uniform over finished n-step
transitions, as for TD3's ``ReplayBuffer``.

FastTD3 stores one-step transitions and assembles the windows when it samples; there, a time limit
inside a window does not stop the reward sum (only a termination does). Here any episode end stops
it, and the transition's ``next_obs`` is that step's true final observation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from jax_td3.buffer import RingSampling
from jax_td3.fasttd3.state import Batch

FIELDS = Batch._fields  # ("obs", "action", "next_obs", "reward", "bootstrap", "discount")
WINDOW_FIELDS = ("obs", "action", "reward", "next_obs")


class NStepReplayBuffer(RingSampling):
    """Ring of n-step transitions ``(obs, action, next_obs, reward, bootstrap, discount)`` fed one
    vector step of ``num_envs`` environments at a time.

    A transition starting at step t of an episode covers k steps: up to and including the first step
    that ended the episode (terminated or truncated), at most ``n_step``. ``reward`` is
    sum_{i<k} gamma^i r_{t+i} (summed in float64, then stored in ``dtype``); ``discount`` is gamma^k;
    ``next_obs`` is the observation after step t+k-1; ``bootstrap`` is 0 where that step terminated
    (also where it was truncated, with ``disable_bootstrap``), else 1. With ``n_step`` 1 these are
    exactly the one-step transitions.

    A transition reaches the ring up to ``n_step - 1`` vector steps after its start (at once if its
    episode ends first); ``len`` counts only those in the ring, not the pending starts. Within one
    ``add``, transitions are written environment by environment, oldest start first.
    """

    BATCH = Batch

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, num_envs: int, n_step: int, gamma: float,
                 disable_bootstrap: bool = False, dtype: DTypeLike = np.float32):
        if capacity < 1 or num_envs < 1 or n_step < 1:
            raise ValueError(f"capacity, num_envs and n_step must be >= 1, got {capacity}, {num_envs}, {n_step}")
        self.capacity, self.obs_dim, self.act_dim = int(capacity), int(obs_dim), int(act_dim)
        self.num_envs, self.n_step = int(num_envs), int(n_step)
        self.gamma, self.disable_bootstrap = float(gamma), bool(disable_bootstrap)
        self.dtype = np.dtype(dtype)
        # gamma^i as Python's float power computes it, looked up rather than recomputed per transition.
        self.powers = np.array([self.gamma ** i for i in range(self.n_step + 1)], np.float64)
        widths = dict(obs=obs_dim, action=act_dim, next_obs=obs_dim)
        self.arrays = {name: np.zeros((self.capacity, widths[name]) if name in widths else (self.capacity,),
                                      self.dtype) for name in FIELDS}
        self.position = 0   # where the next transition is written
        self.size = 0       # how many slots are filled
        self.written = 0    # transitions written since the start (overwritten ones included)
        # Per environment: a ring of n_step one-step transitions, its oldest pending step at window_head
        # and window_length pending steps (at most n_step - 1 between calls of add).
        n, e = self.n_step, self.num_envs
        self.window = {"obs": np.zeros((e, n, obs_dim), self.dtype), "action": np.zeros((e, n, act_dim), self.dtype),
                       "reward": np.zeros((e, n), np.float64), "next_obs": np.zeros((e, n, obs_dim), self.dtype)}
        self.window_head = np.zeros(e, np.int64)
        self.window_length = np.zeros(e, np.int64)

    def __len__(self) -> int:
        return self.size

    def pending(self) -> int:
        """One-step transitions held in the windows, not yet the start of a stored transition."""
        return int(self.window_length.sum())

    def add(self, obs: ArrayLike, action: ArrayLike, reward: ArrayLike, next_obs: ArrayLike,
            terminated: ArrayLike, truncated: ArrayLike, valid: ArrayLike | None = None) -> int:
        """One step of every environment (rows in environment order); ``next_obs`` is the true next
        observation (the final one where the episode ended). Returns how many transitions were written.

        ``valid`` (default all True) marks rows to keep: an invalid row (a non-finite observation or
        reward the loop drops) is not stored, and its environment's pending starts are written as
        windows cut short before it, bootstrapping from the last kept step's next observation, since
        no episode ended there. Its ``terminated``/``truncated`` are ignored.
        """
        e, n = self.num_envs, self.n_step
        rows = dict(obs=np.asarray(obs, self.dtype).reshape(e, self.obs_dim),
                    action=np.asarray(action, self.dtype).reshape(e, self.act_dim),
                    reward=np.asarray(reward, np.float64).reshape(e),
                    next_obs=np.asarray(next_obs, self.dtype).reshape(e, self.obs_dim))
        keep = np.ones(e, bool) if valid is None else np.asarray(valid, bool).reshape(e)
        terminal = np.asarray(terminated, bool).reshape(e) & keep
        time_limit = np.asarray(truncated, bool).reshape(e) & keep

        kept = np.flatnonzero(keep)
        slots = (self.window_head[kept] + self.window_length[kept]) % n
        for name in WINDOW_FIELDS:
            self.window[name][kept, slots] = rows[name][kept]
        self.window_length[kept] += 1

        ended = terminal | time_limit
        flushed = ended | ~keep          # every pending start is written and the window emptied
        full = keep & ~ended & (self.window_length == n)
        counts = np.where(flushed, self.window_length, np.where(full, 1, 0))
        bootstrap = np.where(terminal | (time_limit & self.disable_bootstrap), 0.0, 1.0)

        # One row per transition written: its environment, its start (0 = oldest pending) and its k.
        env = np.repeat(np.arange(e), counts)
        start = np.arange(len(env)) - np.repeat(np.cumsum(counts) - counts, counts)
        k = self.window_length[env] - start
        first = self.window_head[env] + start
        last = (self.window_head[env] + self.window_length[env] - 1) % n
        total = np.zeros(len(env), np.float64)
        for i in range(n):   # the same terms, in the same order, as summing sum_{i<k} gamma^i r_{t+i} one by one
            total += np.where(i < k, self.powers[i] * self.window["reward"][env, (first + i) % n], 0.0)
        values = dict(obs=self.window["obs"][env, first % n], action=self.window["action"][env, first % n],
                      next_obs=self.window["next_obs"][env, last], reward=total, bootstrap=bootstrap[env],
                      discount=self.powers[k])
        self._write(values, len(env))

        self.window_head[full] = (self.window_head[full] + 1) % n
        self.window_length[full] -= 1
        self.window_head[flushed] = 0
        self.window_length[flushed] = 0
        return len(env)

    def _write(self, values: dict[str, np.ndarray], count: int) -> None:
        """Write ``count`` transitions in order into the ring; only the last ``capacity`` can survive."""
        skip = max(0, count - self.capacity)
        slots = (self.position + np.arange(skip, count)) % self.capacity
        for name in FIELDS:
            self.arrays[name][slots] = values[name][skip:]
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)
        self.written += count

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The filled part of the ring, the pending windows and the settings they were built with; every
        value is a NumPy array or a number, so ``np.savez`` can hold it."""
        return {"capacity": self.capacity, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "num_envs": self.num_envs, "n_step": self.n_step, "gamma": self.gamma,
                "disable_bootstrap": self.disable_bootstrap,
                "position": self.position, "size": self.size, "written": self.written,
                **{name: self.arrays[name][: self.size].copy() for name in FIELDS},
                **{f"window_{name}": self.window[name].copy() for name in WINDOW_FIELDS},
                "window_head": self.window_head.copy(), "window_length": self.window_length.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` (also as read back from ``np.savez``), so that adding continues exactly
        as it would have; refuses one built with other settings."""
        for name in ("capacity", "obs_dim", "act_dim", "num_envs", "n_step", "gamma", "disable_bootstrap"):
            stored, own = np.asarray(state[name]).item(), getattr(self, name)
            if stored != own:
                raise ValueError(f"replay buffer {name} {stored} in the checkpoint differs from {own}")
        size = int(np.asarray(state["size"]))
        for name in FIELDS:
            stored = np.asarray(state[name])
            expected = (size, *self.arrays[name].shape[1:])
            if stored.shape != expected:
                raise ValueError(f"replay buffer field {name} has shape {stored.shape}, expected {expected}")
            self.arrays[name][:size] = stored
            self.arrays[name][size:] = 0
        for name in WINDOW_FIELDS:
            stored = np.asarray(state[f"window_{name}"])
            if stored.shape != self.window[name].shape:
                raise ValueError(f"replay buffer window {name} has shape {stored.shape}, expected "
                                 f"{self.window[name].shape}")
            self.window[name][...] = stored
        self.window_head[...] = np.asarray(state["window_head"])
        self.window_length[...] = np.asarray(state["window_length"])
        self.position, self.size = int(np.asarray(state["position"])), size
        self.written = int(np.asarray(state["written"]))


# -- per-environment exploration scales -------------------------------------------------------
def draw_exploration_scales(rng: np.random.Generator, num_envs: int, std_min: float, std_max: float) -> np.ndarray:
    """(num_envs,) exploration noise stds, uniform in [std_min, std_max): one per environment."""
    return rng.uniform(std_min, std_max, size=num_envs)


def redraw_ended(scales: np.ndarray, ended_mask: ArrayLike, rng: np.random.Generator, std_min: float,
                 std_max: float) -> np.ndarray:
    """``scales`` with a fresh draw for each environment whose episode ended (a new array).

    Call it once per vector step. It always draws ``len(scales)`` values, environment i taking draw i
    where it ended (FastTD3 also draws one per environment, though only on steps where some episode
    ended): the generator then advances by the same amount every step whatever ended, so its state
    is a function of the step count alone and a run resumed from a checkpoint (generator state and
    current scales) draws exactly what the uninterrupted run would have.
    """
    fresh = draw_exploration_scales(rng, len(scales), std_min, std_max)
    return np.where(np.asarray(ended_mask, bool).reshape(len(scales)), fresh, scales)
