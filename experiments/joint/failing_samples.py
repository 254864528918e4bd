"""Why samples miss within-0.8: of the bank's samples whose best true mode is below IoU 0.8,
the share holding an ambiguous region that is none of its true states (more than 10% of the
region's pixels from every state the modes show there).

    python experiments/joint/failing_samples.py RUN DATA_DIR [--images 200]
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from carcli.metrics.distance import pairwise_distance
from carcli.metrics.factors import ambiguous_regions
from carcli.metrics.modes import merge_modes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    n = fail = mixed = 0
    with (
        h5py.File(f"{args.run}/samples/test.h5") as bank,
        h5py.File(f"{args.data}/test.h5") as data,
    ):
        k = int(data.attrs["num_classes"])
        for row, i in enumerate(bank["index"][: args.images]):
            modes = data["label"][i][merge_modes(data["label"][i], data["label_weight"][i])[0]]
            s = bank["samples"][row]
            d, valid = pairwise_distance(s, modes, num_classes=k)
            sim = 1 - d
            if valid is not None:
                sim[~valid] = 1
            regions = ambiguous_regions(modes) if len(modes) > 1 else []
            for m in np.flatnonzero(sim.max(1) < 0.8 - 1e-9):
                fail += 1
                states = (np.unique(modes[:, r], axis=0) for r in regions)
                off = [
                    (s[m][r][None] != st).sum(1).min() > 0.1 * r.sum()
                    for r, st in zip(regions, states, strict=True)
                ]
                mixed += any(off)
            n += len(s)
    share = mixed / max(fail, 1)
    print(f"samples {n}, below within-0.8 {fail} ({fail / n:.4f}),")
    print(f"of them with a region that is none of its true states: {mixed} ({share:.2f})")


if __name__ == "__main__":
    main()
