"""Where the error of independent pairs comes from: each ambiguous region's answer frequencies
(its marginal) in G's samples, in F's probabilities and in an oracle, against the truth.

    python experiments/joint/marginals.py RUN DATA_DIR [--split test]

For every region of :func:`carcli.metrics.factors._region_states` with two or more true
states: TV(G, truth) of the state frequencies over the bank's samples, TV(F, truth) with F's
state probabilities (the mean over the region's pixels of F's probability of each state's
class, normalised), TV(G, F), and TV(oracle, truth) for as many draws from the truth. A ratio
G/oracle near F/oracle means F bounds G; a G/F gap means G does not reach F's region answer.
"""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np

from carcli.metrics.factors import _region_states, ambiguous_regions


def region_marginals(modes, weights, samples, calib, rng):
    found = _region_states(modes, weights, samples, np.zeros(0, dtype=np.intp))
    if found is None:
        return []
    w, true_states, sample_states, _ = found
    modes = np.asarray(modes)[np.flatnonzero(np.asarray(weights) > 0)]
    regions = ambiguous_regions(modes)  # the regions _region_states scored, in its order
    out = []
    for r, ts, ss in zip(regions, true_states, sample_states, strict=True):
        k = int(ts.max()) + 1
        if k < 2:
            continue
        truth = np.bincount(ts, weights=w, minlength=k)
        g = np.bincount(ss, minlength=k) / len(ss)
        patterns = [modes[np.flatnonzero(ts == s)[0]][r] for s in range(k)]
        cal = calib[:, r]  # [C, n]
        f = np.array([cal[p, np.arange(r.sum())].mean() for p in patterns])
        f = f / f.sum()
        draws = rng.choice(k, size=len(ss), p=truth)
        o = np.bincount(draws, minlength=k) / len(ss)
        out.append(
            {
                "g": 0.5 * np.abs(g - truth).sum(),
                "f": 0.5 * np.abs(f - truth).sum(),
                "g_f": 0.5 * np.abs(g - f).sum(),
                "oracle": 0.5 * np.abs(o - truth).sum(),
                "pixels": int(r.sum()),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with (
        h5py.File(f"{args.run}/samples/{args.split}.h5") as bank,
        h5py.File(f"{args.data}/{args.split}.h5") as data,
    ):
        index = bank["index"][:]
        for n, i in enumerate(index):
            rows += region_marginals(
                data["label"][i],
                data["label_weight"][i],
                bank["samples"][n],
                bank["calibration"][n].astype(np.float32),
                rng,
            )
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("g", "f", "g_f", "oracle")}
    small = [r for r in rows if r["pixels"] < 40]
    out["n_regions"] = len(rows)
    out["small_g"] = float(np.mean([r["g"] for r in small])) if small else None
    out["small_n"] = len(small)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
