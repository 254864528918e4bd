"""Ctrl-C and preemption: SIGINT and SIGTERM.

A cluster ends a job with SIGTERM (SLURM sends it before the kill at a time limit or on
preemption); a user presses Ctrl-C (SIGINT). Both are answered the same way, with the exit
status a shell gives a process killed by that signal (128 + its number: 130, 143):

* training (:class:`StopRequest`, installed by the shared loop): the first signal asks the
  loop to stop after the current step; the loop writes the resumable checkpoint and raises
  :class:`Interrupted` naming the `--resume` command. A second signal aborts at once.
* stages that keep finished work as they go (`sample`, `predict`: :func:`stops_at_once`):
  either signal stops at once, and the line says what was kept and how to continue.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from carcli.errors import Interrupted, exit_status

__all__ = ["Interrupted", "StopRequest", "exit_status", "stops_at_once"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopRequest:
    """SIGINT / SIGTERM while training: the first one is remembered (`signum`), a second one
    raises KeyboardInterrupt at once. Outside the main thread (where Python cannot install
    handlers) it does nothing and signals keep their usual effect."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second signal: abort at once
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if _main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


@contextlib.contextmanager
def stops_at_once(message: str) -> Iterator[None]:
    """SIGINT or SIGTERM inside the block stops it at once, as Interrupted(signum, message)."""
    previous = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, message)

    if _main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT, message) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
