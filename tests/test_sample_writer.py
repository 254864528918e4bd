"""The sample stage's background writer (#19): the bank is bit for bit the one the same writes
make inline and the one an interrupted, resumed run makes; an error on the writer thread
surfaces in the caller with its own type and message; no writer thread outlives the stage."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import tiny_recipe, trained

import carcli.sampling.chunks as chunks_mod
from carcli.sampling.writer import ChunkWriter as _Writer
from carcli.stages.sample import run_sample

__all__ = ["trained"]  # the session fixture, imported for pytest


def _run(tmp: Path, root: Path, *extra: str):
    """The trained tiny run's F and G in a run folder of its own (chunks of 2 images)."""
    for stage in ("calibrator", "refiner"):
        if not (root / "run" / stage).exists():
            shutil.copytree(tmp / "run" / stage, root / "run" / stage)
    return tiny_recipe(tmp, f"run_dir={root / 'run'}", "sample.chunk_size=2", *extra)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_writer_thread() -> bool:
    return not any(t.name == "carseg-writer" for t in threading.enumerate())


def test_background_bank_is_bit_for_bit_inline_and_resumed(trained, tmp_path, monkeypatch):
    tmp, _, _ = trained
    r = _run(tmp, tmp_path)
    background = run_sample(r, overwrite=True, quiet=True)
    ref = _sha(background)
    monkeypatch.setattr(chunks_mod, "BACKGROUND_WRITER", False)
    assert _sha(run_sample(r, overwrite=True, quiet=True)) == ref
    monkeypatch.setattr(chunks_mod, "BACKGROUND_WRITER", True)
    # interrupted after the first chunk was handed over, then the same command again: the
    # finished chunk is read back from its file, the others drawn; the same bytes
    original, calls = chunks_mod._write_chunk, []

    def failing(path, *a, **k):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(path, *a, **k)

    monkeypatch.setattr(chunks_mod, "_write_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        run_sample(r, overwrite=True, quiet=True)
    partial = background.parent / ".test.partial"
    assert (partial / "chunk-00000000.h5").exists()  # queued before the failure: saved
    assert not list(background.parent.glob(".test.h5.*.tmp"))  # the bank's temp file: gone
    assert _no_writer_thread()
    monkeypatch.setattr(chunks_mod, "_write_chunk", original)
    assert _sha(run_sample(r, overwrite=True, quiet=True)) == ref
    assert not partial.exists()


def test_writer_error_surfaces_with_its_message(trained, tmp_path, monkeypatch):
    tmp, _, _ = trained
    r = _run(tmp, tmp_path)
    original, saved = chunks_mod._save_chunk, []

    def save(path, *a):
        if saved:
            raise ValueError(f"injected failure writing {path.name}")
        saved.append(path.name)
        return original(path, *a)

    monkeypatch.setattr(chunks_mod, "_save_chunk", save)
    with pytest.raises(ValueError, match=r"^injected failure writing chunk-00000002\.h5$"):
        run_sample(r, overwrite=True, quiet=True)
    samples = tmp_path / "run" / "samples"
    assert (samples / ".test.partial" / "chunk-00000000.h5").exists()
    assert not (samples / "test.h5").exists() and not list(samples.glob(".test.h5.*"))
    assert _no_writer_thread()


def test_writer_that_died_does_not_block_the_caller():
    """A writer whose consumer fails at once: the caller's next put (or finish) raises that
    error instead of waiting on a full queue."""

    def consume():
        yield
        raise OSError(28, "No space left on device")

    item = (Path("x"), 0, 1, np.zeros(1), np.zeros(1))
    w = _Writer(consume(), background=True)
    with pytest.raises(OSError, match="No space left on device"):
        for _ in range(10):
            w.put(*item)
        w.finish()
    w._stop()
    assert _no_writer_thread()
    inline = _Writer(consume(), background=False)
    with pytest.raises(OSError, match="No space left on device"):
        inline.put(*item)
