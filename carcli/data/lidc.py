"""LIDC-IDRI lesion crops (4 annotations per crop) from the three public formats (read here;
written as splits by `carcli.data.lidc_prepare`).

Sources (``data.source``; ``data.raw`` points at the folder or file):

``lidc-png``
    The DeepMind PNG crops (what the paper used): ``<raw>/<split>/images/<patient>/
    z-<z>_c<crop>.png`` and ``<raw>/<split>/gt/<patient>/z-<z>_c<crop>_l<k>.png``, k = 0..3,
    for split = train, val, test. Each image is paired with its four labels by name; the given
    split is kept.
``lidc-phiseg``
    The PHiSeg HDF5 file: groups ``train``, ``val``, ``test``, each with ``images`` [N, H, W]
    float, ``labels`` [N, H, W, A] uint8 (or [N, A, H, W]: detected by shape) and ``uids``
    (series UIDs, the patient grouping).
``lidc-pickle``
    The Probabilistic U-Net (PyTorch port) pickle: a dict from a string key to
    ``{'image': [128, 128] float, 'masks': 4 x [128, 128], 'series_uid': str}``. Unpickling can
    run code, so it is read only with ``data.allow_pickle: true`` (with a warning). It has no
    split; see ``split_series``.

The same rule for all three (``normalise``):
    * centre crop to 128x128 (offset ``(H - 128) // 2``, ``(W - 128) // 2``; 180x180 PNG crops
      lose 26 px on each side, 128x128 images are kept whole);
    * labels: any value > 0 is the lesion (class 1), 0 is background (PNGs store 0/255,
      the other formats 0/1);
    * image: per-image standardisation of the crop, ``(x - mean(x)) / std(x)`` (a constant
      crop becomes all zeros). It is invariant to the intensity scale of the source (0..255
      PNGs, 0..1 floats), so the three formats give the same network input for the same crop.

Output: ``image`` float32 [N, 1, 128, 128], ``label`` uint8 [N, 4, 128, 128], classes
``background`` / ``lesion``, ``eval_classes`` [1], no ``label_weight`` (annotators are equally
likely), plus ``<split>.cases.csv`` (row, case id, patient or series).
"""

from __future__ import annotations

import contextlib
import pickle
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from carcli.data.dataset import SPLITS
from carcli.errors import CarsegError

CROP = 128
NUM_ANNOTATIONS = 4
CLASS_NAMES = ["background", "lesion"]
BLOCK = 256  # images written per block
NORMALISATION = "centre crop to 128x128; image (x - mean) / std over the crop; label = value > 0"
PICKLE_FRACTIONS = (0.7, 0.15, 0.15)
"""Share of series (patients) in train / val / test when the pickle is split."""


@dataclass
class Case:
    """One image of a split: its id, its patient (or series) and how to read it."""

    case: str
    group: str
    where: str  # file (and key) named in errors
    load: Callable[[], tuple[np.ndarray, np.ndarray]]  # raw image [H, W], labels [A, H, W]


# ----------------------------------------------------------------------------- normalisation


def centre_crop(a: np.ndarray, size: int = CROP) -> np.ndarray:
    """The central size x size window of the last two axes."""
    h, w = a.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return a[..., top : top + size, left : left + size]


def normalise(image: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The rule shared by the three formats: crop, standardise, binarise (module docstring)."""
    if image.ndim != 2:
        raise CarsegError(f"{where}: image has shape {image.shape}, expected [H, W]")
    h, w = image.shape
    if h < CROP or w < CROP:
        raise CarsegError(f"{where}: image is {h}x{w}, smaller than the {CROP}x{CROP} crop")
    if labels.shape[-2:] != image.shape:
        raise CarsegError(
            f"{where}: label is {labels.shape[-2]}x{labels.shape[-1]} but the image is {h}x{w}"
        )
    x = centre_crop(image).astype(np.float64)
    if not np.isfinite(x).all():
        raise CarsegError(f"{where}: image holds NaN or infinite values")
    std = x.std()
    x = (x - x.mean()) / std if std > 1e-8 else np.zeros_like(x)
    y = (centre_crop(labels) > 0).astype(np.uint8)
    return x.astype(np.float32), y


# ----------------------------------------------------------------------------- DeepMind PNGs

_IMAGE_NAME = re.compile(r"^z-(?P<z>-?\d+(?:\.\d+)?)_c(?P<c>\d+)$")


def _read_png(path: Path) -> np.ndarray:
    # Pillow is installed with matplotlib; it reads the 8/16-bit grey PNGs of these datasets.
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "LA", "P"):
                im = im.convert("L")
            return np.asarray(im)
    except OSError as exc:
        raise CarsegError(f"{path}: not a readable PNG ({exc})") from None


def png_cases(raw: Path, split: str) -> list[Case]:
    """Cases of one split of the PNG layout, sorted by patient, z and crop; labels by name."""
    root = raw / split
    images, gt = root / "images", root / "gt"
    for folder in (images, gt):
        if not folder.is_dir():
            raise CarsegError(
                f"{folder}: missing; expected the DeepMind LIDC crops layout "
                f"<raw>/{split}/images/<patient>/z-<z>_c<crop>.png",
                hint="set data.raw to the folder that holds train/, val/ and test/",
            )
    found: list[tuple[str, float, int, Path]] = []
    for path in sorted(images.iterdir()):
        if path.name.startswith("."):
            continue  # hidden files (.DS_Store, ...)
        if path.is_file():
            raise CarsegError(
                f"{path}: image outside a patient folder; expected "
                f"{images}/<patient>/z-<z>_c<crop>.png"
            )
        for img in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            m = _IMAGE_NAME.match(img.stem)
            if img.suffix.lower() != ".png" or m is None:
                raise CarsegError(f"{img}: unexpected file; image names are z-<z>_c<crop>.png")
            found.append((path.name, float(m["z"]), int(m["c"]), img))
    if not found:
        raise CarsegError(f"{images}: no images", hint="check data.raw and the download")
    found.sort(key=lambda t: (t[0], t[1], t[2]))
    cases = []
    for patient, _, _, img in found:
        labels = [gt / patient / f"{img.stem}_l{k}.png" for k in range(NUM_ANNOTATIONS)]
        for lab in labels:
            if not lab.is_file():
                raise CarsegError(f"{lab}: missing annotation for {img}")

        def load(img: Path = img, labels: list[Path] = labels) -> tuple[np.ndarray, np.ndarray]:
            image = _read_png(img)
            maps = []
            for lab in labels:
                m = _read_png(lab)
                if m.shape != image.shape:
                    raise CarsegError(
                        f"{lab}: label is {m.shape[0]}x{m.shape[1]} but its image {img.name} "
                        f"is {image.shape[0]}x{image.shape[1]}"
                    )
                maps.append(m)
            return image, np.stack(maps)

        cases.append(Case(f"{patient}_{img.stem}", patient, str(img), load))
    return cases


# ----------------------------------------------------------------------------- PHiSeg HDF5


def open_phiseg(raw: Path) -> h5py.File:
    if not raw.is_file():
        raise CarsegError(
            f"data.raw {raw} is not a file", hint="point data.raw at the PHiSeg LIDC .hdf5 file"
        )
    try:
        return h5py.File(raw, "r")
    except OSError as exc:
        raise CarsegError(f"{raw}: not a readable HDF5 file ({exc})") from None


def phiseg_cases(h5: h5py.File, raw: Path, split: str) -> list[Case]:
    """Cases of one group of the PHiSeg file; labels [N, H, W, A] or [N, A, H, W]."""
    if split not in h5 or not isinstance(h5[split], h5py.Group):
        raise CarsegError(f"{raw}: group {split!r} is missing (expected train, val and test)")
    g = h5[split]
    for name in ("images", "labels"):
        if name not in g:
            raise CarsegError(f"{raw}: dataset {split}/{name} is missing")
    images, labels = g["images"], g["labels"]
    n = images.shape[0]
    if images.ndim == 4 and images.shape[-1] == 1:
        pass  # [N, H, W, 1]: squeezed on read
    elif images.ndim != 3:
        raise CarsegError(f"{raw}: {split}/images has shape {images.shape}, expected [N, H, W]")
    hw = tuple(images.shape[1:3])
    if labels.ndim != 4 or labels.shape[0] != n:
        raise CarsegError(
            f"{raw}: {split}/labels has shape {labels.shape}, expected [N, H, W, A] with N = {n}"
        )
    if tuple(labels.shape[1:3]) == hw and labels.shape[3] <= 16:
        channels_last = True
    elif tuple(labels.shape[2:]) == hw:
        channels_last = False
    else:
        raise CarsegError(
            f"{raw}: {split}/labels has shape {labels.shape}, which matches neither "
            f"[N, {hw[0]}, {hw[1]}, A] nor [N, A, {hw[0]}, {hw[1]}] of the images"
        )
    if n == 0:
        raise CarsegError(f"{raw}: {split}/images is empty")
    uids: list[str]
    if "uids" in g:
        uids = [u.decode() if isinstance(u, bytes) else str(u) for u in g["uids"][...]]
        if len(uids) != n:
            raise CarsegError(f"{raw}: {split}/uids has {len(uids)} entries, images {n}")
    else:
        uids = [f"{split}_{i:06d}" for i in range(n)]

    cache: dict[str, Any] = {"start": -1}

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        start = i - i % BLOCK  # read BLOCK rows at a time: one pass over compressed chunks
        if cache["start"] != start:
            cache.update(
                start=start, img=images[start : start + BLOCK], lab=labels[start : start + BLOCK]
            )
        img, lab = cache["img"][i - start], cache["lab"][i - start]
        return img.reshape(hw), np.moveaxis(lab, -1, 0) if channels_last else lab

    return [
        Case(f"{split}_{i:06d}", uids[i], f"{raw} ({split} row {i})", lambda i=i: load(i))
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- pickle


def read_pickle(raw: Path, allow: bool) -> dict[str, Any]:
    """The pickle's dict; only with the explicit opt-in (unpickling can run code)."""
    if not allow:
        raise CarsegError(
            f"{raw}: the lidc-pickle source unpickles the file, which can run code; refusing "
            "without data.allow_pickle=true",
            hint="set data.allow_pickle: true in the recipe (or pass data.allow_pickle=true) "
            "if you trust the file, or use the lidc-png / lidc-phiseg formats",
        )
    if not raw.is_file():
        raise CarsegError(
            f"data.raw {raw} is not a file", hint="point data.raw at the LIDC pickle file"
        )
    # always shown, --quiet or not: the user should see that code from the file may run
    print(
        f"carseg: warning: unpickling {raw} (data.allow_pickle is true); this can run code",
        file=sys.stderr,
    )
    try:
        with open(raw, "rb") as fh:
            data = pickle.load(fh)
    except Exception as exc:  # any failure of a foreign pickle is a bad input file
        raise CarsegError(f"{raw}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not data:
        raise CarsegError(f"{raw}: expected a non-empty dict of cases, got {type(data).__name__}")
    return data


def _pickle_entry(raw: Path, key: str, value: Any) -> tuple[np.ndarray, np.ndarray, str]:
    where = f"{raw} (key {key!r})"
    if not isinstance(value, dict) or not {"image", "masks", "series_uid"} <= set(value):
        raise CarsegError(f"{where}: expected a dict with 'image', 'masks' and 'series_uid'")
    image = np.asarray(value["image"])
    masks = value["masks"]
    if not isinstance(masks, (list, tuple)) or len(masks) != NUM_ANNOTATIONS:
        raise CarsegError(f"{where}: 'masks' must be a list of {NUM_ANNOTATIONS} arrays")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise CarsegError(f"{where}: masks have different shapes {sorted(shapes)}")
    return image, np.stack([np.asarray(m) for m in masks]), str(value["series_uid"])


def split_series(series: list[str], seed: int) -> dict[str, str]:
    """Split by series (patient), never by slice: the sorted unique series UIDs are shuffled
    with ``numpy.random.default_rng([seed, crc32("lidc-pickle")])``; the first
    ``round(0.7 S)`` go to train, the next ``round(0.15 S)`` to val, the rest to test
    (S = number of series, at least one per split). Same seed and file, same split."""
    uniq = sorted(set(series))
    s = len(uniq)
    if s < 3:
        raise CarsegError(f"the pickle holds {s} series; a patient split needs at least 3")
    rng = np.random.default_rng([seed, zlib.crc32(b"lidc-pickle")])
    order = [uniq[i] for i in rng.permutation(s)]
    n_train = min(max(1, round(PICKLE_FRACTIONS[0] * s)), s - 2)
    n_val = min(max(1, round(PICKLE_FRACTIONS[1] * s)), s - n_train - 1)
    out = {}
    for i, uid in enumerate(order):
        out[uid] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


def pickle_cases(data: dict[str, Any], raw: Path, seed: int) -> dict[str, list[Case]]:
    entries = {}
    for key in sorted(data, key=str):
        image, masks, uid = _pickle_entry(raw, str(key), data[key])
        entries[str(key)] = (image, masks, uid)
    which = split_series([e[2] for e in entries.values()], seed)
    out: dict[str, list[Case]] = {s: [] for s in SPLITS}
    for key, (image, masks, uid) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[0])):
        out[which[uid]].append(
            Case(key, uid, f"{raw} (key {key!r})", lambda im=image, m=masks: (im, m))
        )
    return out


@contextlib.contextmanager
def open_cases(
    source: str, raw: Path, *, seed: int, allow_pickle: bool
) -> Iterator[dict[str, list[Case]]]:
    """Every split's cases of one format, listed (and the layout checked) before any is
    loaded; they stay loadable inside the ``with`` block."""
    if source == "lidc-png":
        if not raw.is_dir():
            raise CarsegError(
                f"data.raw {raw} is not a folder",
                hint="point data.raw at the LIDC crops folder holding train/, val/ and test/",
            )
        yield {s: png_cases(raw, s) for s in SPLITS}
    elif source == "lidc-phiseg":
        with open_phiseg(raw) as h5:
            yield {s: phiseg_cases(h5, raw, s) for s in SPLITS}
    elif source == "lidc-pickle":
        yield pickle_cases(read_pickle(raw, allow_pickle), raw, seed)
    else:  # pragma: no cover - dispatch guards this
        raise ValueError(source)
