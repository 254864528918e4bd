"""Shared fixtures: tiny, valid `carseg.dataset/1` splits written into tmp_path.

Nothing here writes into the repository's data/ or runs/ folders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from carcli.data.dataset import Classes, write_dataset

REPO = Path(__file__).resolve().parents[1]
TOY_RECIPE = REPO / "recipes" / "toy.yaml"

# The tiny toy run most stage tests use (seconds per stage on the CPU)
TINY = [
    "data.synthetic.num_train=24",
    "data.synthetic.num_val=8",
    "data.synthetic.num_test=6",
    "data.synthetic.size=16",
    "calibrator.width=4",
    "calibrator.depth=2",
    "calibrator.steps=4",
    "calibrator.batch_size=4",
    "calibrator.val_every=2",
    "calibrator.val_size=4",
    "calibrator.checkpoint_every=2",
    "refiner.width=4",
    "refiner.depth=2",
    "refiner.steps=4",
    "refiner.batch_size=2",
    "refiner.num_samples=3",
    "refiner.val_every=2",
    "refiner.val_size=4",
    "refiner.checkpoint_every=2",
    "refiner.coupling_steps=50",
    "discriminator.width=4",
    "discriminator.n_on=2",
    "discriminator.n_off=1",
    "sample.num_samples=5",
    "sample.chunk_size=4",
    "sample.batch_size=3",
    "evaluate.ged_counts=[2,5]",
    "evaluate.hm_iou_samples=4",
    "threads=1",
]


def tiny_overrides(
    tmp: Path, *extra: str, base: Sequence[str] = TINY, run: str = "run"
) -> list[str]:
    """A test's recipe overrides: ``run_dir`` and ``data.dir`` under ``tmp``, the tiny-run
    settings ``base`` (default: TINY), then ``extra``."""
    return [f"run_dir={tmp / run}", f"data.dir={tmp / 'data'}", *base, *extra]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors as users see them, whatever CARSEG_DEBUG the shell running the tests has."""
    monkeypatch.delenv("CARSEG_DEBUG", raising=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (tests/reliability.py's recipe) with every stage up to the bank done, in
    a folder of its own per test module: data/, run/, r.yaml."""
    from reliability import write_recipe

    from carcli.recipe.load import load_recipe
    from carcli.stages.prepare import run_prepare
    from carcli.stages.sample import run_sample
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    tmp = tmp_path_factory.mktemp("finished")
    r = load_recipe(write_recipe(tmp / "r.yaml", tmp / "run", tmp / "data"))
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    run_sample(r, quiet=True)
    return tmp


@pytest.fixture(autouse=True)
def _ieee_denormals():
    """The stages flush denormals process-wide (`setup_torch`, as they set threads and seeds);
    the tests run stages in-process, so each test starts and ends with IEEE behaviour
    (hypothesis refuses to run with denormals flushed)."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def tiny_arrays(
    n: int = 4,
    annotations: int = 2,
    channels: int = 3,
    height: int = 16,
    width: int = 16,
    num_classes: int = 3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random but valid arrays: float32 images, uint8 labels (one ignore pixel), weights."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, channels, height, width)).astype(np.float32)
    label = rng.integers(0, num_classes, (n, annotations, height, width), dtype=np.uint8)
    label[0, 0, 0, 0] = 255  # ignore_index is allowed anywhere
    weight = rng.random((n, annotations)).astype(np.float64) + 0.1
    if annotations > 1:
        weight[-1, -1] = 0.0  # a padding annotation
    weight = (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)
    return {"image": image, "label": label, "label_weight": weight}


WriteSplit = Callable[..., Path]


@pytest.fixture
def make_arrays() -> Callable[..., dict[str, np.ndarray]]:
    """Factory: make_arrays(n=4, annotations=2, ...) -> image, label, label_weight arrays."""
    return tiny_arrays


@pytest.fixture
def write_split() -> WriteSplit:
    """Factory: write_split(path, n=4, annotations=2, ..., weights=True, **write_dataset kwargs).

    Shape keywords go to `tiny_arrays` (num_classes also to the `Classes`, with eval_classes
    and ignore_index); any other keyword (image=, label=, blackbox=, classes=, ...) replaces
    what is passed to `write_dataset`.
    """

    def _write(
        path: str | Path,
        *,
        n: int = 4,
        annotations: int = 2,
        channels: int = 3,
        height: int = 16,
        width: int = 16,
        num_classes: int = 3,
        seed: int = 0,
        weights: bool = True,
        eval_classes: list[int] | None = None,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> Path:
        arrays = tiny_arrays(n, annotations, channels, height, width, num_classes, seed)
        params: dict[str, Any] = {
            "image": arrays["image"],
            "label": arrays["label"],
            "label_weight": arrays["label_weight"] if weights else None,
            "classes": Classes(
                num_classes,
                class_names=[f"class_{i}" for i in range(num_classes)],
                eval_classes=list(range(1, num_classes)) if eval_classes is None else eval_classes,
                ignore_index=ignore_index,
            ),
        }
        params.update(kwargs)
        return write_dataset(path, **params)

    return _write


@pytest.fixture
def tiny_dataset(tmp_path: Path, write_split: WriteSplit) -> Path:
    """One valid segmentation split: 4 images, 3x16x16, 2 annotations, 3 classes, weights."""
    return write_split(tmp_path / "data" / "train.h5")


@pytest.fixture
def tiny_data_dir(tmp_path: Path, write_split: WriteSplit) -> Path:
    """A data.dir holding valid train.h5, val.h5 and test.h5 (tiny, as `tiny_dataset`)."""
    out = tmp_path / "data"
    for i, split in enumerate(("train", "val", "test")):
        write_split(out / f"{split}.h5", seed=i)
    return out
