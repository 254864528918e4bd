"""`prepare` for the modified Cityscapes from a fabricated miniature of the official layout:
splits by city, quarter resolution, labelId -> trainId, the 32 modes and their weights, eval
classes, training flips drawn per image per step, black-box alignment, malformed layouts, and
every stage of recipes/cityscapes.yaml for a few steps at 256x512."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.data.batches import BatchSource, apply_class_flips
from carcli.data.dataset import DatasetFile
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cityscapes.yaml"
runner = CliRunner()

# official split -> city -> number of frames; ulm is one of the three validation cities
CITIES = {"train": {"aachen": 2, "ulm": 1}, "val": {"frankfurt": 1}}
BIG = "aachen_000000_000000"  # stored at 512x1024 (the others at 256x512)
# labelIds used in the fabricated maps, with their trainIds (from the official table)
TRAIN_ID = {0: 255, 1: 255, 7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13}
FLIPS = [(1, 19, 8 / 17), (11, 20, 7 / 17), (13, 21, 6 / 17), (8, 22, 5 / 17), (0, 23, 4 / 17)]
EVAL = [0, 1, 8, 11, 13, 19, 20, 21, 22, 23]


def _label_ids(h: int, w: int, seed: int) -> np.ndarray:
    """Bands: sky, building, vegetation, person + car blocks, sidewalk, road, ego vehicle."""
    lab = np.zeros((h, w), np.uint8)
    b = [int(f * h) for f in (0.15, 0.35, 0.5, 0.65, 0.8, 0.95)]
    lab[: b[0]] = 23
    lab[b[0] : b[1]] = 11
    lab[b[1] : b[2]] = 21
    lab[b[2] : b[3]] = 8
    lab[b[2] : b[3], w // 8 + seed : w // 4] = 24
    lab[b[2] : b[3], w // 2 : w // 2 + w // 5 + seed] = 26
    lab[b[3] : b[4]] = 8
    lab[b[4] : b[5]] = 7
    lab[b[5] :] = 1
    lab[0, :7] = 0
    return lab


def make_layout(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """frame id -> (RGB image, labelIds) written in the official layout."""
    truth = {}
    seed = 0
    for split, cities in CITIES.items():
        for city, n in cities.items():
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                frame = f"{city}_{k:06d}_{19 * k:06d}"
                h, w = (512, 1024) if frame == BIG else (256, 512)
                img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
                lab = _label_ids(h, w, seed)
                Image.fromarray(img).save(
                    root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png"
                )
                Image.fromarray(lab).save(
                    root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png"
                )
                # the other gtFine files of the official layout are ignored
                (root / "gtFine" / split / city / f"{frame}_gtFine_polygons.json").write_text("{}")
                truth[frame] = (img, lab)
                seed += 1
    return truth


def make_blackbox(folder: Path, truth: dict) -> dict[str, np.ndarray]:
    """trainId predictions (the label's trainIds, shifted): BIG at raw size and named by its
    full image stem, the others at 256x512 and named by frame id. Returns frame -> expected."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for frame, (_, lab) in truth.items():
        pred = np.vectorize(TRAIN_ID.get)(lab).astype(np.uint8)
        pred[pred == 255] = 18
        name = f"{frame}_leftImg8bit.png" if frame == BIG else f"{frame}.png"
        Image.fromarray(pred).save(folder / name)
        out[frame] = pred[1::2, 1::2] if frame == BIG else pred
    return out


def expected_train_ids(lab: np.ndarray) -> np.ndarray:
    small = lab[1::2, 1::2] if lab.shape[0] == 512 else lab  # Pillow's nearest, factor 2
    return np.vectorize(TRAIN_ID.get)(small).astype(np.uint8)


def cases(data: Path, split: str) -> list[str]:
    with open(data / f"{split}.cases.csv", newline="") as fh:
        return [r["case"] for r in csv.DictReader(fh)]


def overrides(tmp: Path, *extra: str) -> list[str]:
    return [f"data.dir={tmp / 'data'}", f"run_dir={tmp / 'run'}", f"data.raw={tmp / 'raw'}", *extra]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cityscapes")
    truth = make_layout(tmp / "raw")
    bb = make_blackbox(tmp / "bb", truth)
    r = load_recipe(str(RECIPE), overrides(tmp, f"data.blackbox_dir={tmp / 'bb'}"))
    run_prepare(r, quiet=True)
    return tmp, truth, bb


def test_splits_by_city(prepared):
    tmp, _, _ = prepared
    data = tmp / "data"
    assert cases(data, "train") == ["aachen_000000_000000", "aachen_000001_000019"]
    assert cases(data, "val") == ["ulm_000000_000000"]  # darmstadt, monchengladbach, ulm
    assert cases(data, "test") == ["frankfurt_000000_000000"]  # the official val set


def test_train_split_stores_one_map_and_the_flips(prepared):
    tmp, truth, bb = prepared
    with h5py.File(tmp / "data" / "train.h5") as h5:
        assert h5["image"].shape == (2, 3, 256, 512) and h5["image"].dtype == np.float16
        assert h5["label"].shape == (2, 1, 256, 512) and "label_weight" not in h5
        assert h5.attrs["num_classes"] == 24 and h5.attrs["ignore_index"] == 255
        names = json.loads(h5.attrs["class_names"])
        assert names[19:] == ["sidewalk2", "person2", "car2", "vegetation2", "road2"]
        assert names[:3] == ["road", "sidewalk", "building"] and len(names) == 24
        assert json.loads(h5.attrs["eval_classes"]) == EVAL
        from carcli.data.schema import class_colors

        colours = class_colors(h5)  # Cityscapes' own colours: predictions paint in them
        assert colours is not None and colours[0] == [128, 64, 128] and len(colours) == 24
        flips = json.loads(h5.attrs["class_flips"])
        assert [(s, d) for s, d, _ in flips] == [(s, d) for s, d, _ in FLIPS]
        np.testing.assert_allclose([p for _, _, p in flips], [p for _, _, p in FLIPS])
        for i, frame in enumerate(cases(tmp / "data", "train")):
            np.testing.assert_array_equal(h5["label"][i, 0], expected_train_ids(truth[frame][1]))
            np.testing.assert_array_equal(h5["blackbox"][i], bb[frame])
        # image normalisation, checked where no resizing happens (256x512 input)
        img = truth["aachen_000001_000019"][0].astype(np.float32) / 255
        mean = np.array([0.28689554, 0.32513303, 0.28389177], np.float32)
        std = np.array([0.18696375, 0.19017339, 0.18720214], np.float32)
        want = ((img - mean) / std).transpose(2, 0, 1)
        np.testing.assert_allclose(h5["image"][1].astype(np.float32), want, atol=5e-3)


def test_val_and_test_store_32_modes(prepared):
    tmp, truth, bb = prepared
    weights = []
    for bits in itertools.product((0, 1), repeat=5):
        weights.append(
            np.prod([p if b else 1 - p for (_, _, p), b in zip(FLIPS, bits, strict=True)])
        )
    for split in ("val", "test"):
        (frame,) = cases(tmp / "data", split)
        base = expected_train_ids(truth[frame][1])
        with h5py.File(tmp / "data" / f"{split}.h5") as h5:
            assert h5["label"].shape == (1, 32, 256, 512)
            assert h5["label"].compression == "gzip" and h5["label"].chunks[0] == 1
            w = h5["label_weight"][0].astype(np.float64)
            assert abs(w.sum() - 1) < 1e-6
            np.testing.assert_allclose(w, weights, rtol=1e-6)
            labels = h5["label"][0]
            np.testing.assert_array_equal(h5["blackbox"][0], bb[frame])
        for m, bits in enumerate(itertools.product((0, 1), repeat=5)):
            want = base.copy()
            for (src, dst, _), b in zip(FLIPS, bits, strict=True):
                if b:
                    want[base == src] = dst
            np.testing.assert_array_equal(labels[m], want)
        assert set(np.unique(labels[31])) == {2, 10, 19, 20, 21, 22, 23, 255}


def test_training_flips_are_drawn_per_image_per_step(prepared):
    tmp, _, _ = prepared
    rng = np.random.default_rng(0)
    with DatasetFile(tmp / "data" / "train.h5") as ds:
        src = BatchSource(ds)
        assert src.class_flips == [(s, d, pytest.approx(p)) for s, d, p in FLIPS]
        base = ds.read_rows("label", np.array([0]))[0, 0]
        seen = set()
        for _ in range(10):
            for lab in src.get(np.array([0, 0]), rng).label.numpy():
                state = []
                for s, d, _ in FLIPS:  # every pixel of a class flips together
                    vals = set(np.unique(lab[base == s]))
                    assert vals in ({s}, {d})
                    state.append(vals == {d})
                seen.add(tuple(state))
        assert len(seen) > 5  # drawn afresh per image and step, not fixed per image
        soft = src.get(np.array([0]), rng, soft=True).soft.numpy()[0]
        s, d, p = FLIPS[0]
        np.testing.assert_allclose(soft[s][base == s], 1 - p, atol=1e-6)
        np.testing.assert_allclose(soft[d][base == s], p, atol=1e-6)
        # without an rng (validation), the stored map is returned unchanged
        same = src.get(np.array([0]), None, annotation=np.array([0])).label.numpy()[0]
        np.testing.assert_array_equal(same, base)
    # the flip frequencies, on many small copies of the map
    small = np.repeat(base[None, ::16, ::16], 2000, axis=0)
    out = apply_class_flips(small.copy(), None, src.class_flips, np.random.default_rng(1))
    freq = [(out[:, small[0] == s] == d).all(1).mean() for s, d, _ in FLIPS]
    np.testing.assert_allclose(freq, [p for _, _, p in FLIPS], atol=0.035)  # 3 sigma


def _fails(tmp: Path, *extra: str) -> str:
    result = runner.invoke(app, ["prepare", str(RECIPE), *overrides(tmp, *extra)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    left = (
        [p for p in (tmp / "data").iterdir() if p.name != ".lock"]
        if (tmp / "data").exists()
        else []
    )
    assert not left, left
    return result.output


def test_malformed_layouts_exit_1_naming_the_file(tmp_path):
    raw = tmp_path / "raw"
    make_layout(raw)
    nobb = "data.blackbox_dir=null"
    stray = raw / "leftImg8bit" / "train" / "notes.png"
    stray.write_bytes(b"")
    assert str(stray) in _fails(tmp_path, nobb)  # unknown city layout
    stray.unlink()
    odd = raw / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_1.png"
    odd.write_bytes(b"")
    assert str(odd) in _fails(tmp_path, nobb)
    odd.unlink()
    lab = raw / "gtFine" / "train" / "ulm" / "ulm_000000_000000_gtFine_labelIds.png"
    saved = lab.read_bytes()
    lab.unlink()
    assert str(lab) in _fails(tmp_path, nobb)  # missing label
    Image.fromarray(np.zeros((128, 256), np.uint8)).save(lab)
    assert str(lab) in _fails(tmp_path, nobb)  # label of the wrong size
    Image.fromarray(np.full((256, 512), 40, np.uint8)).save(lab)
    assert "labelId 40" in _fails(tmp_path, nobb)  # not in the table
    lab.write_bytes(saved)
    shutil.rmtree(raw / "leftImg8bit" / "train" / "ulm")
    assert "ulm" in _fails(tmp_path, nobb)  # no validation city left
    for p in (raw / "leftImg8bit" / "val" / "frankfurt").iterdir():
        p.unlink()
    assert str(raw / "leftImg8bit" / "val" / "frankfurt") in _fails(tmp_path, nobb)  # empty


def test_blackbox_missing_or_missized_exits_1_naming_the_file(tmp_path):
    truth = make_layout(tmp_path / "raw")
    bbdir = tmp_path / "bb"
    make_blackbox(bbdir, truth)
    (bbdir / "frankfurt_000000_000000.png").unlink()
    assert "frankfurt_000000_000000" in _fails(tmp_path, f"data.blackbox_dir={bbdir}")
    bad = bbdir / "frankfurt_000000_000000.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(bad)
    assert str(bad) in _fails(tmp_path, f"data.blackbox_dir={bbdir}")
    np.save(bbdir / "frankfurt_000000_000000.npy", np.zeros((19, 256, 512), np.float32))
    bad.unlink()
    out = _fails(tmp_path, f"data.blackbox_dir={bbdir}")  # npy among PNGs: one kind only
    assert "frankfurt_000000_000000.npy" in out


STAGES_TINY = [
    "calibrator.width=4",
    "calibrator.steps=2",
    "calibrator.batch_size=2",
    "calibrator.val_every=2",
    "calibrator.val_size=1",
    "refiner.width=4",
    "refiner.steps=2",
    "refiner.batch_size=1",
    "refiner.num_samples=2",
    "refiner.val_every=0",  # GED over 32 modes at 256x512: seconds per validation
    "discriminator.width=4",
    "sample.num_samples=2",
    "sample.batch_size=1",
    "evaluate.ged_counts=[2]",
    "evaluate.hm_iou_samples=2",
    "threads=1",
]


def test_every_stage_of_the_cityscapes_recipe(prepared):
    """The paper's recipe (convnet F on image + one-hot black box, 24 classes, U-Net G with
    noise 32) through every stage at 256x512, narrow and short."""
    tmp, _, _ = prepared
    args = tiny_overrides(tmp, base=STAGES_TINY)
    for stage in ("train-calibrator", "train-refiner", "sample", "evaluate", "plot-reliability"):
        result = runner.invoke(app, [stage, str(RECIPE), *args, "--quiet"])
        assert result.exit_code == 0, (stage, result.output)
    meta = json.loads((tmp / "run" / "calibrator" / "manifest.json").read_text())
    assert meta["recipe"]["calibrator"]["arch"] == "convnet"
    m = json.loads((tmp / "run" / "eval" / "test" / "metrics.json").read_text())
    assert m["num_classes"] == 24 and m["eval_classes"] == EVAL and "2" in m["ged"]
    with h5py.File(tmp / "run" / "samples" / "test.h5") as h5:
        assert h5["samples"].shape == (1, 2, 256, 512)
        assert h5["calibration"].shape == (1, 24, 256, 512)
