"""`import-samples`: turn another method's samples into a sample bank (`carseg.samples/1`).

SOURCE is one of

* a folder with one sub-folder per image, each holding that image's sample PNGs (pixel =
  class id; 8-bit grey or palette images), taken in name order;
* a folder of PNGs named ``<image>_<sample>.png`` (the image key is the stem up to its last
  ``_``, ``-`` or ``.``);
* an ``.npy`` array of class ids [N, M, H, W], with an optional ``<stem>.names.txt`` beside it
  (one image key per line, in the array's order);
* an ``.npz`` archive with ``samples`` [N, M, H, W], optionally ``names`` (image keys) or
  ``index`` (dataset rows) and ``calibration`` [N, K, H, W] (class probabilities).

An image key is a case name of the split (``<split>.cases.csv`` in data.dir, e.g.
``test_000012``) or, failing that, a row number of the split; an array without names is
matched row by row. Every image of the split must be there exactly once, with M samples of
the split's size and class ids < K; anything else is exit 1 with one line, nothing written.

Calibration probabilities (npz ``calibration`` or ``--calibration FILE.npy``, [N, K, H, W] in
the source's order, each pixel summing to 1) are optional. Without them the bank's
``calibration`` holds G's per-pixel sample frequencies so every reader works, and the
attribute ``calibration_source = "none"`` makes ``evaluate`` report the figures of F (ECE, F's
calibration, QUBIQ of F) as not available. The bank's attributes record where it came from.

The stage that reads the recipe is :func:`carcli.stages.import_samples.run_import_samples`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carcli._version import __version__
from carcli.artefacts.run import Manifest, atomic_path, check_not_finished
from carcli.data.dataset import DatasetFile, split_path
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.sampling.bank import create_bank
from carcli.ui import Reporter

_SEP = re.compile(r"[_\-.](?=[^_\-.]*$)")
_SUM_TOL = 1e-2  # float16 probabilities sum to 1 only roughly


@dataclass
class Source:
    """A validated source: per dataset row, a loader of its samples [M, H, W]."""

    kind: str
    rows: list  # per dataset row: what ``load`` needs
    load: Callable[[object], np.ndarray]  # -> the row's samples [M, H, W]
    m: int
    calibration: np.ndarray | None  # [N, K, H, W] in dataset-row order, or None
    note: str


def case_names(data_dir: str | Path, split: str, n: int) -> dict[str, int]:
    """Case name -> row from ``<split>.cases.csv`` (empty when the file is absent)."""
    path = Path(data_dir) / f"{split}.cases.csv"
    if not path.exists():
        return {}
    out: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            row = int(rec["row"])
            if 0 <= row < n:
                out[str(rec["case"])] = row
    return out


def _rows_of(keys: list[str], names: dict[str, int], n: int, what: str) -> list[int]:
    """Dataset rows of the image keys (case names, else row numbers); all present, once."""
    rows, unknown = [], []
    for key in keys:
        if key in names:
            rows.append(names[key])
        elif key.isdigit() and int(key) < n:
            rows.append(int(key))
        else:
            unknown.append(key)
    if unknown:
        raise CarsegError(
            f"{what}: {len(unknown)} image name(s) not in the split, e.g. {unknown[:3]}",
            hint="name images by the case names of <split>.cases.csv or by row number",
        )
    seen: dict[int, str] = {}
    for key, row in zip(keys, rows, strict=True):
        if row in seen:
            raise CarsegError(f"{what}: {seen[row]!r} and {key!r} are the same image (row {row})")
        seen[row] = key
    missing = sorted(set(range(n)) - set(rows))
    if missing:
        by_row = {r: k for k, r in names.items()}
        shown = [by_row.get(r, str(r)) for r in missing[:3]]
        raise CarsegError(
            f"{what}: {len(missing)} of the split's {n} images are missing, e.g. {shown}"
        )
    return rows


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I;16", "I"):
                raise CarsegError(
                    f"{path}: a {img.mode} image; expected class ids (8-bit grey or palette)"
                )
            arr = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise CarsegError(f"{path}: unreadable PNG ({exc})") from None
    return arr


def _folder_source(root: Path, info: DatasetInfo, names: dict[str, int]) -> Source:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    groups: dict[str, list[Path]] = {}
    if subdirs:
        for d in subdirs:
            groups[d.name] = sorted(d.glob("*.png"))
        kind = "png-folders"
    else:
        for p in sorted(root.glob("*.png")):
            parts = _SEP.split(p.stem)
            if len(parts) != 2 or not parts[0]:
                raise CarsegError(f"{p}: expected <image>_<sample>.png")
            groups.setdefault(parts[0], []).append(p)
        kind = "png-prefixes"
    if not groups:
        raise CarsegError(f"{root}: no sample PNGs (one sub-folder per image, or <image>_<k>.png)")
    keys = list(groups)
    rows = _rows_of(keys, names, info.n, str(root))
    counts = {len(v) for v in groups.values()}
    if len(counts) != 1 or 0 in counts:
        few = min(groups, key=lambda k: len(groups[k]))
        raise CarsegError(
            f"{root}: images hold different numbers of samples ({sorted(counts)}; "
            f"{few!r} has {len(groups[few])})"
        )
    per_row: list[object] = [None] * info.n
    for key, row in zip(keys, rows, strict=True):
        per_row[row] = groups[key]

    def load(paths: object) -> np.ndarray:
        return np.stack([_read_png(p) for p in paths])  # type: ignore[union-attr]

    return Source(kind, per_row, load, counts.pop(), None, f"{len(keys)} images")


def _array_source(path: Path, info: DatasetInfo, names: dict[str, int]) -> Source:
    keys: list[str] | None = None
    calibration = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "samples" not in z:
                    raise CarsegError(f"{path}: no 'samples' array (keys: {sorted(z.files)})")
                samples = z["samples"]
                if "names" in z:
                    keys = [str(k) for k in z["names"].reshape(-1)]
                elif "index" in z:
                    keys = [str(int(k)) for k in z["index"].reshape(-1)]
                if "calibration" in z:
                    calibration = z["calibration"]
        else:
            samples = np.load(path, mmap_mode="r", allow_pickle=False)
            side = path.with_name(path.stem + ".names.txt")
            if side.exists():
                keys = [ln.strip() for ln in side.read_text().splitlines() if ln.strip()]
    except (OSError, ValueError) as exc:
        raise CarsegError(f"{path}: unreadable array ({exc})") from None
    if samples.ndim != 4 or samples.dtype.kind not in "iu":
        raise CarsegError(
            f"{path}: samples are {samples.dtype} {samples.shape}, expected integer class ids "
            f"[N, M, {', '.join(map(str, info.label_shape))}]"
        )
    n = samples.shape[0]
    if keys is None:
        if n != info.n:
            raise CarsegError(
                f"{path}: {n} images but the split has {info.n}, and no names to match them",
                hint="add names (npz 'names' or <stem>.names.txt) or give every image in order",
            )
        keys = [str(i) for i in range(n)]
    if len(keys) != n:
        raise CarsegError(f"{path}: {len(keys)} names for {n} images")
    rows = _rows_of(keys, names, info.n, str(path))
    order = np.argsort(rows)  # source position of each dataset row
    if calibration is not None:
        calibration = np.asarray(calibration)[order]

    def load(pos: object) -> np.ndarray:
        return np.asarray(samples[int(pos)])  # type: ignore[call-overload]

    kind = "npz" if path.suffix == ".npz" else "npy"
    return Source(kind, [int(p) for p in order], load, int(samples.shape[1]), calibration, "")


def check_calibration(calib: np.ndarray, info: DatasetInfo, what: str) -> np.ndarray:
    """Probabilities [N, K, H, W]: the right shape, finite, in [0, 1], summing to 1."""
    want = (info.n, info.num_classes, *info.label_shape)
    if calib.shape != want or calib.dtype.kind != "f":
        raise CarsegError(
            f"{what}: calibration is {calib.dtype} {calib.shape}, expected float {want}"
        )
    calib = calib.astype(np.float32)
    if not np.isfinite(calib).all() or calib.min() < 0 or calib.max() > 1:
        raise CarsegError(f"{what}: calibration holds values outside [0, 1] or NaN")
    if np.abs(calib.sum(axis=1) - 1).max() > _SUM_TOL:
        raise CarsegError(f"{what}: calibration does not sum to 1 over the classes")
    return calib


def open_source(path: Path, info: DatasetInfo, names: dict[str, int]) -> Source:
    """Index and check a source (see the module docstring); nothing is read in full yet."""
    if not path.exists():
        raise CarsegError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder_source(path, info, names)
    if path.suffix in (".npy", ".npz"):
        return _array_source(path, info, names)
    raise CarsegError(f"{path}: expected a folder, an .npy or an .npz file")


def _digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*.png")):
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
        return h.hexdigest()
    from carcli.artefacts.run import sha256_file

    return sha256_file(path)


@dataclass(frozen=True)
class ImportRecord:
    """What an imported bank records of the recipe, without using it: the seed, the recipe
    as a dict (for the manifest) and as YAML (a bank attribute)."""

    seed: int
    config: dict
    recipe_yaml: str


def import_samples(
    source: str | Path,
    data_dir: str | Path,
    split: str,
    bank_path: Path,
    *,
    record: ImportRecord,
    calibration: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Write the bank of ``source`` for the ``split`` of the dataset in ``data_dir`` to
    ``bank_path``; return its path; ``record`` is written into the bank and its manifest."""
    rep = Reporter(quiet)
    source = Path(source)
    data_path = split_path(data_dir, split)
    check_not_finished(bank_path, f"a {split} sample bank", overwrite)
    new_dirs = [d for d in [bank_path.parent, *bank_path.parent.parents] if not d.exists()]
    try:
        return _import(source, data_dir, split, bank_path, data_path, calibration, record, rep)
    except BaseException:
        for d in new_dirs:  # nothing written: not even the folders (innermost first)
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise


def _calibration_of(
    src: Source, calibration: str | Path | None, source: Path, info: DatasetInfo
) -> np.ndarray | None:
    """The checked probabilities [N, K, H, W] in dataset-row order (the source's own or
    ``--calibration``), or None."""
    calib = src.calibration
    if calibration is not None:
        if calib is not None:
            raise CarsegError(f"{source} already holds calibration; drop --calibration")
        try:
            calib = np.load(Path(calibration), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CarsegError(f"{calibration}: unreadable array ({exc})") from None
        if calib.ndim != 4 or len(calib) != info.n:
            raise CarsegError(
                f"{calibration}: calibration is {calib.shape}, expected "
                f"{(info.n, info.num_classes, *info.label_shape)}"
            )
        if src.kind in ("npy", "npz"):  # the source's order -> dataset rows
            calib = calib[np.asarray(src.rows, dtype=np.intp)]
    if calib is not None:
        calib = check_calibration(calib, info, str(calibration or source))
    return calib


def _write_rows(h5, src: Source, info: DatasetInfo, source: Path, calib, bar) -> None:
    """Check and write every row's samples and calibration (G's frequencies without one)."""
    want = (src.m, *info.label_shape)
    for row in range(info.n):
        s = src.load(src.rows[row])
        if s.shape != want:
            raise CarsegError(
                f"{source}: image {row} has samples of shape {s.shape}, expected {want}"
            )
        if s.size and (int(s.min()) < 0 or int(s.max()) >= info.num_classes):
            raise CarsegError(
                f"{source}: image {row} holds class id {int(s.max())} >= "
                f"num_classes {info.num_classes} (or negative)"
            )
        s = s.astype(np.uint8)
        h5["samples"][row] = s
        if calib is not None:
            h5["calibration"][row] = calib[row].astype(np.float16)
        else:
            freq = np.stack([(s == k).mean(axis=0) for k in range(info.num_classes)])
            h5["calibration"][row] = freq.astype(np.float16)
        bar.advance(1)
    h5["index"][...] = np.arange(info.n, dtype=np.int64)


def _import(
    source: Path,
    data_dir: str | Path,
    split: str,
    bank_path: Path,
    data_path: Path,
    calibration: str | Path | None,
    record: ImportRecord,
    rep: Reporter,
) -> Path:
    with DatasetFile(data_path, validate=True) as ds:
        info = ds.info
        if info.task != "segmentation":
            raise CarsegError(f"{data_path}: import-samples takes segmentation datasets only")
        src = open_source(source, info, case_names(data_dir, split, info.n))
        calib = _calibration_of(src, calibration, source, info)
        manifest = Manifest("import-samples", record.config, record.seed)
        manifest.add_input(data_path, f"data.{split}")
        attrs = {
            "dataset": str(data_path),
            "split": split,
            "num_samples": src.m,
            "seed": record.seed,
            "calibrator_sha256": "",
            "refiner_sha256": "",
            "recipe": record.recipe_yaml,
            "carseg_version": __version__,
            "imported_from": str(source.resolve()),
            "imported_format": src.kind,
            "imported_sha256": _digest(source),
            "calibration_source": "source" if calib is not None else "none",
            "dataset_sha256": manifest.inputs[str(data_path)],
            "provenance": json.dumps(manifest.provenance, sort_keys=True),
        }
        with rep.progress(info.n, f"import {split}") as bar, atomic_path(bank_path) as tmp:
            h5 = create_bank(tmp, info, info.n, src.m, attrs)
            try:
                _write_rows(h5, src, info, source, calib, bar)
            finally:
                h5.close()
    manifest.extra["imported_from"] = attrs["imported_from"]
    manifest.write(bank_path.parent, [bank_path.name])
    rep.line(f"sample bank written: {bank_path} ({info.n} images x {src.m} samples, from {source})")
    return bank_path
