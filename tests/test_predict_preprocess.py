"""Preprocessing travels with the model: for each built-in source, a raw file fed to
`predict`'s reader (through the spec `prepare` recorded in the split files) gives the network
input `prepare` made from it, bit for bit; and the step registry's checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from test_prepare_cityscapes import RECIPE as CS_RECIPE
from test_prepare_cityscapes import make_layout as make_cityscapes_layout
from test_prepare_cityscapes import overrides as cs_overrides
from test_prepare_lidc import make_png_layout
from test_prepare_lidc import recipe as lidc_recipe

from carcli.data.preprocess import apply_spec, check_spec, read_attr
from carcli.predict.inputs import read_file
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare


def _spec_and_images(path: Path):
    with h5py.File(path, "r") as h5:
        return read_attr(h5), h5["image"][...].astype(np.float32)


def _rows(data: Path, split: str) -> dict[str, int]:
    with open(data / f"{split}.cases.csv", newline="") as fh:
        return {r["case"]: int(r["row"]) for r in csv.DictReader(fh)}


def test_lidc_png_bit_for_bit(tmp_path):
    make_png_layout(tmp_path / "raw")
    run_prepare(lidc_recipe(tmp_path, f"data.raw={tmp_path / 'raw'}"), quiet=True)
    for split in ("train", "test"):
        spec, images = _spec_and_images(tmp_path / "data" / f"{split}.h5")
        assert [s["step"] for s in spec] == ["grey", "center_crop", "standardize_per_image"]
        for case, row in _rows(tmp_path / "data", split).items():
            patient, stem = case.split("_", 1)
            raw = tmp_path / "raw" / split / "images" / patient / f"{stem}.png"
            (item,) = read_file(raw, spec, 1)
            assert item.image.dtype == np.float32
            np.testing.assert_array_equal(item.image, images[row])


def test_cityscapes_bit_for_bit(tmp_path):
    truth = make_cityscapes_layout(tmp_path / "raw")
    r = load_recipe(str(CS_RECIPE), cs_overrides(tmp_path, "data.blackbox_dir=null"))
    run_prepare(r, quiet=True)
    checked = 0
    for split in ("train", "val", "test"):
        spec, images = _spec_and_images(tmp_path / "data" / f"{split}.h5")
        assert spec[-1] == {"step": "cast", "dtype": "float16"}
        with open(tmp_path / "data" / f"{split}.cases.csv", newline="") as fh:
            rows = {r["case"]: int(r["row"]) for r in csv.DictReader(fh)}
        for frame, row in rows.items():
            raw = next((tmp_path / "raw" / "leftImg8bit").rglob(f"{frame}_leftImg8bit.png"))
            (item,) = read_file(raw, spec, 3)
            np.testing.assert_array_equal(item.image, images[row])
            checked += 1
    assert checked == len(truth)


def test_synthetic_steps_bit_for_bit(tmp_path):
    """No raw files: the generator's raw draw through the recorded normalize step."""
    from carcli.data import synthetic_draw

    r = load_recipe(
        "recipes/toy.yaml",
        [
            f"data.dir={tmp_path}",
            "data.synthetic.num_train=2",
            "data.synthetic.num_val=2",
            "data.synthetic.num_test=3",
        ],
    )
    r.data.synthetic.size = 16
    run_prepare(r, quiet=True)
    spec, images = _spec_and_images(tmp_path / "test.h5")
    assert [s["step"] for s in spec] == ["to_float", "normalize"]
    cfg = synthetic_draw.DrawConfig(
        size=16,
        channels=3,
        num_classes=3,
        noise=0.05,
        unambiguous_fraction=0.3,
        max_objects=2,
        p_flip_object=0.6,
        p_halo=0.5,
        flip_probs=(0.7, 0.3),
        shape_probs=(0.4, 0.7),
        max_factors=3,
    )
    from carcli.stages.prepare import split_seed

    colours = synthetic_draw.palette(cfg)
    for i in range(3):
        rng = np.random.default_rng([split_seed(r.seed, "test"), i])
        raw = synthetic_draw.draw_image(rng, cfg, colours)[0]
        x = apply_spec(spec[1:], raw.transpose(1, 2, 0))
        np.testing.assert_array_equal(x, images[i])
    # and an 8-bit PNG of the raw image lands within the quantisation step
    png = tmp_path / "x.png"
    Image.fromarray(np.clip(np.round(raw.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)).save(
        png
    )
    (item,) = read_file(png, spec, 3)
    std = np.array(spec[1]["std"], np.float32)[:, None, None]
    clipped = (raw < 0) | (raw > 1)
    err = np.abs(item.image - images[2])[~clipped]
    assert err.max() <= (0.5 / 255 / std.min()) + 1e-5


def test_prepared_without_attribute_has_no_spec(tmp_path, write_split):
    path = write_split(tmp_path / "train.h5")
    with h5py.File(path, "r") as h5:
        assert read_attr(h5) is None


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({"step": "grey"}, "must be a list"),
        ([{"step": "sharpen"}], "valid: cast, center_crop"),
        ([{"step": "center_crop"}], "lacks ['size']"),
        ([{"step": "center_crop", "size": "big"}], "bad 'size'"),
        ([{"step": "resize", "scale": 0.5, "resample": "cubic"}], "bilinear or nearest"),
        ([{"step": "resize"}], "size or scale"),
        ([{"step": "cast", "dtype": "int8"}], "float16 or float32"),
    ],
)
def test_bad_specs_name_the_step(spec, needle):
    with pytest.raises(ValueError, match=None) as err:
        check_spec(spec, "model.json")
    assert needle in str(err.value) and "model.json" in str(err.value)


def test_steps_convert_channels():
    grey = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    x = apply_spec([{"step": "grey_to_rgb"}, {"step": "to_float", "divide_by": 255}], grey)
    assert x.shape == (3, 4, 4) and (x[0] == x[2]).all()
    rgb = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    assert apply_spec([{"step": "grey"}], rgb).shape == (1, 4, 6)
    assert apply_spec([{"step": "resize", "scale": 0.5}], rgb).shape == (3, 2, 3)
    assert apply_spec([{"step": "center_crop", "size": 2}], rgb).shape == (3, 2, 2)
    assert json.loads(json.dumps(check_spec([{"step": "standardize_per_image"}], "x")))
