"""scripts/controls_table.py: the method against the paper's controls, from metrics.json files
written by hand, so that every cell is known."""

from __future__ import annotations

import json

from script_loader import load_script


def _run(root, name, ged16, oracle16, tv, within, offsets, diversity, dep, recipe_line):
    run = root / name
    (run / "eval" / "test").mkdir(parents=True)
    (run / "refiner").mkdir()
    (run / "refiner" / "recipe.yaml").write_text(
        f"refiner:\n  {recipe_line}\nsample:\n  num_samples: 100\n"
    )
    classes = {
        str(k): {"n_pixels": 10, "refiner_offset": off, "calibrator_offset": 0.0}
        for k, off in enumerate(offsets)
    }
    classes["9"] = {"n_pixels": 0, "refiner_offset": None, "calibrator_offset": None}
    m = {
        "ged": {"16": ged16},
        "oracle_ged": {"16": oracle16},
        "modes": {"tv": tv, "oracle_tv": 0.05, "within_0.8": within},
        "class_calibration": {"classes": classes},
        "diversity": diversity,
        "factor_dependence": {"g": dep, "oracle": 0.054 if dep is not None else None},
    }
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps(m))
    return run


def test_rows_columns_and_the_ratio_to_the_method(tmp_path, capsys):
    mod = load_script("controls_table")
    method = _run(
        tmp_path, "m", 0.025, 0.020, 0.051, 0.95, [0.01, -0.02], 0.3, 0.056, "calibration_loss: kl"
    )
    none = _run(
        tmp_path,
        "n",
        0.120,
        0.020,
        0.263,
        0.95,
        [0.02, -0.03],
        0.1,
        0.033,
        "calibration_loss: none",
    )
    other = _run(tmp_path, "x", 0.03, 0.020, 0.06, 0.9, [0.0], 0.2, 0.05, "num_samples: 8")
    assert mod.label_of(other, False) == "x"  # num_samples: 100 (the bank's) is not M = 1
    m1 = _run(tmp_path, "o", 0.170, 0.020, 0.366, 1.0, [0.049, 0.0], 0.0, None, "num_samples: 1")
    out = tmp_path / "controls.json"
    import sys

    argv = sys.argv
    sys.argv = ["controls_table.py", str(method), str(none), str(m1), "--json", str(out)]
    try:
        mod.main()
    finally:
        sys.argv = argv
    doc = json.loads(out.read_text())
    assert doc["columns"][1] == "GED16 (oracle 0.020)"
    assert doc["columns"][3] == "mode TV (oracle 0.050)"
    assert doc["columns"][7] == "factor dependence (oracle 0.054)"
    method_row, none_row, m1_row = doc["rows"]
    assert method_row == [
        "method (the toy recipe)",
        "0.025",
        "0.005",
        "0.051",
        "0.950",
        "0.020",
        "0.300",
        "0.056",
    ]
    # (0.120 - 0.020) / (0.025 - 0.020) = 20.0; the worst offset is the largest magnitude
    assert none_row == [
        "`calibration_loss=none` (λ = 0)",
        "0.120",
        "0.100 (20.0×)",
        "0.263",
        "0.950",
        "0.030",
        "0.100",
        "0.033",
    ]
    assert m1_row[0] == "`num_samples=1` (M = 1)"
    assert m1_row[2] == "0.150 (30.0×)"
    assert m1_row[7] == "n/a (no pair)"
    assert "| method (the toy recipe) | 0.025 |" in capsys.readouterr().out


def test_no_ratio_to_a_method_gap_below_the_last_digit() -> None:
    mod = load_script("controls_table")
    m = {
        "ged": {"16": 0.120},
        "oracle_ged": {"16": 0.020},
        "modes": {"tv": 0.3, "within_0.8": 1.0},
        "class_calibration": {"classes": {"0": {"n_pixels": 1, "refiner_offset": 0.5}}},
        "diversity": 0.0,
        "factor_dependence": {"g": 0.0},
    }
    assert mod.cells("c", m, 0.0004)[2] == "0.100 (the method's: below 0.001)"
    assert mod.cells("c", m, 0.002)[2] == "0.100 (50.0×)"
