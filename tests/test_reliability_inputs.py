"""Every bad input of the reliability issue, through the command line: exit status 1, one
line on stderr naming the file or key and the fix, no traceback, and nothing left behind
(every file under the run and data folders is as it was: same names, sizes and times).

Each case copies a finished tiny run (dataset, F, G, bank), breaks one thing and runs one
command. The case ids are the rows of docs/reliability.md's table (tests/reliability.py).
"""

from __future__ import annotations

import errno
import json
import shutil
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from reliability import BAD_INPUTS, files_under, write_recipe
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from carcli.cli.app import app

# ------------------------------------------------------------------------- breaking things


def _edit(path: Path, fn: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as h5:
        fn(h5)


def _set(name: str, row: tuple, value: float | int) -> Callable[[h5py.File], None]:
    def fn(h5: h5py.File) -> None:
        data = h5[name][...]
        data[row] = value
        del h5[name]
        h5.create_dataset(name, data=data)

    return fn


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _corrupt_chunk(path: Path, name: str) -> None:
    with h5py.File(path) as h5:
        chunk = h5[name].id.get_chunk_info(1)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset : chunk.byte_offset + chunk.size] = b"\xab" * chunk.size
    path.write_bytes(bytes(data))


def _set_metadata(path: Path, **meta: str) -> None:
    with safe_open(str(path), framework="pt") as fh:
        md = dict(fh.metadata() or {})
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={**md, **meta})


def _other_dataset(root: Path, **shape: int) -> Path:
    """data2/ with train/val/test like data/ but other channels or classes."""
    from carcli.data.synthetic import generate_synthetic
    from carcli.data.synthetic_draw import DrawConfig

    out = root / "data2"
    from carcli.data.dataset import Classes, write_dataset

    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        spec = DrawConfig(
            size=16, channels=shape.get("channels", 3), num_classes=shape.get("classes", 3)
        )
        s = generate_synthetic(n, spec, seed=1)
        write_dataset(
            out / f"{split}.h5",
            image=s.image,
            label=s.label,
            label_weight=s.label_weight,
            classes=Classes(shape.get("classes", 3), class_names=s.class_names),
        )
    return out


ENOSPC = "No space left on device"


def _full_disk_safetensors(mp: pytest.MonkeyPatch) -> None:
    """safetensors writes part of the file, then fails as it does on a full disk."""
    from safetensors import SafetensorError

    import carcli.artefacts.checkpoint as ck

    def save_file(tensors, filename, metadata=None):  # noqa: ANN001
        Path(filename).write_bytes(b"\x00" * 64)
        raise SafetensorError(
            f"Error while serializing: I/O error: {ENOSPC} (os error {errno.ENOSPC})"
        )

    mp.setattr(ck, "save_file", save_file)


def _full_disk_h5py(mp: pytest.MonkeyPatch) -> None:
    """The second HDF5 file the sample stage creates fails as h5py fails on a full disk."""
    import carcli.sampling.chunks as chunks_mod

    created = []

    def File(path, mode="r", *a, **k):  # noqa: ANN001, N802
        if mode == "w":
            created.append(path)
            if len(created) == 2:
                Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
                raise RuntimeError(
                    "Can't decrement id ref count (unable to extend file properly, "
                    f"errno = {errno.ENOSPC}, error message = '{ENOSPC}')"
                )
        return h5py.File(path, mode, *a, **k)

    mp.setattr(chunks_mod, "h5py", types.SimpleNamespace(File=File))


def _full_disk_fsync(mp: pytest.MonkeyPatch) -> None:
    import os

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, ENOSPC)

    mp.setattr(os, "fsync", fsync)


# ------------------------------------------------------------------------------- the cases


@dataclass
class Case:
    args: list[str]  # after the command name: RECIPE is replaced by the recipe path
    needles: list[str]  # each must be in the error line ({root} is the case's folder)
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    untouched: bool = True  # every existing file unchanged and nothing new; else no temps


def _rm(rel: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def fn(root: Path, mp: pytest.MonkeyPatch) -> None:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return fn


def _then(*fns: Callable[[Path, pytest.MonkeyPatch], None]):
    def fn(root: Path, mp: pytest.MonkeyPatch) -> None:
        for f in fns:
            f(root, mp)

    return fn


TRAIN = "data/train.h5"
TEST = "data/test.h5"
F = "run/calibrator/model.safetensors"
G = "run/refiner/model.safetensors"
BANK = "run/samples/test.h5"

CASES: dict[str, Case] = {
    "malformed-yaml": Case(
        ["train-calibrator", "BAD"],
        ["bad.yaml", "malformed YAML (line 2"],
        lambda root, mp: (root / "bad.yaml").write_text("name: x\nseed: 1: 2\n"),
    ),
    "wrong-type": Case(
        ["train-calibrator", "RECIPE", "calibrator.steps=fast"],
        ["calibrator.steps -> expected int, got 'fast'"],
    ),
    "bad-choice": Case(
        ["train-refiner", "RECIPE", "refiner.calibration_loss=mse"],
        ["refiner.calibration_loss -> expected one of kl, kl_forward, ce, none"],
    ),
    "unknown-key": Case(
        ["sample", "RECIPE", "sample.num_sample=3"],
        ["sample.num_sample -> unknown key; did you mean sample.num_samples?"],
    ),
    "missing-dataset": Case(
        ["train-calibrator", "RECIPE", "--overwrite"],
        ["no dataset at {root}/data/train.h5", "carseg prepare"],
        _rm(TRAIN),
    ),
    "missing-checkpoint": Case(
        ["train-refiner", "RECIPE", "--overwrite"],
        [f"no calibrator checkpoint at {{root}}/{F}", "carseg train-calibrator"],
        _rm("run/calibrator"),
    ),
    "missing-refiner": Case(
        ["sample", "RECIPE", "--overwrite"],
        [f"no refiner checkpoint at {{root}}/{G}", "carseg train-refiner"],
        _rm("run/refiner"),
    ),
    "missing-bank": Case(
        ["evaluate", "RECIPE"],
        [f"no sample bank at {{root}}/{BANK}", "carseg sample"],
        _rm(BANK),
    ),
    "nothing-to-resume": Case(
        ["train-refiner", "RECIPE", "--resume"],
        ["nothing to resume in {root}/run/refiner", "carseg train-refiner"],
        _rm("run/refiner"),
    ),
    "truncated-hdf5": Case(
        ["train-calibrator", "RECIPE", "--overwrite"],
        ["{root}/data/train.h5: not a readable HDF5 file", "truncated or corrupt"],
        lambda root, mp: _truncate(root / TRAIN),
    ),
    "corrupt-hdf5": Case(
        ["sample", "RECIPE", "--overwrite"],
        ["{root}/data/test.h5: unreadable data", "'image'", "carseg prepare"],
        lambda root, mp: _corrupt_chunk(root / TEST, "image"),
    ),
    "truncated-safetensors": Case(
        ["train-refiner", "RECIPE", "--overwrite"],
        [f"{{root}}/{F}: not a readable safetensors file", "carseg train-calibrator"],
        lambda root, mp: _truncate(root / F, 0.8),
    ),
    "corrupt-safetensors": Case(
        ["sample", "RECIPE", "--overwrite"],
        [f"{{root}}/{G}: not a readable safetensors file", "carseg train-refiner"],
        lambda root, mp: (root / G).write_bytes(b"\xff" * 8 + b"{garbage" * 20),
    ),
    "truncated-bank": Case(
        ["evaluate", "RECIPE"],
        [f"{{root}}/{BANK}: not a readable HDF5 file", "carseg sample"],
        lambda root, mp: _truncate(root / BANK),
    ),
    "dataset-schema": Case(
        ["train-calibrator", "RECIPE", "--overwrite"],
        ["{root}/data/train.h5", "'carseg.dataset/2', expected 'carseg.dataset/1'"],
        lambda root, mp: _edit(
            root / TRAIN, lambda h5: h5.attrs.modify("schema", "carseg.dataset/2")
        ),
    ),
    "checkpoint-schema": Case(
        ["sample", "RECIPE", "--overwrite"],
        [f"{{root}}/{F}: schema is 'carseg.checkpoint/9'", "'carseg.checkpoint/1'"],
        lambda root, mp: _set_metadata(root / F, schema="carseg.checkpoint/9"),
    ),
    "bank-schema": Case(
        ["evaluate", "RECIPE"],
        [f"{{root}}/{BANK}: schema is 'carseg.samples/0'", "carseg sample"],
        lambda root, mp: _edit(
            root / BANK, lambda h5: h5.attrs.modify("schema", "carseg.samples/0")
        ),
    ),
    "checkpoint-stage": Case(
        ["sample", "RECIPE", "--overwrite"],
        [f"{{root}}/{G}: is a 'calibrator' checkpoint, expected 'refiner'", "train-refiner"],
        lambda root, mp: shutil.copy(root / F, root / G),
    ),
    "checkpoint-role": Case(
        ["sample", "RECIPE", "--overwrite"],
        [f"{{root}}/{G}: holds a 'discriminator', expected 'refiner'", "train-refiner"],
        lambda root, mp: shutil.copy(root / "run/refiner/discriminator.safetensors", root / G),
    ),
    "resume-other-arch": Case(
        [
            "train-calibrator",
            "RECIPE",
            "--resume",
            "calibrator.arch=convnet",
            "calibrator.depth=null",
        ],
        ["last.safetensors: does not fit the networks of this recipe", "resume with the recipe"],
    ),
    "class-count": Case(
        ["train-refiner", "RECIPE", "--overwrite", "data.dir={root}/data2"],
        [f"{{root}}/{F}: was trained on data with num_classes = 3", "has 4", "retrain"],
        lambda root, mp: _other_dataset(root, classes=4),
    ),
    "channel-count": Case(
        ["sample", "RECIPE", "--overwrite", "data.dir={root}/data2"],
        [f"{{root}}/{F}: was trained on data with calibrator_in_channels = 3", "has 1"],
        lambda root, mp: _other_dataset(root, channels=1),
    ),
    "nan-image": Case(
        ["train-calibrator", "RECIPE", "--overwrite"],
        ["{root}/data/train.h5: image row 5 holds NaN or infinite values"],
        lambda root, mp: _edit(root / TRAIN, _set("image", (5, 0, 3, 3), np.nan)),
    ),
    "inf-image": Case(
        ["sample", "RECIPE", "--overwrite"],
        ["{root}/data/test.h5: image row 2 holds NaN or infinite values"],
        lambda root, mp: _edit(root / TEST, _set("image", (2, 1, 0, 0), np.inf)),
    ),
    "label-out-of-range": Case(
        ["train-refiner", "RECIPE", "--overwrite"],
        ["{root}/data/train.h5: label row 3 holds class id 7 >= num_classes 3"],
        lambda root, mp: _edit(root / TRAIN, _set("label", (3, 0, 4, 4), 7)),
    ),
    "weights-sum": Case(
        ["evaluate", "RECIPE", "--overwrite"],
        ["{root}/data/test.h5: label_weight row 1 sums to 0.500000, expected 1"],
        lambda root, mp: _edit(root / TEST, _weights_half_row_1),
    ),
    "bank-index": Case(
        ["evaluate", "RECIPE"],
        [
            f"{{root}}/{BANK}: index does not match {{root}}/{TEST}",
            "carseg sample {root}/r.yaml --overwrite",
        ],
        lambda root, mp: _edit(root / BANK, _set("index", (1,), 0)),
    ),
    "bank-class-ids": Case(
        ["evaluate", "RECIPE"],
        [
            f"{{root}}/{BANK}: samples hold class id 9 >= num_classes 3",
            "carseg sample {root}/r.yaml --overwrite",
        ],
        lambda root, mp: _edit(root / BANK, lambda h5: h5["samples"].__setitem__((0, 0, 0, 0), 9)),
    ),
    "overwrite-bad-input": Case(
        ["train-calibrator", "RECIPE", "--overwrite"],
        ["{root}/data/val.h5: label row 0 holds class id 200"],
        lambda root, mp: _edit(root / "data/val.h5", _set("label", (0, 1, 0, 0), 200)),
    ),
    "pickle-no-opt-in": Case(
        [
            "prepare",
            "RECIPE",
            "data.source=lidc-pickle",
            "data.raw={root}/evil.pkl",
            "data.dir={root}/lidc",
        ],
        ["{root}/evil.pkl: the lidc-pickle source unpickles the file", "data.allow_pickle"],
        lambda root, mp: _evil_pickle(root / "evil.pkl", root / "PWNED"),
    ),
    "unwritable-run-dir": Case(
        ["train-calibrator", "RECIPE", "run_dir={root}/blocker/run"],
        ["cannot create directory {root}/blocker/run/calibrator", "run_dir"],
        lambda root, mp: (root / "blocker").write_text("a file, not a folder"),
    ),
    "disk-full-checkpoint": Case(
        ["train-calibrator", "RECIPE"],
        ["cannot write {root}/run/calibrator/best.safetensors: " + ENOSPC, "free disk space"],
        _then(_rm("run/calibrator"), lambda root, mp: _full_disk_safetensors(mp)),
        untouched=False,
    ),
    "disk-full-bank": Case(
        ["sample", "RECIPE", "--overwrite"],
        ["cannot write {root}/run/samples/.test.partial/chunk-00000008.h5: " + ENOSPC],
        lambda root, mp: _full_disk_h5py(mp),
        untouched=False,
    ),
    "disk-full-metrics": Case(
        ["evaluate", "RECIPE", "--overwrite"],
        ["cannot write {root}/run/eval/test/per_case.csv: " + ENOSPC],
        lambda root, mp: _full_disk_fsync(mp),
        untouched=False,
    ),
}


class _Evil:
    """Unpickling this creates a file: proof that code from the data ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _evil_pickle(path: Path, marker: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps(_Evil(marker)))


def _weights_half_row_1(h5: h5py.File) -> None:
    w = h5["label_weight"][...]
    w[1] = w[1] / w[1].sum() * 0.5
    del h5["label_weight"]
    h5.create_dataset("label_weight", data=w)


def test_every_case_has_a_table_row() -> None:
    assert sorted(CASES) == sorted(BAD_INPUTS)


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input(
    case_id: str, finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[case_id]
    root = tmp_path / "case"
    shutil.copytree(finished, root, symlinks=False)
    write_recipe(root / "r.yaml", root / "run", root / "data")
    if case_id == "disk-full-metrics":
        CliRunner().invoke(app, ["evaluate", str(root / "r.yaml"), "-q"])  # metrics to replace
    if case.setup:
        case.setup(root, monkeypatch)
    before = files_under(root)
    args = [
        str(root / "r.yaml") if a == "RECIPE" else str(root / "bad.yaml") if a == "BAD" else a
        for a in case.args
    ]
    args = [a.replace("{root}", str(root)) for a in args] + ["-q"]
    result = CliRunner().invoke(app, args)
    monkeypatch.undo()

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carseg: error: "), lines
    for needle in case.needles:
        assert needle.replace("{root}", str(root)) in lines[0], lines[0]
    after = files_under(root)
    assert not [p for p in after if p.endswith(".tmp") or p.endswith(".lock")], after
    if case.untouched:
        assert after == before
    else:  # a write failed midway: the named file is not there, finished files are kept
        assert {p: after[p] for p in before if p in after} == {
            p: v for p, v in before.items() if p in after
        }
        assert all(not p.endswith(".safetensors") or p in before for p in after)


def test_bank_chunks_before_a_full_disk_are_kept(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the failure of `disk-full-bank`, the chunk finished before it is reused."""
    root = tmp_path / "case"
    shutil.copytree(finished, root)
    recipe = write_recipe(root / "r.yaml", root / "run", root / "data")
    _full_disk_h5py(monkeypatch)
    assert CliRunner().invoke(app, ["sample", str(recipe), "--overwrite", "-q"]).exit_code == 1
    monkeypatch.undo()
    partial = root / "run" / "samples" / ".test.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["chunk-00000000.h5", "plan.json"]
    result = CliRunner().invoke(app, ["sample", str(recipe), "--overwrite", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "run" / "samples" / "manifest.json").read_text())
    assert manifest["chunks_reused"] == 1 and manifest["chunks"] == 6


def test_the_evil_pickle_does_run_code_with_the_opt_in(finished: Path, tmp_path: Path) -> None:
    """The pickle of `pickle-no-opt-in` is a real threat: with the opt-in it runs."""
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", tmp_path / "lidc")
    _evil_pickle(tmp_path / "evil.pkl", tmp_path / "PWNED")
    args = [
        "data.source=lidc-pickle",
        f"data.raw={tmp_path / 'evil.pkl'}",
        "data.allow_pickle=true",
    ]
    result = CliRunner().invoke(app, ["prepare", str(recipe), *args, "-q"])
    assert result.exit_code == 1 and (tmp_path / "PWNED").exists()
