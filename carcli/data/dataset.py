"""Read, write and validate `carseg.dataset/1` files (one HDF5 file per split).

Reading is lazy: `DatasetFile` keeps the HDF5 file open and reads rows on demand, so a split
far larger than memory works; `read_rows` sorts indices for h5py and restores their order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.artefacts.run import atomic_path
from carcli.data.regression import check_mixture
from carcli.errors import CarsegError

SCHEMA = "carseg.dataset/1"
SPLITS = ("train", "val", "test")


def split_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.h5"


@dataclass(frozen=True)
class DatasetInfo:
    """What the models and stages need to know about a split, read from its attributes."""

    path: Path
    task: str
    n: int
    num_annotations: int
    image_shape: tuple[int, ...]  # per item: (C, H, W) or (D_in,)
    label_shape: tuple[int, ...]  # per annotation: (H, W) or (D_out,)
    num_classes: int
    ignore_index: int
    class_names: list[str]
    eval_classes: list[int]
    has_weights: bool
    blackbox_channels: int  # channels F gets from the black box (0: none)
    blackbox_is_ids: bool

    @property
    def in_channels(self) -> int:
        return self.image_shape[0]

    @property
    def calibrator_in_channels(self) -> int:
        return self.image_shape[0] + self.blackbox_channels


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


def open_h5(path: Path, what: str, make_cmd: str) -> h5py.File:
    if not path.is_file():
        raise CarsegError(f"no {what} at {path}", hint=f"run `{make_cmd}` to make it")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CarsegError(
            f"{path}: not a readable HDF5 file ({exc})",
            hint=f"the file is truncated or corrupt; make it again with `{make_cmd}`",
        ) from None


def _json_attr(h5: h5py.File, name: str, default: Any = None) -> Any:
    if name not in h5.attrs:
        return default
    raw = h5.attrs[name]
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        return json.loads(raw)
    return [x.item() if hasattr(x, "item") else x for x in raw]


def read_info(h5: h5py.File, path: Path) -> DatasetInfo:
    """DatasetInfo from an open file; assumes it passed validation (raises CarsegError if not)."""
    problems = _check_header(h5)
    if problems:
        raise CarsegError(f"{path}: {problems[0]}", hint="check it with `carseg validate RECIPE`")
    task = _str_attr(h5, "task")
    image, label = h5["image"], h5["label"]
    if task == "segmentation":
        k = int(h5.attrs["num_classes"])
        ignore = int(h5.attrs.get("ignore_index", 255))
        names = _json_attr(h5, "class_names", [str(i) for i in range(k)])
        evalc = _json_attr(h5, "eval_classes", list(range(1, k)))
        bb_ch, bb_ids = 0, False
        if "blackbox" in h5:
            bb = h5["blackbox"]
            bb_ids = bb.ndim == 3
            bb_ch = k if bb_ids else int(bb.shape[1])
        return DatasetInfo(
            path,
            task,
            int(image.shape[0]),
            int(label.shape[1]),
            tuple(image.shape[1:]),
            tuple(label.shape[2:]),
            k,
            ignore,
            list(names),
            [int(c) for c in evalc],
            "label_weight" in h5,
            bb_ch,
            bb_ids,
        )
    return DatasetInfo(
        path,
        task,
        int(image.shape[0]),
        int(label.shape[1]),
        tuple(image.shape[1:]),
        tuple(label.shape[2:]),
        0,
        -1,
        [],
        [],
        "label_weight" in h5,
        0,
        False,
    )


def _str_attr(h5: h5py.File, name: str) -> str | None:
    raw = h5.attrs.get(name)
    if isinstance(raw, bytes):
        raw = raw.decode()
    return raw if isinstance(raw, str) else None


def _check_header(h5: h5py.File) -> list[str]:
    """Schema, task and required datasets with the right ranks; no data is scanned."""
    problems: list[str] = []
    schema = _str_attr(h5, "schema")
    if schema != SCHEMA:
        problems.append(f"attribute schema is {schema!r}, expected {SCHEMA!r}")
        return problems
    task = _str_attr(h5, "task")
    if task not in ("segmentation", "regression"):
        problems.append(f"attribute task is {task!r}, expected 'segmentation' or 'regression'")
        return problems
    for name in ("image", "label"):
        if name not in h5 or not isinstance(h5[name], h5py.Dataset):
            problems.append(f"dataset {name!r} is missing")
    if problems:
        return problems
    image, label = h5["image"], h5["label"]
    want_img, want_lab = (4, 4) if task == "segmentation" else (2, 3)
    if image.ndim != want_img:
        problems.append(f"image has shape {image.shape}, expected {want_img} dimensions")
    if label.ndim != want_lab:
        problems.append(f"label has shape {label.shape}, expected {want_lab} dimensions")
    if task == "segmentation" and "num_classes" not in h5.attrs:
        problems.append("attribute num_classes is missing")
    return problems


def validate_dataset(path: str | Path, chunk: int = 256) -> DatasetInfo:
    """Check a split file completely; raise CarsegError listing every problem."""
    path = Path(path)
    with open_h5(path, "dataset", "carseg prepare RECIPE") as h5:
        try:
            problems = _check_header(h5)
            if not problems:
                problems = _check_body(h5, chunk)
        except (OSError, RuntimeError, KeyError) as exc:  # HDF5 opened, but its data is damaged
            raise CarsegError(
                f"{path}: unreadable data ({exc})",
                hint="the file is truncated or corrupt; make it again with `carseg prepare RECIPE`",
            ) from None
        if problems:
            lines = [f"{path}: {p}" for p in problems]
            raise CarsegError("\n".join(lines))
        return read_info(h5, path)


def _check_body(h5: h5py.File, chunk: int) -> list[str]:
    p: list[str] = []
    task = _str_attr(h5, "task")
    image, label = h5["image"], h5["label"]
    n = image.shape[0]
    if image.dtype not in (np.float32, np.float16):
        p.append(f"image has dtype {image.dtype}, expected float32 or float16")
    if label.shape[0] != n:
        p.append(f"label has {label.shape[0]} rows but image has {n}")
    if label.shape[1] < 1:
        p.append("label holds no annotations (A = 0)")
    seg = task == "segmentation"
    k = ignore = 0
    if seg:
        if label.dtype != np.uint8:
            p.append(f"label has dtype {label.dtype}, expected uint8")
        if label.shape[2:] != image.shape[2:]:
            p.append(f"label maps are {label.shape[2:]} but images are {image.shape[2:]}")
        try:
            k = int(h5.attrs["num_classes"])
            ignore = int(h5.attrs.get("ignore_index", 255))
        except (TypeError, ValueError, OverflowError):
            p.append("attributes num_classes / ignore_index must be integers")
            return p
        if not 2 <= k <= 255:
            p.append(f"attribute num_classes is {k}, expected 2..255")
        names: Any = None
        evalc: Any = None
        try:
            names = _json_attr(h5, "class_names", None)
        except (ValueError, TypeError):
            p.append("attribute class_names must be a JSON list of names")
            names = False  # reported; not "missing"
        try:
            evalc = _json_attr(h5, "eval_classes", None)
        except (ValueError, TypeError):
            p.append("attribute eval_classes must be a JSON list of class ids")
        if names is None:
            p.append("attribute class_names is missing")
        elif names is not False and not (isinstance(names, list) and len(names) == k):
            p.append(f"attribute class_names must list {k} names, got {names!r}")
        if evalc is not None and not (
            isinstance(evalc, list)
            and evalc
            and all(isinstance(c, int) and 0 <= c < k for c in evalc)
        ):
            p.append(f"attribute eval_classes must be a non-empty list of class ids < {k}")
    else:
        if label.dtype != np.float32:
            p.append(f"label has dtype {label.dtype}, expected float32 for regression")
        if image.ndim != 2 or label.ndim != 3:
            p.append(
                f"regression needs image [N, D_in] and label [N, A, D_out], got image "
                f"{image.shape} and label {label.shape}"
            )
        else:
            p.extend(check_mixture(h5, n, label.shape[2]))
    has_w = "label_weight" in h5
    if has_w:
        w = h5["label_weight"]
        if w.dtype != np.float32:
            p.append(f"label_weight has dtype {w.dtype}, expected float32")
        if w.shape != (n, label.shape[1]):
            p.append(f"label_weight has shape {w.shape}, expected {(n, label.shape[1])}")
            has_w = False
    bb = h5.get("blackbox") if seg else None
    if bb is not None:
        if bb.ndim == 3:
            if bb.dtype != np.uint8 or bb.shape != (n, *image.shape[2:]):
                p.append(
                    f"blackbox class ids must be uint8 {(n, *image.shape[2:])}, got "
                    f"{bb.dtype} {bb.shape}"
                )
                bb = None
        elif bb.ndim == 4:
            if (
                bb.dtype not in (np.float32, np.float16)
                or bb.shape[0] != n
                or bb.shape[2:] != image.shape[2:]
            ):
                p.append(
                    f"blackbox probabilities must be float [N, K_b, H, W] matching image, "
                    f"got {bb.dtype} {bb.shape}"
                )
                bb = None
        else:
            p.append(f"blackbox has shape {bb.shape}, expected [N, H, W] or [N, K_b, H, W]")
            bb = None
    if p:
        return p
    # Scan values chunk by chunk; report the first bad row of each kind.
    seen: set[str] = set()

    def rows(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
        try:
            return ds[start:stop]
        except OSError as exc:
            where = f"dataset {ds.name.lstrip('/')!r} rows {start}..{stop - 1}"
            raise OSError(f"{where}: {exc}") from None

    def once(kind: str, msg: str) -> None:
        if kind not in seen:
            seen.add(kind)
            p.append(msg)

    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        img = rows(image, start, stop)
        bad = ~np.isfinite(img).reshape(img.shape[0], -1).all(axis=1)
        if bad.any():
            once("nan", f"image row {start + int(np.argmax(bad))} holds NaN or infinite values")
        lab = rows(label, start, stop)
        if seg:
            out = (lab >= k) & (lab != ignore)
            if out.any():
                row = start + int(np.argwhere(out)[0][0])
                once(
                    "ids",
                    f"label row {row} holds class id {int(lab[out].max())} "
                    f">= num_classes {k} (ignore_index is {ignore})",
                )
        elif not np.isfinite(lab).all():
            once("nanlab", "label holds NaN or infinite values")
        if has_w:
            w = rows(h5["label_weight"], start, stop).astype(np.float64)
            if not np.isfinite(w).all() or (w < 0).any():
                once(
                    "wneg",
                    f"label_weight rows {start}..{stop - 1} hold negative or non-finite values",
                )
            sums = w.sum(axis=1)
            badw = np.abs(sums - 1.0) > 1e-5
            if badw.any():
                i = int(np.argmax(badw))
                once("wsum", f"label_weight row {start + i} sums to {sums[i]:.6f}, expected 1")
        if bb is not None:
            b = rows(bb, start, stop)
            if bb.ndim == 3:
                if ((b >= k) & (b != ignore)).any():
                    once("bbids", f"blackbox rows {start}..{stop - 1} hold class ids >= {k}")
            elif not np.isfinite(b).all():
                once("bbnan", "blackbox holds NaN or infinite values")
    return p


def write_dataset(
    path: str | Path,
    *,
    image: np.ndarray,
    label: np.ndarray,
    label_weight: np.ndarray | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    eval_classes: list[int] | None = None,
    ignore_index: int = 255,
    task: str = "segmentation",
    blackbox: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write one split atomically (temp file + rename), chunked per image and compressed.

    ``extra`` holds further datasets stored as given (e.g. the regression task's mixture)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["schema"] = SCHEMA
        h5.attrs["task"] = task
        if task == "segmentation":
            assert num_classes is not None
            h5.attrs["num_classes"] = int(num_classes)
            h5.attrs["ignore_index"] = int(ignore_index)
            names = class_names or [str(i) for i in range(num_classes)]
            h5.attrs["class_names"] = json.dumps(list(names))
            if eval_classes is not None:
                h5.attrs["eval_classes"] = json.dumps([int(c) for c in eval_classes])
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
