"""Shared fixtures: tiny, valid `carseg.dataset/1` splits written into tmp_path.

Nothing here writes into the repository's data/ or runs/ folders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from carcli.data.dataset import write_dataset

REPO = Path(__file__).resolve().parents[1]
TOY_RECIPE = REPO / "recipes" / "toy.yaml"


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

    Shape keywords go to `tiny_arrays`; any other keyword (image=, label=, blackbox=, ...)
    replaces what is passed to `write_dataset`.
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
        **kwargs: Any,
    ) -> Path:
        arrays = tiny_arrays(n, annotations, channels, height, width, num_classes, seed)
        params: dict[str, Any] = {
            "image": arrays["image"],
            "label": arrays["label"],
            "label_weight": arrays["label_weight"] if weights else None,
            "num_classes": num_classes,
            "class_names": [f"class_{i}" for i in range(num_classes)],
            "eval_classes": list(range(1, num_classes)),
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
