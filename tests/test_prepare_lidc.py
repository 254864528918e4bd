"""`prepare` for LIDC from fabricated miniatures of the three public formats: shapes, crop,
label values, pairing of labels to images, splits by patient, the shared normalisation,
malformed inputs (exit 1 naming the file, no partial dataset), and every stage of
recipes/lidc.yaml for a few steps."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.data.lidc import split_series
from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "lidc.yaml"
SIZE = 180
runner = CliRunner()

# split -> patient -> [(z, crop)]: z-9.5 sorts after z-10.0 as text but before it as a number
LAYOUT = {
    "train": {"LIDC-IDRI-0001": [("10.0", 0), ("9.5", 0)], "LIDC-IDRI-0002": [("-3.5", 1)]},
    "val": {"LIDC-IDRI-0003": [("4.0", 0), ("4.0", 1)]},
    "test": {"LIDC-IDRI-0004": [("7.5", 0)]},
}
EMPTY_CASE = "LIDC-IDRI-0002_z--3.5_c1"  # no annotator marks a lesion here


def _image(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def _mask(seed: int, k: int, size: int = SIZE, empty: bool = False) -> np.ndarray:
    """A disc whose centre depends on the image and radius on the annotator."""
    m = np.zeros((size, size), np.uint8)
    if empty:
        return m
    y, x = np.mgrid[:size, :size]
    cy, cx = size // 2 + seed % 7 - 3, size // 2 - seed % 5 + 2
    m[(y - cy) ** 2 + (x - cx) ** 2 <= (4 + 3 * k) ** 2] = 255
    return m


def make_png_layout(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The DeepMind crops layout; returns case id -> (raw image, raw masks [4, H, W])."""
    truth = {}
    seed = 0
    for split, patients in LAYOUT.items():
        for patient, crops in patients.items():
            (root / split / "images" / patient).mkdir(parents=True, exist_ok=True)
            (root / split / "gt" / patient).mkdir(parents=True, exist_ok=True)
            for z, c in crops:
                stem = f"z-{z}_c{c}"
                case = f"{patient}_{stem}"
                img = _image(seed)
                masks = np.stack([_mask(seed, k, empty=case == EMPTY_CASE) for k in range(4)])
                Image.fromarray(img).save(root / split / "images" / patient / f"{stem}.png")
                for k in range(4):
                    Image.fromarray(masks[k]).save(
                        root / split / "gt" / patient / f"{stem}_l{k}.png"
                    )
                truth[case] = (img, masks)
                seed += 1
    return truth


def expected(img: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, written independently: centre crop, standardise, > 0."""
    o = (img.shape[0] - 128) // 2
    x = img[o : o + 128, o : o + 128].astype(np.float64)
    x = (x - x.mean()) / x.std()
    return x.astype(np.float32), (masks[:, o : o + 128, o : o + 128] > 0).astype(np.uint8)


def cases(data: Path, split: str) -> list[dict[str, str]]:
    with open(data / f"{split}.cases.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def recipe(tmp: Path, *extra: str):
    return load_recipe(str(RECIPE), [f"data.dir={tmp / 'data'}", f"run_dir={tmp / 'run'}", *extra])


def no_dataset_left(data: Path) -> bool:
    return not data.exists() or not [p for p in data.iterdir() if p.name != ".lock"]


@pytest.fixture(scope="module")
def png_prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lidc_png")
    truth = make_png_layout(tmp / "raw")
    run_prepare(recipe(tmp, f"data.raw={tmp / 'raw'}"), quiet=True)
    return tmp, truth


def test_png_shapes_crop_labels_and_pairing(png_prepared):
    tmp, truth = png_prepared
    data = tmp / "data"
    for split, patients in LAYOUT.items():
        rows = cases(data, split)
        n = sum(len(c) for c in patients.values())
        with h5py.File(data / f"{split}.h5") as h5:
            assert h5["image"].shape == (n, 1, 128, 128) and h5["image"].dtype == np.float32
            assert h5["label"].shape == (n, 4, 128, 128) and h5["label"].dtype == np.uint8
            assert "label_weight" not in h5
            assert h5.attrs["num_classes"] == 2 and h5.attrs["eval_classes"] == "[1]"
            for i, row in enumerate(rows):
                x, y = expected(*truth[row["case"]])
                np.testing.assert_allclose(h5["image"][i, 0], x, atol=1e-5)
                np.testing.assert_array_equal(h5["label"][i], y)  # each label its own file
        # the given split is kept, ordered by patient, then z as a number, then crop
        want = [
            f"{p}_z-{z}_c{c}"
            for p in sorted(patients)
            for z, c in sorted(patients[p], key=lambda t: (float(t[0]), t[1]))
        ]
        assert [r["case"] for r in rows] == want
        assert {r["group"] for r in rows} == set(patients)
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{s}.h5" for s in LAYOUT] + [f"{s}.cases.csv" for s in LAYOUT] + ["manifest.json"]
    )


def test_lesion_only_keeps_val_and_test_whole(png_prepared, tmp_path):
    _, truth = png_prepared
    make_png_layout(tmp_path / "raw")
    run_prepare(recipe(tmp_path, f"data.raw={tmp_path / 'raw'}", "data.lesion_only=true"))
    data = tmp_path / "data"
    assert EMPTY_CASE not in [r["case"] for r in cases(data, "train")]
    assert len(cases(data, "train")) == 2 and len(cases(data, "val")) == 2
    with h5py.File(data / "train.h5") as h5:
        assert h5["label"][...].reshape(2, -1).max(1).tolist() == [1, 1]


def test_three_formats_give_the_same_arrays(png_prepared, tmp_path):
    """PHiSeg HDF5 (both label layouts) and the pickle hold the 128x128 crops as 0..1 floats;
    after preparation they equal the PNG route's arrays for the same crops."""
    tmp, truth = png_prepared
    crops = {}
    for case, (img, masks) in truth.items():
        o = (SIZE - 128) // 2
        crops[case] = (
            img[o : o + 128, o : o + 128].astype(np.float32) / 255,
            (masks[:, o : o + 128, o : o + 128] > 0).astype(np.uint8),
        )
    png = {s: cases(tmp / "data", s) for s in LAYOUT}
    for layout in ("nhwa", "nahw"):
        raw = tmp_path / f"{layout}.hdf5"
        with h5py.File(raw, "w") as h5:
            for split, rows in png.items():
                imgs = np.stack([crops[r["case"]][0] for r in rows])
                labs = np.stack([crops[r["case"]][1] for r in rows])
                g = h5.create_group(split)
                g["images"] = imgs
                g["labels"] = labs.transpose(0, 2, 3, 1) if layout == "nhwa" else labs
                g["uids"] = np.array([r["group"].encode() for r in rows])
        out = tmp_path / layout
        run_prepare(recipe(out, "data.source=lidc-phiseg", f"data.raw={raw}"), quiet=True)
        for split in LAYOUT:
            with (
                h5py.File(tmp / "data" / f"{split}.h5") as a,
                h5py.File(out / "data" / f"{split}.h5") as b,
            ):
                np.testing.assert_allclose(a["image"][...], b["image"][...], atol=1e-5)
                np.testing.assert_array_equal(a["label"][...], b["label"][...])
            assert [r["group"] for r in cases(out / "data", split)] == [
                r["group"] for r in png[split]
            ]
    # the pickle: same crops, its own split (by series); compare case by case
    raw = tmp_path / "lidc.pickle"
    entries = {
        case: {"image": x, "masks": list(y), "series_uid": case.split("_z")[0]}
        for case, (x, y) in crops.items()
    }
    raw.write_bytes(pickle.dumps(entries))
    out = tmp_path / "pickle"
    run_prepare(
        recipe(out, "data.source=lidc-pickle", f"data.raw={raw}", "data.allow_pickle=true"),
        quiet=True,
    )
    ref = {}
    for split in LAYOUT:
        with h5py.File(tmp / "data" / f"{split}.h5") as h5:
            for i, r in enumerate(png[split]):
                ref[r["case"]] = (h5["image"][i], h5["label"][i])
    seen = set()
    for split in LAYOUT:
        with h5py.File(out / "data" / f"{split}.h5") as h5:
            for i, r in enumerate(cases(out / "data", split)):
                np.testing.assert_allclose(h5["image"][i], ref[r["case"]][0], atol=1e-5)
                np.testing.assert_array_equal(h5["label"][i], ref[r["case"]][1])
                seen.add(r["case"])
    assert seen == set(truth)


def test_pickle_split_is_by_series_and_deterministic():
    series = [f"uid{i}" for i in range(20) for _ in range(3)]  # 20 series, 3 slices each
    a, b = split_series(series, 0), split_series(list(reversed(series)), 0)
    assert a == b  # depends on the set of series and the seed only
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 3, "test": 3}
    assert split_series(series, 1) != a
    with pytest.raises(CarsegError, match="at least 3"):
        split_series(["a", "a", "b"], 0)


def test_pickle_splits_never_share_a_patient(tmp_path, capsys):
    rng = np.random.default_rng(0)
    entries = {
        f"case{i:03d}": {
            "image": rng.random((128, 128)).astype(np.float32),
            "masks": [(rng.random((128, 128)) > 0.9).astype(np.uint8) for _ in range(4)],
            "series_uid": f"series{i % 7}",
        }
        for i in range(21)
    }
    raw = tmp_path / "lidc.pickle"
    raw.write_bytes(pickle.dumps(entries))
    r = recipe(tmp_path, "data.source=lidc-pickle", f"data.raw={raw}", "data.allow_pickle=true")
    run_prepare(r, quiet=True)
    assert "warning: unpickling" in capsys.readouterr().err  # even with --quiet
    groups = {s: {row["group"] for row in cases(tmp_path / "data", s)} for s in LAYOUT}
    assert groups["train"].isdisjoint(groups["val"] | groups["test"])
    assert groups["val"].isdisjoint(groups["test"])
    assert sum(len(g) for g in groups.values()) == 7


def _fails(tmp: Path, *overrides: str) -> str:
    result = runner.invoke(
        app,
        ["prepare", str(RECIPE), f"data.dir={tmp / 'data'}", f"run_dir={tmp / 'run'}", *overrides],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert no_dataset_left(tmp / "data"), list((tmp / "data").iterdir())
    return result.output


def test_pickle_without_opt_in_is_refused(tmp_path):
    raw = tmp_path / "lidc.pickle"
    raw.write_bytes(pickle.dumps({"a": 1}))
    out = _fails(tmp_path, "data.source=lidc-pickle", f"data.raw={raw}")
    assert "data.allow_pickle" in out and str(raw) in out


def test_malformed_png_layouts_exit_1_naming_the_file(tmp_path):
    raw = tmp_path / "raw"
    make_png_layout(raw)
    lab = raw / "val" / "gt" / "LIDC-IDRI-0003" / "z-4.0_c1_l2.png"
    lab.unlink()
    assert str(lab) in _fails(tmp_path, f"data.raw={raw}")
    Image.fromarray(np.zeros((170, 180), np.uint8)).save(lab)
    assert str(lab) in _fails(tmp_path, f"data.raw={raw}")
    Image.fromarray(np.zeros((180, 180), np.uint8)).save(lab)
    stray = raw / "test" / "images" / "stray.png"
    stray.write_bytes(b"")
    assert str(stray) in _fails(tmp_path, f"data.raw={raw}")
    stray.unlink()
    for p in (raw / "test" / "images" / "LIDC-IDRI-0004").iterdir():
        p.unlink()
    (raw / "test" / "images" / "LIDC-IDRI-0004").rmdir()
    assert str(raw / "test" / "images") in _fails(tmp_path, f"data.raw={raw}")
    assert str(tmp_path / "nothing") in _fails(tmp_path, f"data.raw={tmp_path / 'nothing'}")


def test_failure_keeps_an_earlier_dataset(png_prepared, tmp_path):
    raw = tmp_path / "raw"
    make_png_layout(raw)
    run_prepare(recipe(tmp_path, f"data.raw={raw}"), quiet=True)
    before = (tmp_path / "data" / "test.h5").read_bytes()
    (raw / "test" / "gt" / "LIDC-IDRI-0004" / "z-7.5_c0_l3.png").unlink()
    with pytest.raises(CarsegError, match="z-7.5_c0_l3.png"):
        run_prepare(recipe(tmp_path, f"data.raw={raw}"), overwrite=True, quiet=True)
    assert (tmp_path / "data" / "test.h5").read_bytes() == before
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]


def test_malformed_phiseg_exits_1_naming_the_file(tmp_path):
    raw = tmp_path / "bad.hdf5"
    with h5py.File(raw, "w") as h5:
        for split in LAYOUT:
            g = h5.create_group(split)
            g["images"] = np.zeros((2, 128, 128), np.float32)
            g["labels"] = np.zeros((2, 4, 100, 128), np.uint8)
    out = _fails(tmp_path, "data.source=lidc-phiseg", f"data.raw={raw}")
    assert str(raw) in out and "labels" in out


STAGES_TINY = [
    "calibrator.width=4",
    "calibrator.steps=2",
    "calibrator.batch_size=2",
    "calibrator.val_every=2",
    "calibrator.val_size=2",
    "refiner.width=4",
    "refiner.steps=2",
    "refiner.batch_size=2",
    "refiner.num_samples=2",
    "refiner.val_every=2",
    "refiner.val_size=2",
    "discriminator.width=4",
    "sample.num_samples=4",
    "evaluate.ged_counts=[4]",
    "evaluate.hm_iou_samples=4",
    "threads=1",
]


def test_every_stage_of_the_lidc_recipe(png_prepared):
    """The paper's recipe (SegNet F at 128x128, U-Net G, M and noise from the recipe but
    narrow and short) through every stage on the prepared miniature."""
    tmp, _ = png_prepared
    args = tiny_overrides(tmp, base=STAGES_TINY)
    for stage in ("train-calibrator", "train-refiner", "sample", "evaluate", "plot-reliability"):
        result = runner.invoke(app, [stage, str(RECIPE), *args, "--quiet"])
        assert result.exit_code == 0, (stage, result.output)
    import json

    m = json.loads((tmp / "run" / "eval" / "test" / "metrics.json").read_text())
    assert m["n_images"] == 1 and "4" in m["ged"] and "hm_iou" in m
