"""The sample stage's chunk writer: HDF5 writes on one background thread, overlapping the
draws (``carseg sample``, carcli/stages/sample.py)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

_STOP = object()


class ChunkWriter:
    """Feeds the chunks drawn in this process to ``consume`` (a generator that receives
    ``(path, a, b, samples, calibration)`` items and writes them), on one background thread
    through a queue of one chunk, so that the HDF5 writes overlap the next draws; at most one
    drawn chunk waits in memory beside the one being written. ``background=False`` writes
    inline, in the caller. An error of the writer is raised again in the caller, the same
    exception (message and type), at its next ``put`` or at ``finish``. Leaving the ``with``
    block after a failure of the caller lets the writer save what was already queued (those
    chunk files are kept for the rerun), then stops it."""

    def __init__(self, consume: Generator[None, Any, None], background: bool = True) -> None:
        self.consume = consume
        self.error: BaseException | None = None
        self.done = False
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread: threading.Thread | None = None
        if background:
            self.thread = threading.Thread(target=self._run, name="carseg-writer", daemon=True)
            self.thread.start()
        else:
            self._start()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> None:
        try:
            next(self.consume)
        except StopIteration:
            self.done = True

    def _send(self, item: tuple) -> None:
        if self.done:
            raise RuntimeError("the writer received a chunk after its last one")
        try:
            self.consume.send(item)
        except StopIteration:
            self.done = True

    def _run(self) -> None:
        try:
            self._start()
            while (item := self.queue.get()) is not _STOP:
                self._send(item)
        except BaseException as exc:  # handed to the caller
            self.error = exc
        finally:
            self.consume.close()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, path: Path, a: int, b: int, samples: np.ndarray, calib: np.ndarray) -> None:
        item = (path, a, b, samples, calib)
        if self.thread is None:
            self._send(item)
            return
        while True:
            self._raise()
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until everything put is written; raise the writer's error, if any."""
        self._stop()
        self._raise()

    def _stop(self) -> None:
        if self.thread is None:
            self.consume.close()
            return
        while self.thread.is_alive():
            try:
                self.queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join()


__all__ = ["ChunkWriter"]
