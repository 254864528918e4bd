"""The sample bank `carseg.samples/1`: HDF5 of G's samples and F's probabilities per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.data.dataset import DatasetInfo, open_h5
from carcli.errors import CarsegError

SCHEMA = "carseg.samples/1"
MAKE_CMD = "carseg sample RECIPE"


def create_bank(path: Path, info: DatasetInfo, n: int, m: int, attrs: dict[str, Any]) -> h5py.File:
    """Create an empty bank file for `n` images and `m` samples (chunked per image, gzip)."""
    h5 = h5py.File(path, "w")
    h5.attrs["schema"] = SCHEMA
    for key, value in attrs.items():
        h5.attrs[key] = value
    if info.task == "segmentation":
        hw = info.label_shape
        h5.create_dataset(
            "samples",
            (n, m, *hw),
            dtype=np.uint8,
            chunks=(1, m, *hw) if n else None,
            compression="gzip" if n else None,
            compression_opts=1 if n else None,
        )
        h5.create_dataset(
            "calibration",
            (n, info.num_classes, *hw),
            dtype=np.float16,
            chunks=(1, info.num_classes, *hw) if n else None,
            compression="gzip" if n else None,
            compression_opts=1 if n else None,
        )
    else:
        d = info.label_shape[0]
        h5.create_dataset("samples", (n, m, d), dtype=np.float32)
        h5.create_dataset("calibration", (n, d), dtype=np.float32)
    h5.create_dataset("index", (n,), dtype=np.int64)
    return h5


class Bank:
    """An open, validated sample bank; rows are read lazily."""

    def __init__(self, path: Path, info: DatasetInfo) -> None:
        self.path = path
        self.h5 = open_h5(path, "sample bank", MAKE_CMD)
        try:
            self._check(info)
        except BaseException:
            self.h5.close()
            raise

    def _check(self, info: DatasetInfo) -> None:
        h5, p = self.h5, self.path
        schema = h5.attrs.get("schema")
        if isinstance(schema, bytes):
            schema = schema.decode()
        if schema != SCHEMA:
            raise CarsegError(
                f"{p}: schema is {schema!r}, expected {SCHEMA!r}", hint=f"make it with `{MAKE_CMD}`"
            )
        for name in ("samples", "calibration", "index"):
            if name not in h5:
                raise CarsegError(
                    f"{p}: dataset {name!r} is missing",
                    hint=f"make it again with `{MAKE_CMD} --overwrite`",
                )
        s, c, idx = h5["samples"], h5["calibration"], h5["index"]
        n = s.shape[0]
        if info.task == "segmentation":
            if s.ndim != 4 or s.dtype != np.uint8 or tuple(s.shape[2:]) != info.label_shape:
                raise CarsegError(
                    f"{p}: samples are {s.dtype} {s.shape}, expected uint8 "
                    f"[N, M, {', '.join(map(str, info.label_shape))}] for {info.path}"
                )
            if c.shape != (n, info.num_classes, *info.label_shape):
                raise CarsegError(
                    f"{p}: calibration has shape {c.shape}, expected "
                    f"{(n, info.num_classes, *info.label_shape)}"
                )
        elif s.ndim != 3 or s.shape[2:] != info.label_shape:
            raise CarsegError(f"{p}: samples have shape {s.shape}, expected [N, M, D_out]")
        if idx.shape != (n,):
            raise CarsegError(f"{p}: index has shape {idx.shape}, expected ({n},)")
        index = idx[...]
        if n and (index.min() < 0 or index.max() >= info.n or len(np.unique(index)) != n):
            raise CarsegError(
                f"{p}: index does not match {info.path} (rows out of range or repeated)",
                hint=f"sample this split again with `{MAKE_CMD} --overwrite`",
            )
        self.index = index
        self.n, self.num_samples = n, int(s.shape[1])

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.h5.close()

    def read(self, name: str, rows: slice) -> np.ndarray:
        return self.h5[name][rows]
