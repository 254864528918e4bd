"""Importing per-image black-box predictions (data.blackbox_dir): matching by stem, class-id
PNGs and .npy probabilities, size checks, alignment with the prepared rows, and F's input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

from carcli.data.batches import BatchSource
from carcli.data.blackbox import BlackboxFolder
from carcli.data.dataset import DatasetFile
from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "blackbox_demo.yaml"
TINY = [
    "data.synthetic.num_train=6",
    "data.synthetic.num_val=3",
    "data.synthetic.num_test=2",
    "data.synthetic.size=16",
]


def _script():
    return load_script("blackbox_predictions")


def demo_recipe(tmp: Path, *extra: str):
    return load_recipe(
        str(DEMO),
        [
            f"data.dir={tmp / 'data'}",
            f"run_dir={tmp / 'run'}",
            f"data.blackbox_dir={tmp / 'bb'}",
            *TINY,
            *extra,
        ],
    )


def test_folder_reads_ids_and_probabilities(tmp_path):
    ids = np.arange(32, dtype=np.uint8).reshape(4, 8) % 3
    ids[0, 0] = 255  # ignore is allowed
    Image.fromarray(ids).save(tmp_path / "a.png")
    big = np.kron(ids, np.ones((2, 2), np.uint8))  # the raw image's size: resized, nearest
    (tmp_path / "sub").mkdir()
    Image.fromarray(big).save(tmp_path / "sub" / "b_frame.png")
    f = BlackboxFolder(tmp_path, num_classes=3)
    np.testing.assert_array_equal(f.load(["a"], "image a", (4, 8)), ids)
    np.testing.assert_array_equal(
        f.load(["b_frame_leftImg8bit", "b_frame"], "image b", (4, 8), raw_size=(8, 16)), ids
    )
    with pytest.raises(CarsegError, match=r"b_frame.png: black-box prediction is 8x16"):
        f.load(["b_frame"], "image b", (4, 8))
    with pytest.raises(CarsegError, match=r"c.png \(or .npy\): no black-box prediction for img"):
        f.load(["c"], "img", (4, 8))
    probs = np.random.default_rng(0).random((5, 4, 8)).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    g = BlackboxFolder(tmp_path, num_classes=3)
    np.testing.assert_array_equal(g.load(["p"], "p", (4, 8)), probs.astype(np.float16))
    g = BlackboxFolder(tmp_path, num_classes=3)
    g.load(["a"], "a", (4, 8))  # class ids first: then every prediction must be ids
    with pytest.raises(CarsegError, match="p.npy: a probs prediction with 5 channels"):
        g.load(["p"], "p", (4, 8))


def test_folder_rejects_bad_predictions(tmp_path):
    with pytest.raises(CarsegError, match="not a folder"):
        BlackboxFolder(tmp_path / "none", 3)
    with pytest.raises(CarsegError, match="holds no .png or .npy"):
        BlackboxFolder(tmp_path, 3)
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "nan.npy", np.full((2, 4, 4), np.nan, np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.float32))
    f = BlackboxFolder(tmp_path, 3)
    with pytest.raises(CarsegError, match="x.png: class id 7 is not below 3"):
        f.load(["x"], "x", (4, 4))
    with pytest.raises(CarsegError, match="rgb.png: black-box PNG has mode RGB"):
        f.load(["rgb"], "rgb", (4, 4))
    with pytest.raises(CarsegError, match="nan.npy: black-box probabilities must be finite"):
        f.load(["nan"], "nan", (4, 4))
    with pytest.raises(CarsegError, match=r"flat.npy: .* shape \(4, 4\)"):
        f.load(["flat"], "flat", (4, 4))
    (tmp_path / "d").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d" / "x.png")
    with pytest.raises(CarsegError, match="also exists as"):
        BlackboxFolder(tmp_path, 3)


def test_synthetic_blackbox_aligns_with_rows_and_feeds_f(tmp_path):
    r = demo_recipe(tmp_path)
    script = _script()
    assert script.write_predictions(r, tmp_path / "bb") == 11
    run_prepare(r, quiet=True)
    from carcli.data.synthetic import generate_synthetic
    from carcli.data.synthetic_draw import DrawConfig
    from carcli.stages.prepare import split_seed

    s = generate_synthetic(3, DrawConfig(size=16), seed=split_seed(r.seed, "val"))
    with h5py.File(tmp_path / "data" / "val.h5") as h5:
        bb = h5["blackbox"][...]
        assert bb.dtype == np.uint8 and bb.shape == (3, 16, 16)
        np.testing.assert_array_equal(bb, script.most_likely_mode(s.label, s.label_weight))
    with DatasetFile(tmp_path / "data" / "val.h5") as ds:
        assert ds.info.calibrator_in_channels == 3 + 3
        b = BatchSource(ds).get(np.array([0, 2]), None, annotation=np.zeros(2, int))
        assert b.cond.shape == (2, 6, 16, 16)
        onehot = b.cond[:, 3:].numpy()
        np.testing.assert_array_equal(onehot.argmax(1), bb[[0, 2]])
        assert np.all(onehot.sum(1) == 1)


def test_probabilities_and_a_missing_prediction(tmp_path):
    r = demo_recipe(tmp_path)
    bb = tmp_path / "bb"
    bb.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3), ("test", 2)):
        for i in range(n):
            np.save(bb / f"{split}_{i:06d}.npy", rng.random((4, 16, 16)).astype(np.float32))
    run_prepare(r, quiet=True)
    with DatasetFile(tmp_path / "data" / "test.h5") as ds:
        assert ds.info.blackbox_channels == 4 and ds.h5["blackbox"].dtype == np.float16
    (bb / "test_000001.npy").unlink()
    with pytest.raises(CarsegError, match="test_000001.png \\(or .npy\\)"):
        run_prepare(demo_recipe(tmp_path / "again", f"data.blackbox_dir={bb}"), quiet=True)
    assert not (tmp_path / "again" / "data" / "train.h5").exists()  # nothing half-made


def test_demo_recipe_trains_f_on_image_and_blackbox(tmp_path):
    r = demo_recipe(
        tmp_path,
        "calibrator.steps=2",
        "calibrator.batch_size=2",
        "calibrator.val_every=0",
        "threads=1",
    )
    _script().write_predictions(r, tmp_path / "bb")
    run_prepare(r, quiet=True)
    from safetensors.numpy import load_file

    from carcli.training.calibrator import run_train_calibrator

    weights = load_file(str(run_train_calibrator(r, quiet=True)))
    first = [w for w in weights.values() if w.ndim == 4 and w.shape[2:] == (3, 3)][0]
    assert first.shape[1] == 6  # 3 image channels + 3 one-hot black-box channels
