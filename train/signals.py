"""Ctrl-C and SIGTERM during training: save a checkpoint, then stop."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Stoppable(Protocol):
    """What :func:`stop_on_signals` needs: a stop flag and a signal-safe request."""

    stop_requested: bool

    def request_stop(self) -> None: ...


@contextmanager
def stop_on_signals(trainer: Stoppable) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM ask ``trainer`` to save and stop; a second Ctrl-C aborts.

    Args:
        trainer: the trainer to stop.
    """
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested:  # second request: stop now, without saving
            raise KeyboardInterrupt
        trainer.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
