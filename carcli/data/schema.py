"""The `carseg.dataset/1` header: the schema's attributes and required arrays, and the
`DatasetInfo` they describe (no data is scanned here; `carcli.data.dataset_check` scans it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from carcli.errors import CarsegError

SCHEMA = "carseg.dataset/1"


@dataclass(frozen=True)
class Classes:
    """A segmentation split's classes as its header stores them (a split without them is a
    regression split). ``class_names`` defaults to "0", "1", ...; without ``eval_classes``
    the header has none and readers take every class but 0."""

    num_classes: int
    class_names: Sequence[str] | None = None
    eval_classes: Sequence[int] | None = None
    ignore_index: int = 255


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


def json_attr(h5: h5py.File, name: str, default: Any = None) -> Any:
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
    problems = check_header(h5)
    if problems:
        raise CarsegError(f"{path}: {problems[0]}", hint="check it with `carseg validate RECIPE`")
    task = str_attr(h5, "task")
    image, label = h5["image"], h5["label"]
    k, ignore, names, evalc, bb_ch, bb_ids = 0, -1, [], [], 0, False  # regression
    if task == "segmentation":
        k = int(h5.attrs["num_classes"])
        ignore = int(h5.attrs.get("ignore_index", 255))
        names = json_attr(h5, "class_names", [str(i) for i in range(k)])
        evalc = json_attr(h5, "eval_classes", list(range(1, k)))
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


def str_attr(h5: h5py.File, name: str) -> str | None:
    raw = h5.attrs.get(name)
    if isinstance(raw, bytes):
        raw = raw.decode()
    return raw if isinstance(raw, str) else None


def check_header(h5: h5py.File) -> list[str]:
    """Schema, task and required datasets with the right ranks; no data is scanned."""
    problems: list[str] = []
    schema = str_attr(h5, "schema")
    if schema != SCHEMA:
        problems.append(f"attribute schema is {schema!r}, expected {SCHEMA!r}")
        return problems
    task = str_attr(h5, "task")
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
    elif task == "segmentation" and "class_colors" in h5.attrs:
        if class_colors(h5) is None:
            problems.append(
                "attribute class_colors must be a JSON list of num_classes [r, g, b] "
                "(integers 0-255)"
            )
    return problems


def class_colors(h5: h5py.File) -> list[list[int]] | None:
    """The optional attribute ``class_colors``: the RGB (0-255) a dataset draws each class in
    (a JSON list, one [r, g, b] per class); None when absent or malformed. Predictions paint
    their class maps in these colours, so a sample looks like the dataset's own labels."""
    try:
        colours = json_attr(h5, "class_colors")
        k = int(h5.attrs["num_classes"])
    except (ValueError, TypeError, KeyError):
        return None
    ok = (
        isinstance(colours, list)
        and len(colours) == k
        and all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in colours
        )
    )
    return colours if ok else None
