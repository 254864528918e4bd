"""Read and write `carseg.dataset/1` files (one HDF5 file per split).

Reading is lazy: `DatasetFile` keeps the HDF5 file open and reads rows on demand, so a split
far larger than memory works; `read_rows` sorts indices for h5py and restores their order.
The header and `DatasetInfo` are in `carcli.data.schema`, the full check
(`validate_dataset`) in `carcli.data.dataset_check`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.artefacts.run import atomic_path
from carcli.data.dataset_check import validate_dataset
from carcli.data.schema import SCHEMA, Classes, open_h5, read_info

__all__ = [
    "SCHEMA",
    "SPLITS",
    "Classes",
    "DatasetFile",
    "open_h5",
    "read_info",
    "split_path",
    "write_dataset",
]

SPLITS = ("train", "val", "test")


def split_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.h5"


class DatasetFile:
    """An open dataset split; use as a context manager or call close()."""

    def __init__(self, path: str | Path, validate: bool = False) -> None:
        self.path = Path(path)
        if validate:
            validate_dataset(self.path)
        self.h5 = open_h5(self.path, "dataset", "carseg prepare RECIPE")
        self.info = read_info(self.h5, self.path)

    def __enter__(self) -> DatasetFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.h5.close()

    def __len__(self) -> int:
        return self.info.n

    def read_rows(self, name: str, rows: np.ndarray | slice) -> np.ndarray:
        """Rows of dataset `name` (image, label, label_weight, blackbox) in the order given."""
        ds = self.h5[name]
        if isinstance(rows, slice):
            return ds[rows]
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        block = ds[uniq]
        out = np.empty((rows.size, *ds.shape[1:]), dtype=ds.dtype)
        out[order] = block[inverse]
        return out

    def weights(self, rows: np.ndarray | slice) -> np.ndarray:
        """label_weight rows, or uniform weights when the file has none."""
        if self.info.has_weights:
            return self.read_rows("label_weight", rows).astype(np.float32)
        n = len(range(*rows.indices(self.info.n))) if isinstance(rows, slice) else len(rows)
        a = self.info.num_annotations
        return np.full((n, a), 1.0 / a, dtype=np.float32)


def write_dataset(
    path: str | Path,
    *,
    image: np.ndarray,
    label: np.ndarray,
    label_weight: np.ndarray | None = None,
    classes: Classes | None = None,
    blackbox: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write one split atomically (temp file + rename), chunked per image and compressed.

    With ``classes`` the split is a segmentation split, without them a regression split.
    ``extra`` holds further datasets stored as given (e.g. the regression task's mixture)."""
    path = Path(path)
    task = "regression" if classes is None else "segmentation"
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["schema"] = SCHEMA
        h5.attrs["task"] = task
        if classes is not None:
            k = classes.num_classes
            h5.attrs["num_classes"] = int(k)
            h5.attrs["ignore_index"] = int(classes.ignore_index)
            names = classes.class_names or [str(i) for i in range(k)]
            h5.attrs["class_names"] = json.dumps(list(names))
            if classes.eval_classes is not None:
                h5.attrs["eval_classes"] = json.dumps([int(c) for c in classes.eval_classes])
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        rows = task == "segmentation"
        image = image.astype(image.dtype if image.dtype == np.float16 else np.float32)
        _put(h5, "image", image, rows)
        _put(h5, "label", label, rows)
        if label_weight is not None:
            _put(h5, "label_weight", label_weight.astype(np.float32), rows)
        if blackbox is not None:
            _put(h5, "blackbox", blackbox, rows)
        for name, arr in (extra or {}).items():
            _put(h5, name, arr, rows)
    return path


def _put(h5: h5py.File, name: str, arr: np.ndarray, per_row: bool = True) -> None:
    """Image-like arrays are chunked one row per chunk and compressed; the small rows of
    the regression task (per_row=False) are stored contiguously."""
    chunks = (1, *arr.shape[1:]) if per_row and arr.ndim >= 3 and arr.shape[0] > 0 else None
    h5.create_dataset(
        name,
        data=arr,
        chunks=chunks,
        compression="gzip" if chunks else None,
        compression_opts=1 if chunks else None,
    )
