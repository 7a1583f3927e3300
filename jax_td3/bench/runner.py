"""What an implementation of the update suite is: built from a ``Setup``, it is a ``Runner`` to time,
or ``Unavailable`` with the reason (``implementations.build``)."""

from __future__ import annotations

import dataclasses
from typing import Callable


class Unavailable(RuntimeError):
    """This implementation cannot run on this machine; the message says why."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every implementation of one run shares."""

    torch_device: str = "cpu"
    replay_size: int = 100_000        # transitions in the buffer (filled with random data)
    scan_updates: int = 100           # K for the scan-fused runner
    vmap_agents: int = 8              # N for the vmapped runner
    bf16: bool = False                # bf16 matmuls (float32 storage); GPU rows only
    seed: int = 0


@dataclasses.dataclass
class Runner:
    call: Callable[[], object]
    sync: Callable[[object], None]
    updates_per_call: int           # counting every agent's update
    agents: int = 1
    notes: str = ""
