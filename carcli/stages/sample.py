"""`sample`: draw sample.num_samples segmentations per image of a split into a sample bank.

Noise is seeded per image (seed, row), so the bank does not depend on batch or chunk sizes,
nor on how many processes draw it: under torchrun the chunks go round-robin over the ranks
and rank 0 assembles the bank once all are on disk.
Work is done in chunks written to ``samples/.<split>.partial/``; a rerun keeps finished
chunks; the bank ``samples/<split>.h5`` appears (by rename) only when complete. The draws
themselves are :func:`carcli.sampling.sample.draw`, the chunks' drawing and writing
:mod:`carcli.sampling.chunks`. The HDF5 writes (each chunk's file and, with one process, the
compressed bank itself, chunk by chunk as they come) run on one background thread fed through
a bounded queue (:class:`carcli.sampling.writer.ChunkWriter`), so they overlap the next draws
instead of stalling them; the files are those the writes made inline.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from carcli import distributed
from carcli._version import __version__
from carcli.artefacts.run import (
    Manifest,
    RunLayout,
    ensure_dir,
    stage_lock,
)
from carcli.bundle.coupling import coupled_regions, run_coupling
from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict, recipe_to_yaml
from carcli.recipe.schema import Recipe
from carcli.runtime.device import setup_torch
from carcli.runtime.interrupt import stops_at_once
from carcli.runtime.networks import load_network, refiner_calibrator
from carcli.runtime.speed import accelerate
from carcli.runtime.speed import notes as speed_notes
from carcli.runtime.speed import settings as speed_settings
from carcli.runtime.staleness import require_fresh, stale_bank_error
from carcli.sampling.chunks import BankPlan, Draws, assemble, check_plan, draw_chunks, drive
from carcli.sampling.regions import CoupledRegions, IndependentRegions
from carcli.ui import Reporter


def run_sample(
    recipe: Recipe, overwrite: bool = False, quiet: bool = False, allow_stale: bool = False
) -> Path:
    """Draw the bank of sample.split. An existing bank is refused (saying whether it is stale)
    unless `overwrite`; F or G made from inputs that have changed since, unless
    `allow_stale`."""
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
            refusal = None if overwrite else stale_bank_error(recipe, s.split)
            if refusal is not None:  # says whether the bank is stale, not just there
                raise refusal

        distributed.from_main(claim)
        with DatasetFile(data_path, validate=True) as ds:
            info = ds.info
            regions = _recombination(recipe, info, layout.refiner)  # checked before any work
            device = setup_torch(recipe)
            for note in speed_notes(recipe, device):  # e.g. speed.cpu_bf16 without native bf16
                rep.line(note)
            F_net, G = _networks(f_path, g_path, info, device)
            stale = require_fresh(recipe, "sample", allow_stale)  # F and G are readable
            noise_dim = int(getattr(G, "noise_dim", recipe.refiner.noise_dim))
            manifest = Manifest("sample", recipe_to_dict(recipe), recipe.seed)
            manifest.staleness(allow_stale, stale)
            partial = out_dir / f".{s.split}.partial"
            chunks = [(a, min(info.n, a + s.chunk_size)) for a in range(0, info.n, s.chunk_size)]
            inputs = (data_path, f_path, g_path)
            bank = BankPlan(bank_path, partial, chunks, info, s.num_samples)
            hashed = inputs + _recombination_inputs(recipe, regions, layout.refiner)
            todo = distributed.from_main(lambda: _plan_chunks(recipe, manifest, hashed, bank, rep))
            manifest.extra.update(
                chunks=len(chunks), chunks_reused=len(chunks) - len(todo), **dist.describe()
            )
            # Under torchrun the chunks still to draw go round-robin over the ranks; per-image
            # noise makes each chunk the same whichever rank draws it.
            mine = todo[dist.rank :: dist.world]
            draws = _draws(recipe, F_net, G, BatchSource(ds), noise_dim, regions, device)
            attrs = lambda: _bank_attrs(recipe, manifest, inputs)  # noqa: E731
            with stops_at_once(_kept_note(partial, overwrite) if dist.main else ""):
                draw_chunks(mine, draws, bank, attrs, dist.world, rep, s.split)
            distributed.barrier()  # every rank's chunks are on disk
            if dist.main and dist.world > 1:
                drive(assemble(bank_path, partial, chunks, info, s.num_samples, attrs()))
        if dist.main:
            shutil.rmtree(partial, ignore_errors=True)
            manifest.extra["speed"] = speed_settings(recipe, device, 1, inference=True)
            manifest.write(out_dir, [bank_path.name], device=str(device))
    rep.line(f"sample bank written: {bank_path} ({info.n} images x {s.num_samples} samples)")
    return bank_path


def _draws(
    recipe: Recipe,
    F_net: torch.nn.Module,
    G: torch.nn.Module,
    source: BatchSource,
    noise_dim: int,
    regions: Any,
    device: torch.device,
) -> Draws:
    """What each chunk's draws need: F and G through the recipe's speed options, the split,
    the sample settings and the recombination ``regions`` (or None)."""
    s = recipe.sample
    return Draws(
        accelerate(F_net, recipe, device, inference=True),
        accelerate(G, recipe, device, inference=True),
        source,
        s.batch_size,
        s.num_samples,
        noise_dim,
        recipe.seed,
        device,
        regions,
        recipe.speed.sample_chunk,
    )


def _kept_note(partial: Path, overwrite: bool) -> str:
    """The line an interrupted `sample` prints (rank 0)."""
    again = "carseg sample RECIPE" + (" --overwrite" if overwrite else "")
    return (
        f"interrupted; the finished chunks are kept in {partial} and `{again}` continues from them"
    )


def _networks(
    f_path: Path, g_path: Path, info: DatasetInfo, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """F and G from their checkpoints, on ``device``, in eval mode."""
    F_net = load_network(f_path, "calibrator", "calibrator", info, "carseg train-calibrator RECIPE")
    G = load_network(g_path, "refiner", "refiner", info, "carseg train-refiner RECIPE")
    return F_net.to(device).eval(), G.to(device).eval()


def _plan_chunks(
    recipe: Recipe,
    manifest: Manifest,
    inputs: tuple[Path, ...],
    bank: BankPlan,
    rep: Reporter,
) -> list[tuple[int, int]]:
    """Rank 0: input hashes, the plan, and the chunks still to draw. `inputs`: the split, F,
    G, and the region coupling head where sample.region_coupling is learned."""
    roles = (f"data.{recipe.sample.split}", "calibrator", "refiner", "coupling", "discriminator")
    for role, p in zip(roles, inputs, strict=False):
        manifest.add_input(p, role)
    plan = {
        "seed": recipe.seed,
        "num_samples": recipe.sample.num_samples,
        "n": bank.info.n,
        "chunk_size": recipe.sample.chunk_size,
        "inputs": manifest.inputs,
    }
    if recipe.sample.independent_regions:  # (absent otherwise: older partial chunks still match)
        plan["independent_regions"] = [recipe.sample.region_threshold, recipe.sample.region_link]
    if recipe.sample.region_coupling != "none":
        plan["region_coupling"] = recipe.sample.region_coupling
    if recipe.sample.region_pool > 1:
        plan["region_pool"] = [recipe.sample.region_pool, recipe.sample.pool_critic]
        if recipe.sample.pool_target != "pool":
            plan["region_pool"].append(recipe.sample.pool_target)
    # Finished chunks made from the same inputs and settings are reused even with
    # --overwrite; the old bank stays in place until the new one replaces it.
    check_plan(bank.partial, plan, rep)
    return [(a, b) for a, b in bank.chunks if not (bank.partial / f"chunk-{a:08d}.h5").exists()]


def _recombination(
    recipe: Recipe, info: DatasetInfo, refiner_dir: Path
) -> IndependentRegions | CoupledRegions | None:
    """The recombination the recipe asks for (sample.independent_regions or
    sample.region_coupling), else None."""
    s = recipe.sample
    if not s.independent_regions and s.region_coupling == "none":
        return None
    key = "independent_regions" if s.independent_regions else "region_coupling"
    if info.task != "segmentation":
        off = "false" if s.independent_regions else "none"
        raise CarsegError(
            f"sample.{key} needs a segmentation dataset; this one is {info.task}: "
            f"set sample.{key}={off}"
        )
    if s.independent_regions:
        return IndependentRegions(s.region_threshold, s.region_link)
    files = run_coupling(recipe, refiner_dir)
    head_path = files.head
    if not head_path.is_file():
        raise CarsegError(
            f"sample.region_coupling=learned needs the region coupling head at {head_path}, "
            "which the refiner was trained without",
            hint="fit it beside the trained G (the refiner is not trained again) with "
            f"`carseg train-refiner RECIPE refiner.coupling_steps={_steps(recipe)} --resume`, "
            "or set sample.region_coupling=none",
        )
    return coupled_regions(files, info, "carseg train-refiner RECIPE")


def _recombination_inputs(recipe: Recipe, regions: Any, refiner_dir: Path) -> tuple[Path, ...]:
    """The files the recombination reads: the coupling head, and D where it weights the
    pool (sample.pool_critic)."""
    if not isinstance(regions, CoupledRegions):
        return ()
    files = run_coupling(recipe, refiner_dir)
    return (files.head,) if files.critic is None else (files.head, files.critic)


def _steps(recipe: Recipe) -> int:
    """The coupling head's steps to suggest: the recipe's, or the toy recipe's 600."""
    return recipe.refiner.coupling_steps or 600


def _bank_attrs(recipe: Recipe, manifest: Manifest, inputs: tuple[Path, ...]) -> dict[str, Any]:
    """The bank's attributes (docs/guide.md, "Sample bank": dataset and split, M, seed,
    weights' sha256, ...)."""
    data_path, f_path, g_path = inputs
    return {
        "dataset": str(data_path),
        "split": recipe.sample.split,
        "num_samples": recipe.sample.num_samples,
        "seed": recipe.seed,
        "calibrator_sha256": manifest.inputs[str(f_path)],
        "refiner_sha256": manifest.inputs[str(g_path)],
        "dataset_sha256": manifest.inputs[str(data_path)],
        "provenance": json.dumps(manifest.provenance, sort_keys=True),
        "recipe": recipe_to_yaml(recipe),
        "carseg_version": __version__,
    }
