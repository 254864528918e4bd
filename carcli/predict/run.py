"""`carseg predict MODEL INPUT...`: a thin command over `load_model(...).predict`.

Order of work, so that a bad input never leaves a half-written output: load and verify the
model; check `--out` (not inside an input folder, writable); read and preprocess every
input and its black-box prediction; decide per input whether its folder can be kept (a rerun
keeps a complete folder whose prediction.json matches) or must be made; only then predict
and write, each folder atomically, and predictions.h5 last.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from carcli.errors import CarsegError
from carcli.predict import outputs
from carcli.predict.inputs import SUFFIXES, Item, not_inputs
from carcli.runtime.interrupt import stops_at_once
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
    import carcli

    attrs = {
        "num_samples": n,
        "seed": seed,
        "calibrator_sha256": meta["calibrator"].get("sha256") or "",
        "refiner_sha256": meta["refiner"].get("sha256") or "",
        "class_names": meta["class_names"],
        "carseg_version": carcli.__version__,
    }
    return outputs.PredictionsFile(
        out / "predictions.h5", items, n, int(meta["num_classes"]), attrs
    )


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """`carseg predict RECIPE INPUT... key=value...`: (inputs, recipe overrides). An argument
    is an override when it reads `dotted.key=value` and no file or folder has that name."""
    inputs, overrides = [], []
    for arg in args:
        is_override = re.match(r"[A-Za-z_][\w.]*=", arg) and not Path(arg).exists()
        (overrides if is_override else inputs).append(arg)
    return inputs, overrides


def _check_args(inputs: list[str], num_samples: int, batch_size: int) -> None:
    if num_samples < 1 or num_samples > 1000 or batch_size < 1:
        raise CarsegError("--num-samples must be 1..1000 and --batch-size at least 1")
    if not inputs:
        raise CarsegError("no inputs given", hint="pass image files, .npy arrays or folders")


def _check_exist(inputs: list[str]) -> None:
    """Existence first, so a typo is reported before anything is made."""
    for raw in inputs:
        if not Path(raw).exists():
            raise CarsegError(f"{raw}: no such file or folder", hint="check the input path")


def _predict_and_write(
    model: Any,
    out: Path,
    items: list[Item],
    records: list[dict],
    keep: set[int],
    bbs: list[Any],
    rep: Reporter,
    num_samples: int,
    seed: int,
    batch_size: int,
) -> float:
    """Predict the inputs not kept, write their folders and predictions.h5; returns the
    seconds spent writing."""
    h5 = _open_h5(out, items, model.meta, num_samples, seed)
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

            model.predict_items(items, num_samples, seed, batch_size, bbs, done, skip=keep)
        for i in sorted(keep):
            h5.put(i, outputs.read_folder(out / items[i].name, num_samples))
        w0 = time.perf_counter()
        ok = True
    finally:
        h5.close(ok)
    writing[0] += time.perf_counter() - w0
    return writing[0]


def run_predict(
    model_path: str | Path,
    inputs: list[str],
    out: str | Path = "predictions",
    num_samples: int = 16,
    seed: int = 0,
    blackbox: str | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    overwrite: bool = False,
    quiet: bool = False,
    recursive: bool = False,
    speed: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Predict and write; returns counts and the share of wall time spent writing files.
    F and G run with the model's speed options, as `sample` runs them; ``speed`` overrides
    some (``--speed KEY=VALUE``). ``overrides`` (`key=value`) apply to a recipe MODEL."""
    from carcli.api import load_model

    t0 = time.perf_counter()
    rep = Reporter(quiet)
    _check_args(inputs, num_samples, batch_size)
    model = load_model(model_path, device, speed, overrides)
    for note in model.speed_notes:
        rep.line(note)
    out = Path(out)
    _check_exist(inputs)
    check_out(out, inputs)
    items = model.read(inputs, recursive)
    skipped = not_inputs(inputs, recursive)
    if skipped:  # one line, every file named
        rep.console.print(  # even with --quiet: a warning
            f"carseg: not read ({len(skipped)} file(s) that are not {'/'.join(SUFFIXES)} "
            "inputs): " + ", ".join(str(p) for p in skipped),
            markup=False,
        )
    bbs = model.blackboxes(items, blackbox)
    records = [outputs.expected_record(it, num_samples, seed, model.meta) for it in items]
    keep = plan(out, items, records, overwrite)
    make_out(out)
    again = "rerun it without --overwrite" if overwrite else "the same command"
    with stops_at_once(
        f"interrupted; every input finished so far is kept in {out} (one folder each) and "
        f"{again} continues with the others"
    ):
        write_s = _predict_and_write(
            model, out, items, records, keep, bbs, rep, num_samples, seed, batch_size
        )
    wall = time.perf_counter() - t0
    rep.line(
        f"predictions written: {out} ({len(items)} inputs x {num_samples} samples; "
        f"{len(keep)} kept from an earlier run)"
    )
    return {
        "inputs": len(items),
        "kept": len(keep),
        "wall_s": wall,
        "write_s": write_s,
        "write_share": write_s / wall if wall > 0 else 0.0,
        "speed": model.meta["speed_applied"],
    }


def parse_speed(pairs: list[str] | None) -> dict[str, Any]:
    """``--speed KEY=VALUE`` options (values as YAML scalars: true, false, bf16)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CarsegError(
                f"--speed {pair}: expected KEY=VALUE", hint="e.g. --speed fold_bn=true"
            )
        out[key.strip()] = yaml.safe_load(value)
    return out
