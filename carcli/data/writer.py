"""Write dataset splits row block by row block, and publish all splits at once.

`SplitWriter` appends blocks of rows to a new `carseg.dataset/1` file (resizable, chunked,
gzip-compressed datasets), so a split larger than memory is never held whole. `StagedSplits`
hands out temporary names beside the final files and renames them only when every split (and
every companion file) is written and valid: an error anywhere leaves no partial dataset, and
files from an earlier run stay as they were.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.data.dataset import SCHEMA
from carcli.data.dataset_check import validate_dataset

LABEL_CHUNK_BYTES = 1 << 20  # label chunks of about 1 MB (several modes of one image)


class SplitWriter:
    """Append rows (image, label, optional label_weight / blackbox) to a new split file.

    Datasets are created at the first `append`, from the shapes and dtypes of that block;
    every later block must match. Use as a context manager.
    """

    def __init__(
        self,
        path: Path,
        *,
        num_classes: int,
        class_names: Sequence[str],
        eval_classes: Sequence[int] | None = None,
        ignore_index: int = 255,
        image_dtype: Any = np.float32,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.image_dtype = np.dtype(image_dtype)
        self.h5 = h5py.File(self.path, "w")
        self.n = 0
        h5 = self.h5
        h5.attrs["schema"] = SCHEMA
        h5.attrs["task"] = "segmentation"
        h5.attrs["num_classes"] = int(num_classes)
        h5.attrs["ignore_index"] = int(ignore_index)
        h5.attrs["class_names"] = json.dumps(list(class_names))
        if eval_classes is not None:
            h5.attrs["eval_classes"] = json.dumps([int(c) for c in eval_classes])
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()

    def _dataset(self, name: str, block: np.ndarray) -> h5py.Dataset:
        if name in self.h5:
            ds = self.h5[name]
            if ds.shape[1:] != block.shape[1:] or ds.dtype != block.dtype:
                raise ValueError(
                    f"{name}: block {block.dtype} {block.shape[1:]} does not match "
                    f"{ds.dtype} {ds.shape[1:]}"
                )
            return ds
        per_row = block.shape[1:]
        chunks = (1, *per_row) if per_row else None
        if name == "label" and block.ndim == 4:
            per_map = int(np.prod(per_row[1:]))
            a = max(1, min(per_row[0], LABEL_CHUNK_BYTES // max(1, per_map)))
            chunks = (1, a, *per_row[1:])
        return self.h5.create_dataset(
            name,
            shape=(0, *per_row),
            maxshape=(None, *per_row),
            dtype=block.dtype,
            chunks=chunks,
            compression="gzip" if chunks else None,
            compression_opts=1 if chunks else None,
        )

    def append(
        self,
        image: np.ndarray,
        label: np.ndarray,
        label_weight: np.ndarray | None = None,
        blackbox: np.ndarray | None = None,
    ) -> None:
        """Append a block: image [B, C, H, W], label uint8 [B, A, H, W] (+ optional rows)."""
        blocks = {"image": image.astype(self.image_dtype, copy=False), "label": label}
        if label_weight is not None:
            blocks["label_weight"] = label_weight.astype(np.float32, copy=False)
        if blackbox is not None:
            blocks["blackbox"] = blackbox
        b = image.shape[0]
        for name, block in blocks.items():
            ds = self._dataset(name, block)
            ds.resize(self.n + b, axis=0)
            ds[self.n : self.n + b] = block
        self.n += b


class StagedSplits:
    """Temporary names for a dataset's files in `out_dir`, renamed together on `commit`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.staged: dict[Path, Path] = {}  # final -> temporary

    def path(self, name: str) -> Path:
        """A temporary path that becomes `out_dir/name` on commit."""
        final = self.out_dir / name
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        self.staged[final] = tmp
        return tmp

    def write_cases(self, split: str, cases: Sequence[tuple[str, str]]) -> Path:
        """`<split>.cases.csv`: row, case id and group (patient / city) of every image."""
        tmp = self.path(f"{split}.cases.csv")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["row", "case", "group"])
            for i, (case, group) in enumerate(cases):
                w.writerow([i, case, group])
        return tmp

    def validate(self) -> None:
        for final, tmp in self.staged.items():
            if final.suffix == ".h5":
                validate_dataset(tmp)

    def commit(self) -> list[Path]:
        """Rename every staged file onto its final name; returns the final paths."""
        for final, tmp in self.staged.items():
            os.replace(tmp, final)
        done = list(self.staged)
        self.staged = {}
        return done

    def discard(self) -> None:
        for tmp in self.staged.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.staged = {}


@contextlib.contextmanager
def staged_splits(out_dir: Path) -> Iterator[StagedSplits]:
    """Yield a StagedSplits; on any exception, delete everything staged so far."""
    staged = StagedSplits(out_dir)
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise
    staged.discard()  # anything not committed by the body
