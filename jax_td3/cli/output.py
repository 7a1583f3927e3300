"""Machine-readable output stays machine-readable: ``--json`` prints one JSON document on standard output.

Libraries write to standard output on their own: PyBullet's C code prints ``argv[0]=`` when an
environment connects, through C's ``stdout`` (file descriptor 1, buffered apart from Python's
``sys.stdout``). ``stdout_to_stderr`` points descriptor 1 at standard error while a command works,
so that chatter (and any Python ``print``) lands there, and flushes both buffers before pointing it
back, so nothing written inside arrives on standard output later.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from typing import IO, Any


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)   # every C stdio stream, as exit() would
    except (OSError, AttributeError):    # no C library to ask (not a POSIX build): nothing buffered there
        pass


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True) -> Iterator[IO[str]]:
    """While inside, everything written to file descriptor 1 (Python's ``print`` and C libraries alike) goes
    to standard error; a no-op when ``active`` is false. Yields a text stream on the real standard output,
    for the one document the command prints (``sys.stdout`` itself when not active)."""
    if not active:
        yield sys.stdout
        return
    sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    # Python's sys.stdout replaced by something not on descriptor 1 (a caller capturing it) keeps the document.
    document = os.fdopen(os.dup(saved), "w", encoding="utf-8") if _on_descriptor_1(sys.stdout) else None
    try:
        os.dup2(2, 1)
        yield document or sys.stdout
    finally:
        sys.stdout.flush()
        _flush_c_stdio()
        if document is not None:
            document.close()
        os.dup2(saved, 1)
        os.close(saved)


def _on_descriptor_1(stream: Any) -> bool:
    try:
        return stream.fileno() == 1
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is both of the last two
        return False


__all__ = ["stdout_to_stderr"]
