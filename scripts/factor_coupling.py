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

python scripts/factor_coupling.py RUN [RUN ...] [--split test] [--seed 0]
(the dataset is the one the sample bank names in its attrs)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage


def dependence(joint: np.ndarray) -> float:
    """TV between a joint distribution [a, b] and the product of its marginals."""
    return float(0.5 * np.abs(joint - joint.sum(1, keepdims=True) * joint.sum(0)).sum())


def joint(a: np.ndarray, b: np.ndarray, weight: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape)
    np.add.at(out, (a, b), weight)
    return out


def image_pairs(
    modes: np.ndarray, weights: np.ndarray, samples: np.ndarray, rng: np.random.Generator
) -> list[dict[str, float]]:
    """Figures of every truly independent pair of ambiguous regions of one image: ``modes``
    [A, H, W] with ``weights`` [A] (zero-weight rows are padding), ``samples`` [M, H, W]."""
    keep = weights > 0
    modes, weights = modes[keep], weights[keep] / weights[keep].sum()
    if len(modes) < 2:
        return []
    labels, count = ndimage.label((modes != modes[:1]).any(0), structure=np.ones((3, 3)))
    regions = [labels == i for i in range(1, count + 1)]
    regions = [r for r in regions if r.sum() >= 3]
    m = len(samples)
    oracle = rng.choice(len(modes), size=m, p=weights)
    true_states, sample_states = [], []
    for r in regions:
        patterns, inverse = np.unique(modes[:, r], axis=0, return_inverse=True)
        true_states.append(inverse.reshape(-1))
        hamming = (samples[:, r][:, None, :] != patterns[None]).sum(-1)
        sample_states.append(hamming.argmin(1))
    out = []
    uniform = np.full(m, 1.0 / m)
    for i in range(len(regions)):
        for j in range(i + 1, len(regions)):
            ti, tj = true_states[i], true_states[j]
            shape = (int(ti.max()) + 1, int(tj.max()) + 1)
            truth = joint(ti, tj, weights, shape)
            if min(shape) < 2 or dependence(truth) > 1e-6:
                continue  # not two independent factors
            g = joint(sample_states[i], sample_states[j], uniform, shape)
            o = joint(ti[oracle], tj[oracle], uniform, shape)
            out.append(
                {
                    "dependence": dependence(g),
                    "oracle_dependence": dependence(o),
                    "joint_tv": float(0.5 * np.abs(g - truth).sum()),
                    "oracle_joint_tv": float(0.5 * np.abs(o - truth).sum()),
                }
            )
    return out


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
