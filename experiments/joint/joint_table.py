"""One Markdown row per run with the joint-calibration figures (issue 16's table).

python experiments/joint/joint_table.py RUN [RUN ...] [--split test]
Columns: factor dependence of G (oracle), mode TV - oracle, GED16 - oracle, GED100 - oracle
(a 100-sample estimate, less noisy than GED16's), within IoU 0.8,
worst class offset of F and of G, refiner wall time (from wall_time.txt when present).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def row(run: Path, split: str) -> str:
    m = json.loads((run / "eval" / split / "metrics.json").read_text())
    c = m["factor_dependence"]  # computed by `carseg evaluate` (carcli/metrics/factors.py)
    classes = [v for v in m["class_calibration"]["classes"].values() if v.get("n_pixels")]
    f_off = max(v["calibrator_offset"] for v in classes)
    g_off = max(v["refiner_offset"] for v in classes)
    modes = m["modes"]
    wall = (run / "wall_time.txt").read_text() if (run / "wall_time.txt").exists() else ""
    found = re.search(r"train-refiner (\d+) s", wall)
    return (
        f"| {run.name} | {c['g']:.3f} ({c['oracle']:.3f}) "
        f"| {modes['tv'] - modes['oracle_tv']:.3f} | {m['ged']['16'] - m['oracle_ged']['16']:.4f} "
        f"| {_excess(m, '100')} | {modes['within_0.8']:.3f} | {f_off:.3f} | {g_off:.3f} "
        f"| {found.group(1) if found else ''} |"
    )


def _excess(m: dict, n: str) -> str:
    """GED_n - oracle GED_n, or '' where the bank holds fewer than n samples."""
    if n not in m["ged"] or n not in m["oracle_ged"]:
        return ""
    return f"{m['ged'][n] - m['oracle_ged'][n]:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    print(
        "| run | factor dependence (oracle) | mode TV - oracle | GED16 - oracle | GED100 - oracle"
        " | within 0.8 "
        "| worst F offset | worst G offset | G train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        print(row(run, args.split))


if __name__ == "__main__":
    main()
