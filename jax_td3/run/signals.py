"""Stopping a run cleanly: SIGINT and SIGTERM become a flag the loop checks at its next safe point
(after a step in the Gymnasium loop, at a chunk end in the compiled one), where it checkpoints and stops."""

from __future__ import annotations

import signal


class StopSignals:
    """While entered, SIGINT/SIGTERM set ``received`` (the signal number) instead of interrupting."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
