"""scripts/acceptance.py: every bar read from metrics.json, failures named, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import load_script


def _load():
    return load_script("acceptance")


def _run(tmp: Path, name: str, ged16: float, f_off: float = 0.02, tv: float = 0.10) -> Path:
    run = tmp / name
    (run / "eval" / "test").mkdir(parents=True)
    m = {
        "class_names": ["background", "class_1", "class_2"],
        "ged": {"16": ged16},
        "oracle_ged": {"16": 0.02},
        "modes": {"tv": tv, "oracle_tv": 0.05, "within_0.8": 0.93},
        "class_calibration": {
            "classes": {
                "0": {"n_pixels": 10, "calibrator_offset": f_off, "refiner_offset": 0.03},
                "1": {"n_pixels": 10, "calibrator_offset": 0.01, "refiner_offset": 0.06},
                "2": {"n_pixels": 0, "calibrator_offset": None, "refiner_offset": None},
            }
        },
    }
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps(m))
    (run / "wall_time.txt").write_text(f"{name}: train-calibrator 1 s, total 700 s\n")
    return run


def test_all_bars_met(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acc = _load()
    method = _run(tmp_path, "method", 0.05)
    ctl = _run(tmp_path, "none", 0.09)  # excess 0.07 = 2.33x the method's 0.03
    assert acc.main([str(method), "--budget-s", "900", "--control", str(ctl)]) == 0
    out = capsys.readouterr().out
    assert "| none: GED16 excess / method's (0.0700 / 0.0300) | 2.333 | >= 2 | yes |" in out
    assert "| mode TV - oracle TV | 0.050 | <= 0.08 | yes |" in out
    assert "class_2" not in out  # never ambiguous: no bar
    assert "9 of 9 bars met" in out


def test_missed_bars_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acc = _load()
    method = _run(tmp_path, "method", 0.05, f_off=0.051, tv=0.131)
    ctl = _run(tmp_path, "none", 0.07)  # excess 0.05: 1.67x
    assert acc.main([str(method), "--budget-s", "600", "--control", str(ctl)]) == 1
    out = capsys.readouterr().out
    assert "| F offset, background | 0.051 | <= 0.05 | **no** |" in out
    assert "| mode TV - oracle TV | 0.081 | <= 0.08 | **no** |" in out
    assert "| none: GED16 excess / method's (0.0500 / 0.0300) | 1.667 | >= 2 | **no** |" in out
    assert "| wall time, s | 700.000 | <= 600 | **no** |" in out
    assert "5 of 9 bars met" in out
