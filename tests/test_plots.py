"""plot-reliability: figures and their CSVs from a tiny dataset split and sample bank."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from carcli.data.dataset import Classes, DatasetFile, write_dataset
from carcli.errors import CarsegError
from carcli.metrics.calibration import label_probabilities
from carcli.plots.reliability import output_names
from carcli.plots.stats import select_images
from carcli.recipe.load import load_recipe
from carcli.recipe.schema import Recipe
from carcli.sampling.bank import create_bank
from carcli.stages.plot_reliability import run_plot_reliability

N, HW, A, M = 6, 16, 3, 6
IGNORE = 255
BANK_ROWS = np.array([5, 3, 0, 1, 2])  # a subset of the split, out of order
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_labels(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N, A, HW, HW] of random rectangles; image 0 unambiguous, image 1 with ignore."""
    label = np.zeros((N, A, HW, HW), dtype=np.uint8)
    for i in range(N):
        for a in range(A):
            src = 0 if i == 0 else a  # image 0: every annotation the same
            r = np.random.default_rng([i, src])
            for c in range(1, k):
                y0, x0 = r.integers(0, HW - 6, size=2)
                label[i, a, y0 : y0 + 6, x0 : x0 + 6] = c
    label[1, 0, :2, :2] = IGNORE
    weight = np.tile(np.array([0.5, 0.3, 0.2], dtype=np.float32), (N, 1))
    weight[2] = [0.7, 0.3, 0.0]  # a padding annotation
    return label, weight


def make_run(
    root: Path, k: int, f_is_truth: bool = True, seed: int = 0, m: int = M, weighted: bool = True
) -> Recipe:
    """Dataset test split, a bank of BANK_ROWS and a recipe pointing at both, under root."""
    rng = np.random.default_rng(seed)
    label, weight = make_labels(k)
    image = rng.normal(size=(N, 3, HW, HW)).astype(np.float32)
    data_dir, run_dir = root / "data", root / "run"
    data_dir.mkdir(parents=True)
    names = ["background"] + [f"class {c}" for c in range(1, k)]
    if not weighted:
        weight = np.full_like(weight, 1.0 / A)
    write_dataset(
        data_dir / "test.h5",
        image=image,
        label=label,
        label_weight=weight if weighted else None,
        classes=Classes(k, class_names=names, ignore_index=IGNORE),
    )
    with DatasetFile(data_dir / "test.h5") as ds:
        info = ds.info
    (run_dir / "samples").mkdir(parents=True)
    h5 = create_bank(run_dir / "samples" / "test.h5", info, len(BANK_ROWS), m, {"split": "test"})
    with h5:
        for j, row in enumerate(BANK_ROWS):
            q, _ = label_probabilities(label[row], weight[row], k, IGNORE)
            p = q if f_is_truth else rng.dirichlet(np.ones(k), size=(HW, HW)).transpose(2, 0, 1)
            p = np.where(q.sum(0) > 0, p, 1.0 / k)  # ignored pixels: uniform
            h5["calibration"][j] = p.astype(np.float16)
            picks = rng.choice(A, size=m, p=weight[row] / weight[row].sum())
            s = label[row][picks].copy()
            s[s == IGNORE] = 0
            h5["samples"][j] = s
        h5["index"][:] = BANK_ROWS
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"name: t\nseed: 0\nrun_dir: {run_dir}\ndata:\n  dir: {data_dir}\n"
        "evaluate:\n  split: test\n  chunk_size: 2\n"
    )
    return load_recipe(recipe)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recipe, list[Path]]:
    recipe = make_run(tmp_path_factory.mktemp("k3"), 3)
    return recipe, run_plot_reliability(recipe, quiet=True)


def test_writes_every_png_and_csv(three_class: tuple[Recipe, list[Path]]) -> None:
    recipe, written = three_class
    out = Path(recipe.run_dir) / "plots" / "test"
    assert sorted(p.name for p in written) == sorted(output_names())
    for stem in ("reliability", "class_calibration", "samples"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert read_csv(out / f"{stem}.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "plot-reliability"
    assert len(manifest["inputs"]) == 2
    assert not list(out.glob(".*.tmp"))


def test_reliability_bins_cover_non_ignored_pixels(three_class: tuple[Recipe, list[Path]]) -> None:
    recipe, _ = three_class
    rows = read_csv(Path(recipe.run_dir) / "plots" / "test" / "reliability.csv")
    assert len(rows) == 10
    label, weight = make_labels(3)
    valid = sum(
        int(label_probabilities(label[r], weight[r], 3, IGNORE)[1].sum()) for r in BANK_ROWS
    )
    assert valid < len(BANK_ROWS) * HW * HW  # the ignore block is left out
    assert sum(int(r["count"]) for r in rows) == valid
    assert sum(float(r["fraction"]) for r in rows) == pytest.approx(1.0)
    manifest = json.loads((Path(recipe.run_dir) / "plots" / "test" / "manifest.json").read_text())
    assert manifest["ece"] < 2e-3  # F = truth (up to float16 rounding)
    for r in rows:
        if int(r["count"]):
            assert float(r["accuracy"]) == pytest.approx(float(r["confidence"]), abs=2e-3)


def test_class_calibration_true_equals_f_when_f_is_truth(
    three_class: tuple[Recipe, list[Path]],
) -> None:
    recipe, _ = three_class
    rows = read_csv(Path(recipe.run_dir) / "plots" / "test" / "class_calibration.csv")
    assert [r["class_name"] for r in rows] == ["background", "class 1", "class 2"]
    label, weight = make_labels(3)
    for r in rows:
        k = int(r["class_id"])
        qs = [label_probabilities(label[i], weight[i], 3, IGNORE)[0][k] for i in BANK_ROWS]
        amb = np.concatenate([q[(q > 1e-6) & (q < 1 - 1e-6)] for q in qs])
        assert int(r["n_pixels"]) == amb.size
        assert float(r["true"]) == pytest.approx(amb.mean())
        assert float(r["calibrator"]) == pytest.approx(float(r["true"]), abs=1e-3)
        assert 0.0 <= float(r["refiner"]) <= 1.0


def test_samples_csv_names_rows_and_samples(three_class: tuple[Recipe, list[Path]]) -> None:
    recipe, _ = three_class
    rows = read_csv(Path(recipe.run_dir) / "plots" / "test" / "samples.csv")
    assert len(rows) == 4
    for r in rows:
        assert int(r["dataset_row"]) == BANK_ROWS[int(r["bank_position"])]
        assert r["sample_indices"] == "0;1;2;3"
        assert 0.0 <= float(r["ged_6"]) <= 1.5
    entropies = [float(r["label_entropy"]) for r in rows]
    assert entropies[:3] == sorted(entropies[:3], reverse=True)
    assert rows[-1]["dataset_row"] == "0" and entropies[-1] == 0.0  # the unambiguous image
    weights = [float(w) for w in rows[-1]["mode_weights_shown"].split(";")]
    assert weights == [pytest.approx(1.0)]  # identical annotations merge into one mode


def test_refuses_to_overwrite(three_class: tuple[Recipe, list[Path]]) -> None:
    recipe, _ = three_class
    png = Path(recipe.run_dir) / "plots" / "test" / "reliability.png"
    before = png.stat().st_mtime_ns
    with pytest.raises(CarsegError) as exc:
        run_plot_reliability(recipe, quiet=True)
    assert "--overwrite" in (exc.value.hint or "")
    assert png.stat().st_mtime_ns == before


def test_overwrite_replaces(tmp_path: Path) -> None:
    recipe = make_run(tmp_path, 3, f_is_truth=False)
    out = Path(recipe.run_dir) / "plots" / "test"
    out.mkdir(parents=True)
    (out / "samples.csv").write_text("stale\n")
    with pytest.raises(CarsegError, match="samples.csv"):
        run_plot_reliability(recipe, quiet=True)
    run_plot_reliability(recipe, overwrite=True, quiet=True, n_images=2)
    assert len(read_csv(out / "samples.csv")) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ece"] > 0.01  # F is random here


def test_missing_bank_names_path_and_command(tmp_path: Path) -> None:
    recipe = make_run(tmp_path, 3)
    bank = Path(recipe.run_dir) / "samples" / "test.h5"
    bank.unlink()
    with pytest.raises(CarsegError) as exc:
        run_plot_reliability(recipe, quiet=True)
    assert str(bank) in exc.value.message
    assert "carseg sample RECIPE" in (exc.value.hint or "")
    assert not (Path(recipe.run_dir) / "plots").exists()


def test_missing_dataset(tmp_path: Path) -> None:
    recipe = make_run(tmp_path, 3)
    (Path(recipe.data.dir) / "test.h5").unlink()
    with pytest.raises(CarsegError, match="no dataset at"):
        run_plot_reliability(recipe, quiet=True)


def test_binary_task(tmp_path: Path) -> None:
    recipe = make_run(tmp_path, 2)
    written = run_plot_reliability(recipe, quiet=True)
    out = Path(recipe.run_dir) / "plots" / "test"
    assert {p.name for p in written} == set(output_names())
    rows = read_csv(out / "class_calibration.csv")
    assert [r["class_name"] for r in rows] == ["background", "class 1"]
    for r in rows:
        assert float(r["calibrator"]) == pytest.approx(float(r["true"]), abs=1e-3)
    # with two classes, q_0 = 1 - q_1 on every pixel
    assert float(rows[0]["true"]) == pytest.approx(1 - float(rows[1]["true"]))
    assert (out / "samples.png").read_bytes()[:8] == PNG_MAGIC


def test_select_images_most_ambiguous_then_calm() -> None:
    ent = np.array([0.0, 0.5, 0.2, 0.0, 0.9, 0.3])
    present = np.array([1, 2, 2, 3, 2, 2])
    assert select_images(ent, present, 4) == [4, 1, 5, 3]  # calm: most classes among ties
    assert select_images(ent, present, 1) == [4]
    assert select_images(ent[:2], present[:2], 4) == [1, 0]


def test_few_samples_and_uniform_weights(tmp_path: Path) -> None:
    recipe = make_run(tmp_path, 3, m=2, weighted=False)
    run_plot_reliability(recipe, quiet=True, n_images=3)
    rows = read_csv(Path(recipe.run_dir) / "plots" / "test" / "samples.csv")
    assert len(rows) == 3
    assert all(r["sample_indices"] == "0;1" and r["ged_2"] for r in rows)
    assert rows[-1]["mode_weights_shown"] == "1"  # image 0: three identical annotations
