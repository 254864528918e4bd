"""The sample bank `carseg.samples/1`: HDF5 of G's samples and F's probabilities per image."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.data.dataset import open_h5
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError

SCHEMA = "carseg.samples/1"
MAKE_CMD = "carseg sample RECIPE"


def make_command(h5: h5py.File | None, path: Path) -> str:
    """The command that makes this bank again: an imported bank (as its attributes say, or,
    when it cannot be opened, the manifest.json beside it) is imported again from its source;
    `carseg sample` would need a trained calibrator and refiner, which the importer of another
    method's samples may not have."""
    if h5 is not None:
        source, split = _attr(h5, "imported_from"), _attr(h5, "split")
    else:
        source, split = _recorded_import(path)
    if not source:
        return MAKE_CMD
    extra = f" --split {split}" if split in ("train", "val", "test") else ""
    return f"carseg import-samples RECIPE {shlex.quote(source)}{extra}"


def _recorded_import(path: Path) -> tuple[str, str]:
    """(source, split) when manifest.json beside `path` says import-samples wrote it."""
    try:
        manifest = json.loads((path.parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return "", ""
    if (
        not isinstance(manifest, dict)
        or manifest.get("stage") != "import-samples"
        or path.name not in (manifest.get("outputs") or [])
    ):
        return "", ""
    return str(manifest.get("imported_from") or ""), path.stem


def _attr(h5: h5py.File, name: str) -> str:
    value = h5.attrs.get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


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
        self.make_cmd = make_command(None, path)
        self.h5 = open_h5(path, "sample bank", self.make_cmd)
        self.task, self.num_classes = info.task, info.num_classes
        try:  # every read of the file, its attributes too, fails as "unreadable"
            self.make_cmd = make_command(self.h5, path)
            self.imported_from = _attr(self.h5, "imported_from") or None
            self._check(info)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            self.h5.close()
            raise _unreadable(path, exc, self.make_cmd) from None
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
                f"{p}: schema is {schema!r}, expected {SCHEMA!r}",
                hint=f"make it with `{self.make_cmd}`",
            )
        for name in ("samples", "calibration", "index"):
            if name not in h5:
                raise CarsegError(
                    f"{p}: dataset {name!r} is missing",
                    hint=f"make it again with `{self.make_cmd} --overwrite`",
                )
            if not isinstance(h5[name], h5py.Dataset) or h5[name].ndim == 0:
                raise CarsegError(
                    f"{p}: {name!r} is not an array",
                    hint=f"make it again with `{self.make_cmd} --overwrite`",
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
        elif s.ndim != 3 or s.shape[2:] != info.label_shape or s.dtype.kind != "f":
            raise CarsegError(f"{p}: samples are {s.dtype} {s.shape}, expected float [N, M, D_out]")
        elif c.shape != (n, *info.label_shape):
            raise CarsegError(f"{p}: calibration has shape {c.shape}, expected [N, D_out]")
        if c.dtype.kind != "f":
            raise CarsegError(f"{p}: calibration has dtype {c.dtype}, expected float16 or float32")
        if s.shape[1] < 1:
            raise CarsegError(f"{p}: samples hold no sample per image (M = 0)")
        if idx.shape != (n,) or idx.dtype.kind not in "iu":
            raise CarsegError(
                f"{p}: index is {idx.dtype} {idx.shape}, expected integers of shape ({n},)"
            )
        index = idx[...]
        if n and (index.min() < 0 or index.max() >= info.n or len(np.unique(index)) != n):
            raise CarsegError(
                f"{p}: index does not match {info.path} (rows out of range or repeated)",
                hint=f"make it again with `{self.make_cmd} --overwrite`",
            )
        self.index = index
        self.n, self.num_samples = n, int(s.shape[1])

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.h5.close()

    def read(self, name: str, rows: slice) -> np.ndarray:
        """Rows of `samples` or `calibration`, checked: class ids in range, finite values."""
        try:
            arr = self.h5[name][rows]
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise _unreadable(self.path, exc, self.make_cmd) from None
        if arr.size == 0:
            return arr
        if name == "samples" and self.task == "segmentation":
            if int(arr.max()) >= self.num_classes:
                raise CarsegError(
                    f"{self.path}: samples hold class id {int(arr.max())} >= num_classes "
                    f"{self.num_classes}",
                    hint=f"make it again with `{self.make_cmd} --overwrite`",
                )
        elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise CarsegError(
                f"{self.path}: {name} holds NaN or infinite values",
                hint=f"make it again with `{self.make_cmd} --overwrite`",
            )
        return arr


def _unreadable(path: Path, exc: BaseException, make_cmd: str = MAKE_CMD) -> CarsegError:
    return CarsegError(
        f"{path}: unreadable data ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
        hint=f"the file is truncated or corrupt; make it again with `{make_cmd} --overwrite`",
    )
