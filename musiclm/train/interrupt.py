"""SIGTERM as Ctrl-C: what stops a run from outside (``kill``, a container stopping, a scheduler's
preemption) takes the same path as Ctrl-C, so whatever checkpoints on KeyboardInterrupt does so then
too. Kept free of torch: the recipe's parent process uses it as well as the trainer."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only: signal handlers can be
    set nowhere else); the previous handler is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
