"""Batches prepared ahead of the training step by a background thread (`data.prefetch`).

The thread owns the batch generator's random stream and draws batches strictly in order, so
the sequence of batches is exactly the one drawn without prefetching. Each batch travels
with the generator's state right after it was drawn; `rng_state()` returns the state after
the last batch the training loop consumed, which is what a checkpoint must save: a resumed
run then continues the same stream, prefetching or not. With CUDA, `pin_memory` puts the
batch in page-locked memory so the copy to the GPU can overlap the step (non_blocking).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from carcli.data.batches import Batch, BatchSource

_DONE = object()


def _pinned(batch: Batch) -> Batch:
    return dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name).pin_memory()
            for f in dataclasses.fields(batch)
            if getattr(batch, f.name) is not None
        },
    )


class BatchPrefetcher:
    """`next()` returns the next batch of `draw(rng)`; `depth` batches are made ahead
    (0: none, everything happens in the caller's thread)."""

    def __init__(
        self,
        draw: Callable[[np.random.Generator], Batch],
        rng: np.random.Generator,
        depth: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self.draw, self.rng, self.depth, self.pin = draw, rng, depth, pin_memory
        self._state: dict[str, Any] = rng.bit_generator.state
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.draw(self.rng)
                if self.pin:
                    batch = _pinned(batch)
                item = (batch, self.rng.bit_generator.state)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer, raised there
            self._queue.put((_DONE, exc))

    def next(self) -> Batch:
        if self._thread is None:
            batch = self.draw(self.rng)
            self._state = self.rng.bit_generator.state
            return _pinned(batch) if self.pin else batch
        batch, state = self._queue.get()
        if batch is _DONE:
            raise state
        self._state = state
        return batch

    def rng_state(self) -> dict[str, Any]:
        """The generator's state after the last batch returned by next()."""
        return self._state

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def training_loader(
    source: BatchSource,
    batch_size: int,
    rng: np.random.Generator,
    soft: bool,
    depth: int,
    device: Any,
    modes: bool = False,
) -> BatchPrefetcher:
    """Random training batches of `source` (one annotation drawn per image, plus the label
    distribution with `soft`, every annotation with `modes`), `depth` made ahead, pinned when
    training on CUDA."""
    return BatchPrefetcher(
        lambda g: source.get(source.random_indices(g, batch_size), g, soft=soft, modes=modes),
        rng,
        depth,
        pin_memory=getattr(device, "type", str(device)) == "cuda",
    )
