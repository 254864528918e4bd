"""Every bad input of `carseg predict` through the command line: exit status 1, one line on
stderr naming the file and the fix, no traceback, and nothing half-written (no input folder
under --out, nothing changed under the inputs and the bundle). The case ids are rows of
docs/reliability.md's table (tests/reliability.py, PREDICT_BAD_INPUTS)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from predict_fixtures import tiny_recipe, trained, write_inputs
from reliability import PREDICT_BAD_INPUTS, files_under
from typer.testing import CliRunner

from carcli.cli.app import app

__all__ = ["trained"]


@pytest.fixture(scope="module")
def blackbox_bundle(tmp_path_factory) -> Path:
    """A tiny model whose F takes a black box (class ids), exported."""
    from carcli.bundle.export import run_export
    from carcli.data.dataset import Classes, write_dataset
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    tmp = tmp_path_factory.mktemp("bb")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        write_dataset(
            tmp / "data" / f"{split}.h5",
            image=rng.standard_normal((n, 3, 16, 16)).astype(np.float32),
            label=rng.integers(0, 3, (n, 1, 16, 16), dtype=np.uint8),
            classes=Classes(3),
            blackbox=rng.integers(0, 3, (n, 16, 16), dtype=np.uint8),
        )
    r = tiny_recipe(tmp, "data.source=prepared")
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    return run_export(r, quiet=True)


@dataclass
class Case:
    setup: Callable[[Path, Path], list[str]]  # (root, bundle) -> predict arguments
    needles: tuple[str, ...]


def _inputs(root: Path) -> Path:
    return root / "in"


def _broken_png(root: Path, bundle: Path) -> list[str]:
    data = (_inputs(root) / "img0.png").read_bytes()
    (_inputs(root) / "img0.png").write_bytes(data[: len(data) // 2])
    return [str(bundle), str(_inputs(root))]


def _text_png(root: Path, bundle: Path) -> list[str]:
    (_inputs(root) / "notes.png").write_text("not an image\n")
    return [str(bundle), str(_inputs(root))]


def _empty_folder(root: Path, bundle: Path) -> list[str]:
    (root / "empty").mkdir()
    return [str(bundle), str(_inputs(root)), str(root / "empty")]


def _grey_png(root: Path, bundle: Path) -> list[str]:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(_inputs(root) / "grey.png")
    return [str(bundle), str(_inputs(root))]


def _npy_channels(root: Path, bundle: Path) -> list[str]:
    np.save(_inputs(root) / "two.npy", np.zeros((2, 16, 16), np.float32))
    return [str(bundle), str(_inputs(root))]


def _npy_nan(root: Path, bundle: Path) -> list[str]:
    x = np.zeros((3, 16, 16), np.float32)
    x[1, 2, 3] = np.nan
    np.save(_inputs(root) / "nan.npy", x)
    return [str(bundle), str(_inputs(root))]


def _missing_file(root: Path, bundle: Path) -> list[str]:
    (bundle / "refiner.safetensors").unlink()
    return [str(bundle), str(_inputs(root))]


def _tampered(root: Path, bundle: Path) -> list[str]:
    p = bundle / "calibrator.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    return [str(bundle), str(_inputs(root))]


def _schema(root: Path, bundle: Path) -> list[str]:
    m = json.loads((bundle / "model.json").read_text())
    m["schema"] = "carseg.bundle/2"
    (bundle / "model.json").write_text(json.dumps(m))
    return [str(bundle), str(_inputs(root))]


def _blackbox_missing(root: Path, bundle: Path) -> list[str]:
    bb = root / "bb"
    bb.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bb / "arr0.png")
    npys = sorted(str(p) for p in _inputs(root).glob("*.npy"))
    return [str(root / "bbbundle"), *npys, "--blackbox", str(bb)]


def _no_preprocessing(root: Path, bundle: Path) -> list[str]:
    return [str(root / "bbbundle"), str(_inputs(root) / "img0.png")]


def _out_inside(root: Path, bundle: Path) -> list[str]:
    return [str(bundle), str(_inputs(root)), "--out", str(_inputs(root) / "pred")]


def _unwritable(root: Path, bundle: Path) -> list[str]:
    (root / "afile").write_text("x")
    if os.geteuid() == 0:  # root writes anywhere: a path under a file cannot be made by anyone
        return [str(bundle), str(_inputs(root)), "--out", str(root / "afile" / "out")]
    (root / "ro").mkdir()
    (root / "ro").chmod(0o500)
    return [str(bundle), str(_inputs(root)), "--out", str(root / "ro" / "out")]


CASES: dict[str, Case] = {
    "predict-truncated-image": Case(_broken_png, ("img0.png", "not a readable image")),
    "predict-text-as-png": Case(_text_png, ("notes.png", "not a readable image")),
    "predict-empty-folder": Case(_empty_folder, ("empty", "no inputs")),
    "predict-grey-into-rgb": Case(_grey_png, ("grey.png", "1 channel(s)", "takes 3")),
    "predict-npy-channels": Case(_npy_channels, ("two.npy", "2 channel(s)", "takes 3")),
    "predict-npy-nan": Case(_npy_nan, ("nan.npy", "NaN")),
    "predict-bundle-missing-file": Case(_missing_file, ("refiner.safetensors", "missing")),
    "predict-bundle-tampered": Case(_tampered, ("calibrator.safetensors", "sha256")),
    "predict-bundle-schema": Case(_schema, ("carseg.bundle/2", "carseg.bundle/1")),
    "predict-blackbox-missing": Case(_blackbox_missing, ("arr1", "black-box prediction")),
    "predict-no-preprocessing": Case(_no_preprocessing, ("img0.png", "--preprocess")),
    "predict-out-inside-input": Case(_out_inside, ("inside the input folder",)),
    "predict-out-unwritable": Case(_unwritable, ("--out", "not writable")),
}


def test_every_case_has_a_table_row() -> None:
    assert sorted(CASES) == sorted(PREDICT_BAD_INPUTS)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_predict_input(case_id: str, trained, blackbox_bundle: Path, tmp_path: Path) -> None:
    tmp, _, bundle = trained
    root = tmp_path / "case"
    write_inputs(tmp, _inputs(root), n=2)
    shutil.copytree(bundle, root / "bundle")
    shutil.copytree(blackbox_bundle, root / "bbbundle")
    args = CASES[case_id].setup(root, root / "bundle")
    before = files_under(root)
    out_default = ["--out", str(root / "out")] if "--out" not in args else []
    result = CliRunner().invoke(app, ["predict", *args, *out_default, "-q"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carseg: error: "), lines
    for needle in CASES[case_id].needles:
        assert needle in lines[0], lines[0]
    after = files_under(root)
    made = {p for p in after if p not in before}
    assert not made and not (root / "out").exists(), made  # no input folder, no .h5


def test_blackbox_model_predicts_with_its_predictions(trained, blackbox_bundle, tmp_path):
    """The positive case: one black-box PNG per input, or the HDF5 split's own `blackbox`."""
    from carcli import load_model

    tmp, _, _ = trained
    inputs = write_inputs(tmp, tmp_path / "in", n=2, png=False)
    bb = tmp_path / "bb"
    bb.mkdir()
    for name in ("arr0", "arr1"):
        Image.fromarray(np.full((16, 16), 2, np.uint8)).save(bb / f"{name}.png")
    out = tmp_path / "out"
    args = ["predict", str(blackbox_bundle), str(inputs), "--blackbox", str(bb), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "arr1" / "prediction.json").exists()
    split = blackbox_bundle.parent.parent / "data" / "test.h5"
    pred = load_model(blackbox_bundle).predict([split], num_samples=2)
    assert pred.samples.shape == (4, 2, 16, 16)
