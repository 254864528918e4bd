"""`sample`: draw sample.num_samples segmentations per image of a split into a sample bank.

Noise is seeded per image (seed, row), so the bank does not depend on batch or chunk sizes,
nor on how many processes draw it: under torchrun the chunks go round-robin over the ranks
and rank 0 assembles the bank once all are on disk.
Work is done in chunks written to ``samples/.<split>.partial/``; a rerun keeps finished
chunks; the bank ``samples/<split>.h5`` appears (by rename) only when complete. The draws
themselves are :func:`carcli.sampling.sample.draw`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import torch

import carcli
from carcli import distributed
from carcli.artefacts.run import (
    Manifest,
    RunLayout,
    atomic_path,
    check_not_finished,
    ensure_dir,
    stage_lock,
)
from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict, recipe_to_yaml
from carcli.recipe.schema import Recipe
from carcli.runtime.device import setup_torch
from carcli.runtime.networks import load_network, refiner_calibrator
from carcli.runtime.speed import accelerate
from carcli.runtime.speed import settings as speed_settings
from carcli.sampling.bank import create_bank
from carcli.sampling.sample import draw
from carcli.ui import Reporter


def run_sample(recipe: Recipe, overwrite: bool = False, quiet: bool = False) -> Path:
    rep = Reporter(quiet or distributed.env_world()[0] > 0)  # rank 0 speaks for the job
    s = recipe.sample
    layout = RunLayout(Path(recipe.run_dir))
    bank_path = layout.bank(s.split)
    data_path = split_path(recipe.data.dir, s.split)
    g_path = layout.refiner / "model.safetensors"
    # the F that G was trained with: refiner/calibrator.safetensors after joint training
    f_path = refiner_calibrator(g_path, layout.calibrator / "model.safetensors")
    out_dir = layout.samples_dir()
    ensure_dir(out_dir)
    with distributed.session(recipe) as dist, contextlib.ExitStack() as held:

        def claim() -> None:  # rank 0 (or the only process): the folder's lock and check
            held.enter_context(stage_lock(out_dir))
            check_not_finished(bank_path, f"a {s.split} sample bank", overwrite)

        distributed.from_main(claim)
        with DatasetFile(data_path, validate=True) as ds:
            info = ds.info
            device = setup_torch(recipe)
            F_net = (
                load_network(
                    f_path, "calibrator", "calibrator", info, "carseg train-calibrator RECIPE"
                )
                .to(device)
                .eval()
            )
            G = (
                load_network(g_path, "refiner", "refiner", info, "carseg train-refiner RECIPE")
                .to(device)
                .eval()
            )
            noise_dim = int(getattr(G, "noise_dim", recipe.refiner.noise_dim))
            manifest = Manifest("sample", recipe_to_dict(recipe), recipe.seed)
            partial = out_dir / f".{s.split}.partial"
            chunks = [(a, min(info.n, a + s.chunk_size)) for a in range(0, info.n, s.chunk_size)]

            def plan_chunks() -> list[tuple[int, int]]:
                """Rank 0: input hashes, the plan, and the chunks still to draw."""
                for p in (data_path, f_path, g_path):
                    manifest.add_input(p)
                plan = {
                    "seed": recipe.seed,
                    "num_samples": s.num_samples,
                    "n": info.n,
                    "chunk_size": s.chunk_size,
                    "inputs": manifest.inputs,
                }
                # Finished chunks made from the same inputs and settings are reused even with
                # --overwrite; the old bank stays in place until the new one replaces it.
                _check_plan(partial, plan, rep)
                return [(a, b) for a, b in chunks if not (partial / f"chunk-{a:08d}.h5").exists()]

            todo = distributed.from_main(plan_chunks)
            manifest.extra.update(
                chunks=len(chunks), chunks_reused=len(chunks) - len(todo), **dist.describe()
            )
            # Under torchrun the chunks still to draw go round-robin over the ranks; per-image
            # noise makes each chunk the same whichever rank draws it.
            mine = todo[dist.rank :: dist.world]
            left = sum(b - a for a, b in mine)
            source = BatchSource(ds)
            F_call, G_call = (
                accelerate(F_net, recipe, device, inference=True),
                accelerate(G, recipe, device, inference=True),
            )
            total = info.n if dist.world == 1 else left
            with rep.progress(total, f"sample {s.split}", start=total - left) as bar:
                for a, b in mine:
                    _write_chunk(
                        partial / f"chunk-{a:08d}.h5",
                        F_call,
                        G_call,
                        source,
                        a,
                        b,
                        s.batch_size,
                        s.num_samples,
                        noise_dim,
                        recipe.seed,
                        device,
                        bar,
                    )
            distributed.barrier()  # every rank's chunks are on disk
            if dist.main:
                attrs = {
                    "dataset": str(data_path),
                    "split": s.split,
                    "num_samples": s.num_samples,
                    "seed": recipe.seed,
                    "calibrator_sha256": manifest.inputs[str(f_path)],
                    "refiner_sha256": manifest.inputs[str(g_path)],
                    "recipe": recipe_to_yaml(recipe),
                    "carseg_version": carcli.__version__,
                }
                _assemble(bank_path, partial, chunks, info, s.num_samples, attrs)
        if dist.main:
            shutil.rmtree(partial, ignore_errors=True)
            manifest.extra["speed"] = speed_settings(recipe, device, 1, inference=True)
            manifest.write(out_dir, [bank_path.name], device=str(device))
    rep.line(f"sample bank written: {bank_path} ({info.n} images x {s.num_samples} samples)")
    return bank_path


def _check_plan(partial: Path, plan: dict, rep: Reporter) -> None:
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


def _write_chunk(
    path: Path,
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    source: BatchSource,
    a: int,
    b: int,
    batch_size: int,
    m: int,
    noise_dim: int,
    seed: int,
    device: torch.device,
    bar,
) -> None:
    samples, calib = [], []
    for start in range(a, b, batch_size):
        rows = np.arange(start, min(b, start + batch_size))
        smp, cal = draw(F_net, G, source, rows, m, noise_dim, seed, device)
        samples.append(smp)
        calib.append(cal)
        bar.advance(len(rows))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("samples", data=np.concatenate(samples))
        h5.create_dataset("calibration", data=np.concatenate(calib))


def _assemble(
    bank_path: Path, partial: Path, chunks: list[tuple[int, int]], info, m: int, attrs: dict
) -> None:
    with atomic_path(bank_path) as tmp:
        h5 = create_bank(tmp, info, info.n, m, attrs)
        try:
            for a, b in chunks:
                try:
                    with h5py.File(partial / f"chunk-{a:08d}.h5", "r") as ch:
                        h5["samples"][a:b] = ch["samples"][...]
                        h5["calibration"][a:b] = ch["calibration"][...]
                except (OSError, KeyError, ValueError, TypeError) as exc:
                    (partial / f"chunk-{a:08d}.h5").unlink(missing_ok=True)
                    raise CarsegError(
                        f"chunk {a}..{b} in {partial} is unreadable ({exc}); it was removed",
                        hint="run the same command again",
                    ) from None
            h5["index"][...] = np.arange(info.n, dtype=np.int64)
        finally:
            h5.close()
