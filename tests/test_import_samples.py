"""`carseg import-samples` and `carseg evaluate` on imported banks: formats, bad input (exit 1,
one line, nothing written), conventions side by side, too few samples, the new --fail-if keys."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.errors import CarsegError

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "recipes" / "toy.yaml"
N, M, K, H, W = 4, 5, 3, 16, 16
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, CarsegError)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("carseg: error: ")]
    assert lines, result.output
    return lines[0]


@pytest.fixture
def setup(tmp_path: Path, write_split):
    data = tmp_path / "data"
    write_split(data / "test.h5", n=N, num_classes=K, height=H, width=W)
    with open(data / "test.cases.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "case", "group"])
        for i in range(N):
            w.writerow([i, f"case{i}", "g"])
    over = [
        f"data.dir={data}",
        f"run_dir={tmp_path / 'run'}",
        "evaluate.ged_counts=[2,5]",
        "evaluate.hm_iou_samples=4",
    ]
    samples = np.random.default_rng(0).integers(0, K, (N, M, H, W)).astype(np.uint8)
    return tmp_path, over, samples


def bank_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "samples" / "test.h5"


def test_npz_with_names_in_any_order_then_evaluate_all_conventions(setup):
    tmp_path, over, samples = setup
    order = [2, 0, 3, 1]
    src = tmp_path / "other.npz"
    np.savez(src, samples=samples[order], names=np.array([f"case{i}" for i in order]))
    res = invoke("import-samples", TOY, src, *over, "-q")
    assert res.exit_code == 0, res.output
    with h5py.File(bank_path(tmp_path)) as f:
        np.testing.assert_array_equal(f["samples"][...], samples)  # back in dataset order
        assert f.attrs["calibration_source"] == "none"
        assert f.attrs["imported_format"] == "npz"
        assert f.attrs["imported_from"] == str(src.resolve())
    res = invoke(
        "evaluate",
        TOY,
        *over,
        "--convention",
        "all",
        "--fail-if",
        "conventions.mose.ged.5>9",
        "--fail-if",
        "modes.within_0.8>1.5",
        "--fail-if",
        "dice.best_match<0",
    )
    assert res.exit_code == 0, res.output
    assert "the same samples under each convention" in res.output
    m = json.loads((tmp_path / "run" / "eval" / "test" / "metrics.json").read_text())
    assert m["convention"] == "carseg"
    assert list(m["conventions"]) == ["carseg", "car", "mose", "phiseg", "ccdm", "flowssn"]
    assert m["ece"] is None and m["qubiq"]["calibrator"] is None  # no F: not available
    assert m["ged"] == m["conventions"]["carseg"]["ged"] and set(m["ged"]) == {"2", "5"}
    assert m["factor_dependence"]["n_pairs"] >= 0
    for key in ("ncc", "dice", "qubiq"):
        assert key in m
    header = (tmp_path / "run" / "eval" / "test" / "per_case.csv").read_text().splitlines()[0]
    assert "mose_ged_5" in header and "dice_best_match" in header and "qubiq_samples" in header
    res = invoke("plot-reliability", TOY, *over, "-q")  # works on an imported bank unchanged
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "plots" / "test" / "reliability.png").exists()


def test_png_folders_and_prefixes_and_calibration(setup):
    from PIL import Image

    tmp_path, over, samples = setup
    folders, flat = tmp_path / "pngs", tmp_path / "flat"
    flat.mkdir()
    for i in range(N):
        (folders / f"case{i}").mkdir(parents=True)
        for j in range(M):
            Image.fromarray(samples[i, j]).save(folders / f"case{i}" / f"{j:03d}.png")
            Image.fromarray(samples[i, j]).save(flat / f"{i}_{j:02d}.png")  # rows as names
    assert invoke("import-samples", TOY, folders, *over, "-q").exit_code == 0
    with h5py.File(bank_path(tmp_path)) as f:
        np.testing.assert_array_equal(f["samples"][...], samples)
    cal = np.random.default_rng(1).dirichlet(np.ones(K), (N, H, W)).transpose(0, 3, 1, 2)
    np.save(tmp_path / "cal.npy", cal.astype(np.float32))
    res = invoke(
        "import-samples", TOY, flat, *over, "--overwrite", "--calibration", tmp_path / "cal.npy"
    )
    assert res.exit_code == 0, res.output
    with h5py.File(bank_path(tmp_path)) as f:
        np.testing.assert_array_equal(f["samples"][...], samples)
        assert f.attrs["calibration_source"] == "source"
        np.testing.assert_allclose(f["calibration"][...], cal, atol=1e-3)
    assert invoke("evaluate", TOY, *over, "-q").exit_code == 0
    m = json.loads((tmp_path / "run" / "eval" / "test" / "metrics.json").read_text())
    assert m["ece"] is not None and m["qubiq"]["calibrator"] is not None


def bad_sources(tmp_path: Path, samples: np.ndarray):
    def npz(name, **arrays):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        return path

    names = np.array([f"case{i}" for i in range(N)])
    big = samples.copy()
    big[1, 2, 3, 4] = K
    return [
        (npz("size", samples=samples[:, :, :8]), "shape"),
        (npz("classid", samples=big), "class id 3"),
        (npz("missing", samples=samples[:3], names=names[:3]), "missing"),
        (npz("dupe", samples=samples, names=names[[0, 1, 1, 3]]), "same image"),
        (npz("unknown", samples=samples, names=np.array(["a", "b", "c", "d"])), "not in"),
        (npz("rows", samples=samples[:3]), "no names"),
        (tmp_path / "absent.npy", "no such"),
    ]


def test_bad_input_is_one_line_and_nothing_written(setup):
    tmp_path, over, samples = setup
    for src, words in bad_sources(tmp_path, samples):
        line = one_error(invoke("import-samples", TOY, src, *over))
        assert words in line, (src, line)
        assert not (tmp_path / "run").exists(), src  # not even the folder


def test_too_few_samples_is_an_error_before_anything(setup):
    tmp_path, over, samples = setup
    np.save(tmp_path / "s.npy", samples)
    assert invoke("import-samples", TOY, tmp_path / "s.npy", *over, "-q").exit_code == 0
    line = one_error(invoke("evaluate", TOY, *over, "evaluate.ged_counts=[2,16]"))
    assert "M = 5" in line and "evaluate.ged_counts=[2]" in line
    line = one_error(invoke("evaluate", TOY, *over, "evaluate.hm_iou_samples=16"))
    assert "evaluate.hm_iou_samples=5" in line
    assert not (tmp_path / "run" / "eval").exists()
    line = one_error(invoke("evaluate", TOY, *over, "--convention", "probunet"))
    assert "evaluate.convention" in line and "flowssn" in line


def test_fail_if_reads_every_new_key():
    from carcli.metrics.evaluate import check_conditions

    m = {
        "factor_dependence": {"g": 0.25, "oracle": 0.05, "n_pairs": 3},
        "modes": {"within_0.8": 0.9, "coverage": 1.0},
        "conventions": {"mose": {"ged": {"16": 0.3}, "hm_iou": 0.6}},
        "dice": {"best_match": 0.7},
        "qubiq": {"samples": 0.8},
        "ncc": 0.4,
    }
    assert check_conditions(m, ["factor_dependence.g>0.11"]) == [
        "factor_dependence.g = 0.25 > 0.11"
    ]
    assert check_conditions(m, ["modes.within_0.8<0.95", "conventions.mose.ged.16>0.2"]) == [
        "modes.within_0.8 = 0.9 < 0.95",
        "conventions.mose.ged.16 = 0.3 > 0.2",
    ]
    ok = ["dice.best_match<0.5", "qubiq.samples<0.5", "ncc<0", "modes.coverage<1"]
    assert check_conditions(m, ok) == []
    with pytest.raises(CarsegError, match="no 'dice.worst'"):
        check_conditions(m, ["dice.worst>0"])
