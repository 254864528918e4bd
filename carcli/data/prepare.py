"""The `prepare` stage: build train/val/test.h5 in data.dir from data.source."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

from carcli.artefacts.run import Manifest, ensure_dir, stage_lock
from carcli.data.dataset import SPLITS, split_path, validate_dataset, write_dataset
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict as recipe_dict
from carcli.recipe.schema import Recipe
from carcli.ui import Reporter


def split_seed(seed: int, split: str) -> int:
    """A seed per split derived from the recipe seed (stable across Python versions)."""
    return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**31)


def run_prepare(recipe: Recipe, overwrite: bool = False, quiet: bool = False) -> list[Path]:
    """Write the three split files; refuses to replace existing ones without `overwrite`."""
    data = recipe.data
    out_dir = Path(data.dir)
    rep = Reporter(quiet)
    if data.source == "prepared":
        paths = [split_path(out_dir, s) for s in SPLITS]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CarsegError(
                f"data.source is 'prepared' but {', '.join(missing)} do not exist",
                hint="set data.source to a generator or point data.dir at prepared files",
            )
        for p in paths:
            validate_dataset(p)
        rep.line(f"{out_dir}: prepared files are valid; nothing to do")
        return paths
    ensure_dir(out_dir)
    existing = [str(split_path(out_dir, s)) for s in SPLITS if split_path(out_dir, s).exists()]
    if existing and not overwrite:
        raise CarsegError(
            f"dataset files already exist: {', '.join(existing)}",
            hint="pass --overwrite to make them again",
        )
    manifest = Manifest("prepare", recipe_dict(recipe), recipe.seed)
    t0 = time.time()
    with stage_lock(out_dir):
        if data.source == "synthetic":
            paths = _prepare_synthetic(recipe, out_dir, rep)
        else:
            raise CarsegError(
                f"data.source {data.source!r} is not available in this version",
                hint="use 'synthetic', or 'prepared' with files you made yourself",
            )
        for p in paths:
            validate_dataset(p)
        manifest.write(out_dir, [p.name for p in paths])
    rep.line(f"prepared {len(paths)} splits in {out_dir} ({time.time() - t0:.1f} s)")
    return paths


def _prepare_synthetic(recipe: Recipe, out_dir: Path, rep: Reporter) -> list[Path]:
    from carcli.data.synthetic import generate_synthetic

    d = recipe.data
    sizes = {"train": d.num_train, "val": d.num_val, "test": d.num_test}
    paths = []
    for split in SPLITS:
        s = generate_synthetic(
            sizes[split],
            size=d.size,
            channels=d.channels,
            num_classes=d.num_classes,
            seed=split_seed(recipe.seed, split),
        )
        path = write_dataset(
            split_path(out_dir, split),
            image=s.image,
            label=s.label,
            label_weight=s.label_weight,
            num_classes=d.num_classes,
            class_names=s.class_names,
            eval_classes=s.eval_classes,
            attrs={"source": "synthetic", "split": split},
        )
        rep.line(f"  {path}: {sizes[split]} images, {s.label.shape[1]} modes max")
        paths.append(path)
    return paths
