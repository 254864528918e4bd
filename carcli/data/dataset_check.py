"""Validate a `carseg.dataset/1` split completely: header, array shapes and dtypes, then every
value chunk by chunk (every problem is listed; the first bad row of each kind is named)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.data.regression import check_mixture
from carcli.data.schema import DatasetInfo, check_header, json_attr, open_h5, read_info, str_attr
from carcli.errors import CarsegError


def validate_dataset(path: str | Path, chunk: int = 256) -> DatasetInfo:
    """Check a split file completely; raise CarsegError listing every problem."""
    path = Path(path)
    with open_h5(path, "dataset", "carseg prepare RECIPE") as h5:
        try:
            problems = check_header(h5)
            if not problems:
                problems = _check_body(h5, chunk)
        except (OSError, RuntimeError, KeyError) as exc:  # HDF5 opened, but its data is damaged
            raise CarsegError(
                f"{path}: unreadable data ({exc})",
                hint="the file is truncated or corrupt; make it again with `carseg prepare RECIPE`",
            ) from None
        if problems:
            lines = [f"{path}: {p}" for p in problems]
            raise CarsegError("\n".join(lines), hint="make it again with `carseg prepare RECIPE`")
        return read_info(h5, path)


def _check_body(h5: h5py.File, chunk: int) -> list[str]:
    """Shapes, dtypes and attributes; then, if they are right, every value (`_scan`)."""
    image, label = h5["image"], h5["label"]
    n = image.shape[0]
    p = _check_arrays(image, label)
    seg = str_attr(h5, "task") == "segmentation"
    k = ignore = 0
    if seg:
        classes = _check_classes(h5, image, label, p)
        if classes is None:
            return p
        k, ignore = classes
    else:
        _check_regression(h5, image, label, p)
    has_w = _check_weight_shape(h5, n, label.shape[1], p)
    bb = _check_blackbox_shape(h5, image.shape, p) if seg else None
    if p:
        return p
    return _scan(h5, chunk, _Values(seg, k, ignore, has_w, bb))


def _check_arrays(image: h5py.Dataset, label: h5py.Dataset) -> list[str]:
    p: list[str] = []
    n = image.shape[0]
    if image.dtype not in (np.float32, np.float16):
        p.append(f"image has dtype {image.dtype}, expected float32 or float16")
    if label.shape[0] != n:
        p.append(f"label has {label.shape[0]} rows but image has {n}")
    if label.shape[1] < 1:
        p.append("label holds no annotations (A = 0)")
    return p


def _check_classes(
    h5: h5py.File, image: h5py.Dataset, label: h5py.Dataset, p: list[str]
) -> tuple[int, int] | None:
    """Segmentation: label dtype and size, num_classes, ignore_index, class names and eval
    classes; (num_classes, ignore_index), or None when those two are not integers."""
    if label.dtype != np.uint8:
        p.append(f"label has dtype {label.dtype}, expected uint8")
    if label.shape[2:] != image.shape[2:]:
        p.append(f"label maps are {label.shape[2:]} but images are {image.shape[2:]}")
    try:
        k = int(h5.attrs["num_classes"])
        ignore = int(h5.attrs.get("ignore_index", 255))
    except (TypeError, ValueError, OverflowError):
        p.append("attributes num_classes / ignore_index must be integers")
        return None
    if not 2 <= k <= 255:
        p.append(f"attribute num_classes is {k}, expected 2..255")
    names: Any = None
    evalc: Any = None
    try:
        names = json_attr(h5, "class_names", None)
    except (ValueError, TypeError):
        p.append("attribute class_names must be a JSON list of names")
        names = False  # reported; not "missing"
    try:
        evalc = json_attr(h5, "eval_classes", None)
    except (ValueError, TypeError):
        p.append("attribute eval_classes must be a JSON list of class ids")
    if names is None:
        p.append("attribute class_names is missing")
    elif names is not False and not (isinstance(names, list) and len(names) == k):
        p.append(f"attribute class_names must list {k} names, got {names!r}")
    if evalc is not None and not (
        isinstance(evalc, list) and evalc and all(isinstance(c, int) and 0 <= c < k for c in evalc)
    ):
        p.append(f"attribute eval_classes must be a non-empty list of class ids < {k}")
    return k, ignore


def _check_regression(
    h5: h5py.File, image: h5py.Dataset, label: h5py.Dataset, p: list[str]
) -> None:
    if label.dtype != np.float32:
        p.append(f"label has dtype {label.dtype}, expected float32 for regression")
    if image.ndim != 2 or label.ndim != 3:
        p.append(
            f"regression needs image [N, D_in] and label [N, A, D_out], got image "
            f"{image.shape} and label {label.shape}"
        )
    else:
        p.extend(check_mixture(h5, image.shape[0], label.shape[2]))


def _check_weight_shape(h5: h5py.File, n: int, a: int, p: list[str]) -> bool:
    """Whether the file has a label_weight of the right shape (its values are scanned)."""
    if "label_weight" not in h5:
        return False
    w = h5["label_weight"]
    if w.dtype != np.float32:
        p.append(f"label_weight has dtype {w.dtype}, expected float32")
    if w.shape != (n, a):
        p.append(f"label_weight has shape {w.shape}, expected {(n, a)}")
        return False
    return True


def _check_blackbox_shape(
    h5: h5py.File, image_shape: tuple[int, ...], p: list[str]
) -> h5py.Dataset | None:
    """The black box, if present and of a valid form (its values are scanned)."""
    bb = h5.get("blackbox")
    if bb is None:
        return None
    n, hw = image_shape[0], tuple(image_shape[2:])
    if bb.ndim == 3:
        if bb.dtype != np.uint8 or bb.shape != (n, *hw):
            p.append(f"blackbox class ids must be uint8 {(n, *hw)}, got {bb.dtype} {bb.shape}")
            return None
    elif bb.ndim == 4:
        if bb.dtype not in (np.float32, np.float16) or bb.shape[0] != n or bb.shape[2:] != hw:
            p.append(
                f"blackbox probabilities must be float [N, K_b, H, W] matching image, "
                f"got {bb.dtype} {bb.shape}"
            )
            return None
    else:
        p.append(f"blackbox has shape {bb.shape}, expected [N, H, W] or [N, K_b, H, W]")
        return None
    return bb


@dataclass(frozen=True)
class _Values:
    """What the value scan checks, from the shape checks."""

    seg: bool
    k: int
    ignore: int
    has_w: bool
    bb: h5py.Dataset | None


def _rows(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    try:
        return ds[start:stop]
    except OSError as exc:
        where = f"dataset {ds.name.lstrip('/')!r} rows {start}..{stop - 1}"
        raise OSError(f"{where}: {exc}") from None


def _scan(h5: h5py.File, chunk: int, v: _Values) -> list[str]:
    """Scan values chunk by chunk; report the first bad row of each kind."""
    found: dict[str, str] = {}
    n = h5["image"].shape[0]
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        for kind, msg in _chunk_problems(h5, start, stop, v):
            found.setdefault(kind, msg)
    return list(found.values())


def _chunk_problems(h5: h5py.File, start: int, stop: int, v: _Values) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    img = _rows(h5["image"], start, stop)
    bad = ~np.isfinite(img).reshape(img.shape[0], -1).all(axis=1)
    if bad.any():
        out.append(("nan", f"image row {start + int(np.argmax(bad))} holds NaN or infinite values"))
    lab = _rows(h5["label"], start, stop)
    if v.seg:
        wrong = (lab >= v.k) & (lab != v.ignore)
        if wrong.any():
            row = start + int(np.argwhere(wrong)[0][0])
            msg = (
                f"label row {row} holds class id {int(lab[wrong].max())} "
                f">= num_classes {v.k} (ignore_index is {v.ignore})"
            )
            out.append(("ids", msg))
    elif not np.isfinite(lab).all():
        out.append(("nanlab", "label holds NaN or infinite values"))
    if v.has_w:
        out.extend(_weight_problems(_rows(h5["label_weight"], start, stop), start, stop))
    if v.bb is not None:
        b = _rows(v.bb, start, stop)
        if v.bb.ndim == 3:
            if ((b >= v.k) & (b != v.ignore)).any():
                out.append(("bbids", f"blackbox rows {start}..{stop - 1} hold class ids >= {v.k}"))
        elif not np.isfinite(b).all():
            out.append(("bbnan", "blackbox holds NaN or infinite values"))
    return out


def _weight_problems(w: np.ndarray, start: int, stop: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        msg = f"label_weight rows {start}..{stop - 1} hold negative or non-finite values"
        out.append(("wneg", msg))
    sums = w.sum(axis=1)
    badw = np.abs(sums - 1.0) > 1e-5
    if badw.any():
        i = int(np.argmax(badw))
        out.append(("wsum", f"label_weight row {start + i} sums to {sums[i]:.6f}, expected 1"))
    return out
