"""Stopping a run cleanly: SIGINT and SIGTERM become a flag the loop checks at its next safe point
(after a step in the Gymnasium loop, at a chunk end in the compiled one), where it checkpoints and stops."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Literal


class StopSignals:
    """While entered, SIGINT/SIGTERM set ``received`` (the signal number) instead of interrupting."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> Literal[False]:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
