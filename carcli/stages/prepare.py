"""The `prepare` stage: build train/val/test.h5 in data.dir from data.source."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np

from carcli.artefacts.run import Manifest, ensure_dir, stage_lock
from carcli.data.dataset import SPLITS, Classes, split_path, write_dataset
from carcli.data.dataset_check import validate_dataset
from carcli.data.preprocess import ATTR, synthetic_spec, to_json
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict as recipe_dict
from carcli.recipe.schema import Recipe
from carcli.ui import Reporter

REAL_SOURCES = ("lidc-png", "lidc-phiseg", "lidc-pickle", "cityscapes")


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
        elif data.source == "regression":
            paths = _prepare_regression(recipe, out_dir, rep)
        elif data.source in REAL_SOURCES:
            paths = _prepare_real(recipe, out_dir, rep)  # validated before they are published
        else:
            raise CarsegError(
                f"data.source {data.source!r} is not available in this version",
                hint="use 'synthetic', or 'prepared' with files you made yourself",
            )
        for p in paths:
            if data.source not in REAL_SOURCES:
                validate_dataset(p)
        manifest.write(out_dir, [p.name for p in paths])
    rep.line(f"prepared {len(paths)} splits in {out_dir} ({time.time() - t0:.1f} s)")
    return paths


def split_sizes(recipe: Recipe) -> dict[str, int]:
    """Sizes of the generated splits (synthetic and regression sources)."""
    d = recipe.data
    g = d.regression if d.source == "regression" else d.synthetic
    return {"train": g.num_train, "val": g.num_val, "test": g.num_test}


def synthetic_split(recipe: Recipe, split: str):
    """The synthetic split `split` of a recipe, exactly as `prepare` writes it."""
    from carcli.data.synthetic import generate_synthetic
    from carcli.data.synthetic_draw import DrawConfig

    d = recipe.data.synthetic
    spec = DrawConfig(size=d.size, channels=d.channels, num_classes=d.num_classes)
    return generate_synthetic(split_sizes(recipe)[split], spec, seed=split_seed(recipe.seed, split))


def _prepare_synthetic(recipe: Recipe, out_dir: Path, rep: Reporter) -> list[Path]:
    d = recipe.data
    sizes = split_sizes(recipe)
    bb = _synthetic_blackbox(recipe, sizes) if d.blackbox_dir else {}  # all read before writing
    paths = []
    for split in SPLITS:
        s = synthetic_split(recipe, split)
        path = write_dataset(
            split_path(out_dir, split),
            image=s.image,
            label=s.label,
            label_weight=s.label_weight,
            classes=Classes(
                d.synthetic.num_classes, class_names=s.class_names, eval_classes=s.eval_classes
            ),
            blackbox=bb.get(split),
            attrs={
                "source": "synthetic",
                "split": split,
                ATTR: to_json(synthetic_spec(s.norm_mean, s.norm_std)),
                "class_colors": synthetic_class_colors(d.synthetic.num_classes),
            },
        )
        rep.line(f"  {path}: {sizes[split]} images, {s.label.shape[1]} modes max")
        paths.append(path)
    return paths


def synthetic_class_colors(k: int) -> list[list[int]]:
    """The colour each synthetic class is drawn in (its plain appearance), 0-255."""
    from carcli.data.synthetic_draw import CLASS_RGB

    return [[round(255 * float(v)) for v in CLASS_RGB[c]] for c in range(k)]


def _prepare_regression(recipe: Recipe, out_dir: Path, rep: Reporter) -> list[Path]:
    """The 1D bimodal regression data (data.regression.pi, .sigma) with its true mixture."""
    from carcli.data.regression import REGIONS, generate_bimodal

    d = recipe.data.regression
    sizes = split_sizes(recipe)
    paths = []
    for split in SPLITS:
        try:
            r = generate_bimodal(sizes[split], d.pi, d.sigma, split_seed(recipe.seed, split))
        except ValueError as exc:
            raise CarsegError(
                f"data: {exc}", hint="set data.regression.pi in [0, 1], data.regression.sigma > 0"
            ) from None
        path = write_dataset(
            split_path(out_dir, split),
            image=r.x,
            label=r.y,
            attrs={
                "source": "regression",
                "split": split,
                "pi": float(d.pi),
                "sigma": float(d.sigma),
                "regions": REGIONS,
            },
            extra={
                "mixture_mean": r.mixture_mean,
                "mixture_weight": r.mixture_weight,
                "mixture_std": r.mixture_std,
            },
        )
        rep.line(f"  {path}: {sizes[split]} points (pi {d.pi}, sigma {d.sigma})")
        paths.append(path)
    return paths


def _synthetic_blackbox(recipe: Recipe, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Predictions for the synthetic images, named `<split>_<index:06d>` (e.g. train_000012)."""
    from carcli.data.blackbox import BlackboxFolder

    d = recipe.data
    assert d.blackbox_dir is not None
    size = d.synthetic.size
    folder = BlackboxFolder(d.blackbox_dir, d.synthetic.num_classes)
    return {
        split: np.stack(
            [
                folder.load([f"{split}_{i:06d}"], f"{split} image {i}", (size, size))
                for i in range(n)
            ]
        )
        for split, n in sizes.items()
    }


def _prepare_real(recipe: Recipe, out_dir: Path, rep: Reporter) -> list[Path]:
    """LIDC (three formats) or Cityscapes from data.raw: every split and its cases CSV is
    written under a temporary name, validated, and only then renamed into place together."""
    from carcli.data import cityscapes, lidc, lidc_prepare
    from carcli.data.blackbox import BlackboxFolder
    from carcli.data.writer import staged_splits

    d = recipe.data
    if d.raw is None:
        raise CarsegError(
            f"data.raw is not set; the {d.source} source reads the public files from it",
            hint="set data.raw (see data/README.md for where to get the data)",
        )
    raw = Path(d.raw)
    if not raw.exists():
        raise CarsegError(
            f"data.raw {raw} does not exist",
            hint=f"get the {d.source} data (see data/README.md) and point data.raw at it",
        )
    cs = d.source == "cityscapes"
    blackbox = None
    if d.blackbox_dir:
        k = cityscapes.NUM_CLASSES if cs else len(lidc.CLASS_NAMES)
        blackbox = BlackboxFolder(d.blackbox_dir, k)
    with staged_splits(out_dir) as staged:
        if cs:
            cityscapes.prepare_cityscapes(raw, staged, blackbox, rep)
        else:
            lidc_prepare.prepare_lidc(
                d.source,
                raw,
                staged,
                seed=recipe.seed,
                allow_pickle=d.allow_pickle,
                lesion_only=d.lesion_only,
                blackbox=blackbox,
                rep=rep,
            )
        staged.validate()
        published = staged.commit()
    return [p for p in published if p.suffix == ".h5"]
