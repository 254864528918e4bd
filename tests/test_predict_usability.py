"""`carseg predict` as users of other tools expect it: a recipe MODEL takes `key=value`
overrides like every other command; an image's alpha channel follows a documented rule
(fully opaque: dropped; any transparency: refused with a way to flatten it); a file in an
input folder that is not an input is reported; overview.png has a class legend and the
class colours are the dataset's own where it defines them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import tiny_overrides
from PIL import Image
from predict_fixtures import REPO, TINY, trained, write_inputs
from typer.testing import CliRunner

from carcli.cli.app import app

__all__ = ["trained"]
runner = CliRunner()
TOY = REPO / "recipes" / "toy.yaml"


def _predict(*args: str | Path, code: int = 0):  # noqa: ANN202
    res = runner.invoke(app, ["predict", *map(str, args)])
    assert res.exit_code == code, res.output
    return res


def _samples(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((folder / "samples").glob("*.png"))]


def test_predict_recipe_takes_overrides(trained, tmp_path):
    """The toy recipe with the run's overrides (its run_dir= among them) predicts what the
    exported bundle predicts; without them it names the missing calibrator of the toy run."""
    tmp, _, bundle = trained
    inputs = write_inputs(tmp, tmp_path / "in", n=2, png=False)
    over = tiny_overrides(tmp, base=TINY)
    _predict(TOY, inputs, *over, "--out", tmp_path / "a", "--num-samples", 3, "-q")
    _predict(bundle, inputs, "--out", tmp_path / "b", "--num-samples", 3, "-q")
    for name in ("arr0", "arr1"):
        a, b = _samples(tmp_path / "a" / name), _samples(tmp_path / "b" / name)
        assert len(a) == 3
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    # a bundle is fixed at export: overrides are refused, naming them
    res = _predict(bundle, inputs, "seed=3", "--out", tmp_path / "c", "-q", code=1)
    assert "takes no recipe overrides (seed=3)" in res.stderr


def _rgba(tmp: Path, folder: Path, alpha: np.ndarray | None) -> Path:
    """img0.png of write_inputs as RGBA with the given alpha (opaque when None)."""
    src = write_inputs(tmp, folder, n=1)
    rgb = np.asarray(Image.open(src / "img0.png"))
    a = np.full(rgb.shape[:2], 255, np.uint8) if alpha is None else alpha
    out = folder / "rgba.png"
    Image.fromarray(np.dstack([rgb, a]), "RGBA").save(out)
    return out


def test_opaque_alpha_is_dropped(trained, tmp_path):
    tmp, _, bundle = trained
    rgba = _rgba(tmp, tmp_path / "in", None)
    rgb = tmp_path / "in" / "img0.png"
    _predict(bundle, rgba, rgb, "--out", tmp_path / "out", "--num-samples", 3, "-q")
    # F's probabilities (not the samples: their noise key follows the file's bytes)
    a, b = (np.load(tmp_path / "out" / n / "probabilities.npy") for n in ("rgba", "img0"))
    np.testing.assert_array_equal(a, b)


def test_transparent_pixels_are_refused_with_how_to_flatten(trained, tmp_path):
    tmp, _, bundle = trained
    alpha = np.full((16, 16), 255, np.uint8)
    alpha[0, :3] = 0
    rgba = _rgba(tmp, tmp_path / "in", alpha)
    res = _predict(bundle, rgba, "--out", tmp_path / "out", "-q", code=1)
    (line,) = res.stderr.strip().splitlines()
    assert f"{rgba}: 3 of 256 pixels are (partly) transparent" in line
    assert "-alpha remove" in line and "alpha_composite" in line
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_an_input_is_reported(trained, tmp_path):
    tmp, _, bundle = trained
    inputs = write_inputs(tmp, tmp_path / "in", n=1, png=False)
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "labels.csv").write_text("a,b")
    res = _predict(bundle, inputs, "--out", tmp_path / "out", "--num-samples", 2, "-q")
    lines = [x for x in res.stderr.splitlines() if "not read" in x]
    assert lines == [
        f"carseg: not read (2 file(s) that are not .png/.jpg/.jpeg/.tif/.tiff/.npy/.h5/.hdf5 "
        f"inputs): {inputs / 'labels.csv'}, {inputs / 'notes.txt'}"
    ]
    assert (tmp_path / "out" / "arr0" / "prediction.json").exists()


def test_overview_legend_and_the_dataset_class_colours(trained, tmp_path):
    """The synthetic dataset records the colour it draws each class in; model.json's palette
    (so the sample PNGs and overview.png) uses them; overview.png shows a swatch per class."""
    from carcli.stages.prepare import synthetic_class_colors

    tmp, _, bundle = trained
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["palette"] == synthetic_class_colors(3)
    inputs = write_inputs(tmp, tmp_path / "in", n=1, png=False)
    _predict(bundle, inputs, "--out", tmp_path / "out", "--num-samples", 4, "-q")
    folder = tmp_path / "out" / "arr0"
    sample = Image.open(folder / "samples" / "000.png")
    flat = sample.getpalette()[: 3 * 3]
    assert [flat[i : i + 3] for i in range(0, 9, 3)] == meta["palette"]
    over = np.asarray(Image.open(folder / "overview.png").convert("RGB"))
    legend = over[-14:]  # the legend line below the tiles
    for rgb in meta["palette"]:
        assert (legend == np.array(rgb, np.uint8)).all(axis=-1).sum() >= 50, rgb
