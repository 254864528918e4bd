"""The benchmark suite runs end to end (`bench/run.py --quick`) and writes the contract's layout.

Nothing is timed here: the figures of a quick run mean nothing, only the JSON's shape is checked
(docs/guide.md, "Benchmark results").
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

UNITS = {
    "refiner_step_pixel": "s/step",
    "refiner_step_dcgan": "s/step",
    "calibrator_step": "s/step",
    "sample_128": "samples/s",
    "sample_128_m100": "samples/s",
    "sample_256x512": "samples/s",
    "predict_128": "images/s",
    "evaluate_lidc_test": "s",
    "evaluate_lidc_test_rss": "MB",
}
WITH_FLOPS = {
    "refiner_step_pixel",
    "refiner_step_dcgan",
    "calibrator_step",
    "sample_128",
    "sample_128_m100",
    "sample_256x512",
}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """bench/run.py --quick --device cpu ARGS, run from ``tmp_path``."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--device", "cpu", *args],
        cwd=tmp_path,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_quick_bench_writes_the_contract_layout(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = _bench(tmp_path, "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "refiner_step_pixel" in proc.stdout  # the table was printed
    results = json.loads(out.read_text())

    assert set(results) == {"machine", "matmul_gflops", *UNITS}
    machine = results["machine"]
    for key in ("cpu", "cores", "torch", "numpy", "python", "device"):
        assert machine.get(key), key
    assert machine["device"] == "cpu"
    assert _positive(results["matmul_gflops"])

    for name, unit in UNITS.items():
        e = results[name]
        assert e["unit"] == unit, name
        assert _positive(e["value"]), name
        if name in WITH_FLOPS:
            assert _positive(e["gflop"]) and _positive(e["gflops"]), name
            if unit == "s/step":  # rate = work / time of the same step
                assert math.isclose(e["gflops"] * e["value"], e["gflop"], rel_tol=1e-6), name
        else:
            assert "gflop" not in e and "gflops" not in e, name
        if unit == "samples/s":  # added key: samples/s per GFLOP/s of the measured matmul
            per = e["per_matmul_gflops"]
            assert math.isclose(per * results["matmul_gflops"], e["value"], rel_tol=1e-9), name


def test_only_takes_a_comma_list_and_set_records_the_overrides(tmp_path: Path) -> None:
    """`--only a,b` runs those entries; `--set KEY=VALUE` (a speed lever) reaches the step
    entries and is recorded under machine.overrides; `--repeats` is accepted."""
    out = tmp_path / "results.json"
    proc = _bench(
        tmp_path,
        "--only", "refiner_step_dcgan,calibrator_step",
        "--repeats", "2",
        "--set", "discriminator.r1_every=2",
        "--set", "speed.optimizer=foreach",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert set(results) == {"machine", "matmul_gflops", "refiner_step_dcgan", "calibrator_step"}
    assert results["machine"]["overrides"] == [
        "discriminator.r1_every=2",
        "speed.optimizer=foreach",
    ]
    assert "every 2 steps" in proc.stdout and "median of 2" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--only", "refiner_step_nope"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown entry" in bad.stderr


def test_recombine_entry_runs_only_when_named(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = _bench(tmp_path, "--only", "recombine_128_m100", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    entry = json.loads(out.read_text())["recombine_128_m100"]
    assert entry["unit"] == "samples/s" and _positive(entry["value"])
