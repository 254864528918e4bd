"""How F's uncertain regions (region noise, refiner.region_threshold) line up with the true
independent factors of a synthetic set's test split.

    python experiments/joint/region_check.py RUN DATA_DIR THRESHOLD [THRESHOLD ...]
    e.g. python experiments/joint/region_check.py runs/toy data/toy 0.9 0.95

Prints, per threshold: the share of the true ambiguous regions' pixels that F calls uncertain,
how many pairs of true regions fall in one uncertain region of F (they would share a code),
and the uncertain regions per image.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from scipy import ndimage

from carcli.models.noise import uncertain_regions
from carcli.models.registry import build_model

NONE = 1000  # region id of certain pixels (max_regions: no wrap-around)


def main() -> None:
    run, data, *thresholds = sys.argv[1:]
    path = f"{run}/calibrator/model.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    calibrator = build_model("calibrator", json.loads(meta["config"]))
    calibrator.load_state_dict(load_file(path))
    calibrator.eval()
    with h5py.File(f"{data}/test.h5") as h5:
        x = torch.from_numpy(h5["image"][:])
        modes, weights = h5["label"][:], h5["label_weight"][:]
    with torch.no_grad():
        p = torch.cat([calibrator(x[i : i + 100]).softmax(1) for i in range(0, len(x), 100)])
    for t in map(float, thresholds):
        ids = uncertain_regions(p, t, NONE).numpy()
        shared = total = 0
        cover, count = [], []
        for b in range(len(x)):
            m = modes[b][weights[b] > 0]
            labels, n = ndimage.label((m != m[:1]).any(0), structure=np.ones((3, 3)))
            regions = [labels == i for i in range(1, n + 1) if (labels == i).sum() >= 3]
            count.append(len(np.unique(ids[b][ids[b] < NONE])))
            owner = []
            for r in regions:
                v = ids[b][r]
                cover.append((v < NONE).mean())
                v = v[v < NONE]
                owner.append(np.bincount(v).argmax() if len(v) else -1)
            for i in range(len(regions)):
                for j in range(i + 1, len(regions)):
                    total += 1
                    shared += owner[i] == owner[j] >= 0
        print(
            f"threshold {t}: true-region pixels uncertain {np.mean(cover):.3f}, pairs sharing "
            f"one region {shared}/{total}, uncertain regions per image {np.mean(count):.1f}"
        )


if __name__ == "__main__":
    main()
