"""How independent G's answers are in separate ambiguous regions of one image.

A dataset whose modes are a product of independent factors (the built-in synthetic set:
class flips and halos per object) has, per image, regions where the modes disagree. For each
pair of such regions (8-connected components of the disagreement mask, at least 3 pixels)
that are independent in the truth, each sample's state of a region is the mode pattern it is
closest to there (Hamming distance), and the pair's *dependence* is the total variation
between the joint distribution of the two states and the product of its marginals (0 for
independent answers, 0.5 for two fair coins that always agree). Reported: the mean
dependence of G's samples, of the same number of draws from the true mode distribution (the
oracle: what sampling noise alone gives), and the TV between the pairs' joint distributions
and the truth's, for G and the oracle.

python experiments/joint/factor_coupling.py RUN [RUN ...] [--split test] [--seed 0]
(the dataset is the one the sample bank names in its attrs). The measure itself lives in
``carcli.metrics.factors``; ``carseg evaluate`` reports it as ``factor_dependence`` for
every dataset with ``label_weight``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from carcli.metrics.factors import dependence, factor_pairs, joint_distribution

__all__ = ["coupling", "dependence", "image_pairs", "joint"]
joint = joint_distribution


def image_pairs(
    modes: np.ndarray, weights: np.ndarray, samples: np.ndarray, rng: np.random.Generator
) -> list[dict[str, float]]:
    """Figures of every truly independent pair of ambiguous regions of one image: ``modes``
    [A, H, W] with ``weights`` [A] (zero-weight rows are padding), ``samples`` [M, H, W];
    the oracle's M draws come from ``rng`` (``carcli.metrics.factors.factor_pairs``)."""
    keep = np.flatnonzero(weights > 0)
    if len(keep) < 2:
        return []
    w = weights[keep] / weights[keep].sum()
    oracle = keep[rng.choice(len(keep), size=len(samples), p=w)]
    return factor_pairs(modes, weights, samples, oracle)


def coupling(run: Path, split: str = "test", seed: int = 0) -> dict[str, float]:
    bank = run / "samples" / f"{split}.h5"
    with h5py.File(bank, "r") as f:
        samples, data = f["samples"][:], Path(str(f.attrs["dataset"]))
    with h5py.File(data, "r") as f:
        labels, weights = f["label"][:], f["label_weight"][:]
    if len(samples) != len(labels):
        raise SystemExit(f"{bank}: {len(samples)} sampled images but {len(labels)} in {data}")
    rng = np.random.default_rng(seed)
    pairs = [
        p for n in range(len(labels)) for p in image_pairs(labels[n], weights[n], samples[n], rng)
    ]
    if not pairs:
        raise SystemExit(f"{data}: no image has two independent ambiguous regions")
    out = {k: float(np.mean([p[k] for p in pairs])) for k in pairs[0]}
    return {"pairs": len(pairs), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| run | pairs | dependence (oracle) | joint TV (oracle) |")
    print("|---|---|---|---|")
    for run in args.runs:
        c = coupling(run, args.split, args.seed)
        print(
            f"| {run.name} | {c['pairs']} | {c['dependence']:.3f} ({c['oracle_dependence']:.3f}) "
            f"| {c['joint_tv']:.3f} ({c['oracle_joint_tv']:.3f}) |"
        )


if __name__ == "__main__":
    main()
