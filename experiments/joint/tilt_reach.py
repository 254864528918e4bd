"""How closely a bank's picks reach the pool's tilt targets (`sample.pool_target: calibrator`).

    python experiments/joint/tilt_reach.py RUN [RUN ...] [--docs OUT --labels L ...]

For every image of the test bank and every region of F's uncertain pixels (as `sample` finds
them: `linked_regions` with the toy recipe's threshold 0.9 and link 1), the total variation
between the bank's mean class fractions over the region's uncertain pixels and F's mean
probabilities there (the tilt's target, `region_fractions`). Near 0 where the pool holds the
answers F asks for; large where G never drew them (a target outside the draws' hull, which
the tilt only approaches).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from carcli.sampling.regions import MAX_REGIONS, linked_regions, region_fractions

REPO = Path(__file__).resolve().parents[2]


def reach(run: Path, threshold: float = 0.9, link: int = 1) -> np.ndarray:
    """TV(bank's region fractions, F's means) of every region of every test image."""
    with h5py.File(run / "samples" / "test.h5", "r") as f:
        calib = f["calibration"][:].astype(np.float32)
        samples = f["samples"][:]
    k = calib.shape[1]
    out = []
    for i in range(len(calib)):
        ids = linked_regions(calib[i : i + 1], threshold, link, MAX_REGIONS)[0].reshape(-1)
        regions = np.unique(ids[ids >= 0])
        if not len(regions):
            continue
        flat = samples[i].reshape(len(samples[i]), -1)
        comps, targets = region_fractions(flat, calib[i].reshape(k, -1), ids, regions, threshold)
        out += [0.5 * np.abs(c.mean(0) - t).sum() for c, t in zip(comps, targets, strict=True)]
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--docs", type=Path)
    ap.add_argument("--labels", nargs="*", default=[])
    args = ap.parse_args()
    rows = []
    for j, run in enumerate(args.runs):
        tv = reach(run)
        label = args.labels[j] if args.labels else str(run)
        figures = (tv.mean(), np.median(tv), np.quantile(tv, 0.9), (tv > 0.1).mean())
        rows.append([label, str(run).removeprefix("runs/"), str(len(tv))])
        rows[-1] += [f"{x:.4f}" for x in figures]
        print(" | ".join(rows[-1]))
    if args.docs:
        sys.path.insert(0, str(REPO / "scripts"))
        from docs_tables import write_result

        write_result(
            args.docs,
            "python experiments/joint/tilt_reach.py RUN ... --docs " + str(args.docs),
            "x86_64, 2 CPU cores",
            ["set", "run", "regions", "TV mean", "median", "90th percentile", "share above 0.1"],
            rows,
            note="TV between the bank's mean class fractions over each region's uncertain "
            "pixels and F's mean probabilities there (the pool tilt's target), per region of "
            "F's uncertain pixels of every test image.",
        )


if __name__ == "__main__":
    main()
