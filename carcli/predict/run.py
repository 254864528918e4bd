"""The pieces of `carseg predict` below the API: black-box inputs, the output folder's
checks, which input folders a rerun keeps, and the writes (also the API's
`Prediction.save`). The command itself is carcli/stages/predict.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from carcli.errors import CarsegError
from carcli.predict import outputs
from carcli.predict.engine import PredictOptions
from carcli.predict.inputs import Item
from carcli.ui import Reporter


def blackbox_for(items: list[Item], blackbox: Any, meta: dict[str, Any]) -> list[Any]:
    """Each item's black-box prediction (uint8 ids [H, W] or float [K_b, H, W]), or None."""
    want = meta.get("blackbox")
    given = blackbox is not None and not (
        isinstance(blackbox, (list, tuple)) and all(b is None for b in blackbox)
    )
    if not want:
        if given:
            raise CarsegError(
                "--blackbox was given, but the model takes no black-box input",
                hint="leave --blackbox out",
            )
        return [None] * len(items)
    out: list[Any] = []
    folder = None
    if isinstance(blackbox, (str, Path)):
        from carcli.data.blackbox import BlackboxFolder

        if not Path(blackbox).is_dir():
            raise CarsegError(f"--blackbox {blackbox}: no such folder")
        folder = BlackboxFolder(blackbox, int(meta["num_classes"]), int(meta["ignore_index"]))
    for i, it in enumerate(items):
        where = it.path or it.name
        if isinstance(blackbox, (list, tuple)):
            bb = np.asarray(blackbox[i])
        elif it.blackbox is not None:
            bb = it.blackbox
        elif folder is not None:
            stem = Path(it.path).stem if it.path and it.row is None else it.name
            bb = folder.load([stem, it.name], where, it.size)
        else:
            raise CarsegError(
                f"{where}: the model takes a black-box prediction ({want['form']}) beside "
                "each image",
                hint="pass --blackbox DIR with one prediction per input, named by its stem",
            )
        ids = bb.ndim == 2
        if ids != (want["form"] == "class_ids") or (not ids and bb.shape[0] != want["channels"]):
            got = "class ids" if ids else f"probabilities with {bb.shape[0]} channels"
            raise CarsegError(
                f"{where}: black-box prediction is {got}, the model takes {want['form']}"
                + ("" if want["form"] == "class_ids" else f" with {want['channels']} channels")
            )
        if tuple(bb.shape[-2:]) != it.size:
            raise CarsegError(
                f"{where}: black-box prediction is {bb.shape[-2]}x{bb.shape[-1]}, the image "
                f"{it.size[0]}x{it.size[1]}"
            )
        out.append(bb)
    return out


def check_out(out: Path, inputs: list[str | Path]) -> None:
    """`--out` must not lie inside a folder being read, and must be writable."""
    o = out.resolve()
    for raw in inputs:
        p = Path(raw).resolve()
        if Path(raw).is_dir() and (o == p or p in o.parents):
            raise CarsegError(
                f"--out {out} is inside the input folder {raw}, which is being read",
                hint="choose an --out outside the input folders",
            )
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise CarsegError(
            f"--out {out} is not writable ({base} is not a writable folder)",
            hint="choose another --out or fix its permissions",
        )


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CarsegError(
            f"--out {out} is not writable ({exc.strerror or exc})",
            hint="choose another --out or fix its permissions",
        ) from None


def plan(out: Path, items: list[Item], records: list[dict], overwrite: bool) -> set[int]:
    """Indices of inputs whose folder is complete and matches (kept); refuses to replace a
    folder from another call without `overwrite`."""
    keep = set()
    for i, (it, rec) in enumerate(zip(items, records, strict=True)):
        folder = out / it.name
        if not folder.exists():
            continue
        if outputs.is_complete(folder, rec) and not overwrite:
            keep.add(i)
        elif not overwrite:
            raise CarsegError(
                f"{folder}: exists from another prediction (other input, model, N or seed)",
                hint="pass --overwrite to replace it, or choose another --out",
            )
    return keep


def write_all(
    out: Path,
    items: list[Item],
    results: list[Any],
    meta: dict[str, Any],
    num_samples: int,
    seed: int,
) -> Path:
    """Write every folder and predictions.h5 for results already in memory (API `save`)."""
    out.mkdir(parents=True, exist_ok=True)
    h5 = _open_h5(out, items, meta, num_samples, seed)
    ok = False
    try:
        for i, (it, res) in enumerate(zip(items, results, strict=True)):
            rec = outputs.expected_record(it, num_samples, seed, meta)
            outputs.write_folder(out, it, res, rec, meta)
            h5.put(i, res)
        ok = True
    finally:
        h5.close(ok)
    return out


def _open_h5(out: Path, items: list[Item], meta: dict, n: int, seed: int):
    from carcli._version import __version__

    attrs = {
        "num_samples": n,
        "seed": seed,
        "calibrator_sha256": meta["calibrator"].get("sha256") or "",
        "refiner_sha256": meta["refiner"].get("sha256") or "",
        "class_names": meta["class_names"],
        "carseg_version": __version__,
    }
    return outputs.PredictionsFile(
        out / "predictions.h5", items, n, int(meta["num_classes"]), attrs
    )


def check_args(inputs: list[str], num_samples: int, batch_size: int) -> None:
    if num_samples < 1 or num_samples > 1000 or batch_size < 1:
        raise CarsegError("--num-samples must be 1..1000 and --batch-size at least 1")
    if not inputs:
        raise CarsegError("no inputs given", hint="pass image files, .npy arrays or folders")


def check_exist(inputs: list[str]) -> None:
    """Existence first, so a typo is reported before anything is made."""
    for raw in inputs:
        if not Path(raw).exists():
            raise CarsegError(f"{raw}: no such file or folder", hint="check the input path")


def predict_and_write(
    model: Any,
    out: Path,
    items: list[Item],
    records: list[dict],
    keep: set[int],
    bbs: list[Any],
    rep: Reporter,
    opts: PredictOptions,
) -> float:
    """Predict the inputs not kept, write their folders and predictions.h5; returns the
    seconds spent writing."""
    h5 = _open_h5(out, items, model.meta, opts.num_samples, opts.seed)
    writing = [0.0]
    ok = False
    try:
        with rep.progress(len(items), "predict", start=len(keep)) as bar:

            def done(i: int, res: Any) -> None:
                w0 = time.perf_counter()
                outputs.write_folder(out, items[i], res, records[i], model.meta)
                h5.put(i, res)
                writing[0] += time.perf_counter() - w0
                bar.advance(1)

            model.predict_items(
                items, opts.num_samples, opts.seed, opts.batch_size, bbs, done, skip=keep
            )
        for i in sorted(keep):
            h5.put(i, outputs.read_folder(out / items[i].name, opts.num_samples))
        w0 = time.perf_counter()
        ok = True
    finally:
        h5.close(ok)
    writing[0] += time.perf_counter() - w0
    return writing[0]
