"""A sample bank drawn in chunks (the `sample` stage's writing, :mod:`carcli.stages.sample`).

Each chunk of rows is drawn (:func:`carcli.sampling.sample.draw`) and handed to a
:class:`carcli.sampling.writer.ChunkWriter`, whose background thread saves it as
``chunk-<first row>.h5`` in the bank's ``.partial`` folder and, with one process, writes it
into the bank at once (:func:`assemble`); with several, rank 0 assembles the bank from the
chunk files once all are on disk. ``plan.json`` in the folder says what the chunks were made
from, so a rerun keeps only chunks made with the same inputs and settings (:func:`check_plan`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from carcli.artefacts.run import atomic_path, ensure_dir
from carcli.data.batches import BatchSource
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.sampling.bank import create_bank
from carcli.sampling.regions import CoupledRegions, IndependentRegions
from carcli.sampling.sample import draw
from carcli.sampling.writer import ChunkWriter
from carcli.ui import Reporter


@dataclass(frozen=True)
class Draws:
    """How this process draws: F and G as called, the split's rows, the draw settings."""

    F_net: Any
    G: Any
    source: BatchSource
    batch_size: int
    m: int
    noise_dim: int
    seed: int
    device: torch.device
    independent_regions: IndependentRegions | CoupledRegions | None = None
    chunk_samples: int = 0  # speed.sample_chunk


@dataclass(frozen=True)
class BankPlan:
    """The bank to assemble: its path, the chunk folder, every chunk, the split, M."""

    path: Path
    partial: Path
    chunks: list[tuple[int, int]]
    info: DatasetInfo
    m: int


def draw_chunks(
    mine: list[tuple[int, int]],
    draws: Draws,
    bank: BankPlan,
    attrs: Callable[[], dict[str, Any]],
    world: int,
    rep: Reporter,
    split: str,
) -> None:
    """Draw this process's chunks. One process: the writer also assembles the bank as the
    chunks come (and renames it into place after the last); several: each rank saves its
    chunks and rank 0 assembles the bank from the files once all are there."""
    left = sum(b - a for a, b in mine)
    total = bank.info.n if world == 1 else left
    drawn = {a for a, _ in mine}
    consume = (
        assemble(bank.path, bank.partial, bank.chunks, bank.info, bank.m, attrs(), drawn)
        if world == 1
        else _save_chunks(bank.partial)
    )
    with ChunkWriter(consume, BACKGROUND_WRITER) as writer:
        with rep.progress(total, f"sample {split}", start=total - left) as bar:
            for a, b in mine:
                _write_chunk(bank.partial / f"chunk-{a:08d}.h5", draws, a, b, bar, writer)
        writer.finish()


def check_plan(partial: Path, plan: dict, rep: Reporter) -> None:
    """Keep finished chunks only if they were made with the same inputs and settings."""
    plan_path = partial / "plan.json"
    if partial.exists():
        try:
            old = json.loads(plan_path.read_text())
        except (OSError, ValueError):
            old = None
        if old == plan:
            rep.line(f"resuming the interrupted bank in {partial}")
            return
        shutil.rmtree(partial)
    ensure_dir(partial)
    plan_path.write_text(json.dumps(plan))


BACKGROUND_WRITER = True
"""Write on a background thread (tests set False to compare with the same writes inline)."""


def _write_chunk(path: Path, d: Draws, a: int, b: int, bar: Any, writer: ChunkWriter) -> None:
    """Draw rows a..b and hand them to ``writer``, which saves them as the chunk file `path`."""
    samples, calibs = [], []
    for start in range(a, b, d.batch_size):
        rows = np.arange(start, min(b, start + d.batch_size))
        smp, calib = draw(
            d.F_net,
            d.G,
            d.source,
            rows,
            d.m,
            d.noise_dim,
            d.seed,
            d.device,
            independent_regions=d.independent_regions,
            chunk_samples=d.chunk_samples,
        )
        samples.append(smp)
        calibs.append(calib)
        bar.advance(len(rows))
    writer.put(path, a, b, np.concatenate(samples), np.concatenate(calibs))


def _save_chunk(path: Path, samples: np.ndarray, calib: np.ndarray) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("samples", data=samples)
        h5.create_dataset("calibration", data=calib)


def _save_chunks(partial: Path) -> Generator[None, Any, None]:
    """The writer's work with several processes: save each chunk file."""
    while True:
        path, _, _, samples, calib = yield
        _save_chunk(path, samples, calib)


def drive(gen: Generator[None, Any, None]) -> None:
    for _ in gen:
        raise RuntimeError("a chunk was expected from this process")


def assemble(
    bank_path: Path,
    partial: Path,
    chunks: list[tuple[int, int]],
    info,
    m: int,
    attrs: dict,
    drawn: set[int] | frozenset[int] = frozenset(),
) -> Generator[None, Any, None]:
    """Write the bank, chunk by chunk in order, and rename it into place after the last; a
    generator: each chunk starting in ``drawn`` is waited for (sent in as ``(path, a, b,
    samples, calibration)``, its chunk file saved first), the others are read from their
    chunk files. The same HDF5 calls in the same order whether the chunks come from memory
    or from files, so the bank is the same, bit for bit."""
    with atomic_path(bank_path) as tmp:
        h5 = create_bank(tmp, info, info.n, m, attrs)
        try:
            for a, b in chunks:
                if a in drawn:
                    path, a_got, _, samples, calib = yield
                    if a_got != a:
                        raise RuntimeError(f"chunk {a_got} came where chunk {a} was expected")
                    _save_chunk(path, samples, calib)
                else:
                    samples, calib = _read_chunk(partial, a, b)
                h5["samples"][a:b] = samples
                h5["calibration"][a:b] = calib
            h5["index"][...] = np.arange(info.n, dtype=np.int64)
        finally:
            h5.close()


def _read_chunk(partial: Path, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with h5py.File(partial / f"chunk-{a:08d}.h5", "r") as ch:
            return ch["samples"][...], ch["calibration"][...]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        (partial / f"chunk-{a:08d}.h5").unlink(missing_ok=True)
        raise CarsegError(
            f"chunk {a}..{b} in {partial} is unreadable ({exc}); it was removed",
            hint="run the same command again",
        ) from None
