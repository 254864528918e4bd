"""Shared by tests/test_predict*.py and tests/test_bundle*.py: one tiny trained toy run
(16x16, 3 channels, a few steps) and its exported bundle, made once per session."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY as PIPELINE_TINY
from conftest import tiny_overrides
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# the pipeline tests' tiny run, with more samples per image (proposals need several)
TINY = [
    *(o for o in PIPELINE_TINY if not o.startswith(("sample.num_samples", "evaluate.ged"))),
    "sample.num_samples=8",
    "evaluate.ged_counts=[2,8]",
    "device=cpu",
    # sampling with declared independent regions, as the toy recipe did before the learned
    # coupling (tests/test_region_coupling.py covers the learned one end to end)
    "sample.independent_regions=true",
    "sample.region_coupling=none",
    "sample.region_pool=1",
    "sample.pool_critic=0",
    "sample.pool_target=pool",
    "refiner.coupling_steps=0",
    # F as trained: the class-bias refit (tests/test_recalibration.py) makes this tiny F, fitted
    # on random labels, leave no region below the threshold for the recombination to use
    "calibrator.recalibrate=none",
]


def tiny_recipe(tmp: Path, *extra: str):
    from carcli.recipe.load import load_recipe

    return load_recipe(
        str(REPO / "recipes" / "toy.yaml"),
        tiny_overrides(tmp, *extra, base=TINY),
    )


def write_recipe(tmp: Path) -> Path:
    """The same tiny recipe as a YAML file (for `carseg predict RECIPE`)."""
    from carcli.recipe.load import recipe_to_yaml

    path = tmp / "tiny.yaml"
    path.write_text(recipe_to_yaml(tiny_recipe(tmp)))
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(tmp, recipe, bundle folder) of a tiny trained toy run."""
    from carcli.bundle.export import run_export
    from carcli.stages.prepare import run_prepare
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    tmp = tmp_path_factory.mktemp("predict_run")
    r = tiny_recipe(tmp)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    bundle = run_export(r, quiet=True)
    return tmp, r, bundle


def split_images(tmp: Path) -> np.ndarray:
    with h5py.File(tmp / "data" / "test.h5", "r") as h5:
        return h5["image"][...]


def write_inputs(tmp: Path, folder: Path, n: int = 3, png: bool = True) -> Path:
    """The first n test images as .npy (exact) and as 8-bit PNGs of the raw image."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp / "data" / "test.h5", "r") as h5:
        x = h5["image"][:n]
        spec = json.loads(h5.attrs["preprocess"])
    mean = np.array(spec[1]["mean"], np.float32)
    std = np.array(spec[1]["std"], np.float32)
    for i, xi in enumerate(x):
        np.save(folder / f"arr{i}.npy", xi)
        if png:
            raw = xi.transpose(1, 2, 0) * std + mean
            u8 = np.clip(np.round(raw * 255), 0, 255).astype(np.uint8)
            Image.fromarray(u8).save(folder / f"img{i}.png")
    return folder
