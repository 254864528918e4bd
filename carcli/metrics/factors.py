"""Factor dependence: how independent G's answers are in separate ambiguous regions.

A dataset whose modes are a product of independent factors (the synthetic set: class flips
and halos per object; Cityscapes: one flip per class) has, per image, regions where the modes
disagree. For each pair of such regions (8-connected components of the disagreement mask of
at least ``MIN_REGION`` pixels) that the truth makes independent (the joint of their true
states is the product of its marginals), each sample's state of a region is the mode pattern
it is closest to there (Hamming distance, ties: the first pattern), and the pair's
*dependence* is the total variation between the joint distribution of the two states and
the product of its marginals: 0 for independent answers, 0.5 for two fair coins that always
agree. The same for the oracle (as many draws from the true mode distribution: what sampling
noise alone gives), and ``joint_tv``: the total variation between the pair's joint and the
truth's. Figures are means over all pairs of a split (``summarise``).

Pairs that the truth couples (two objects that share one coin, every instance of a flipped
class) are scored too (:func:`region_pairs`, metrics.json's ``region_pairs``): the joint TV
to the truth of coupled pairs and of independent pairs apart, and the share of samples whose
pair of states the truth can show (``agree``), so that both errors are visible: drawing
coupled objects apart and coupling independent ones.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_REGION = 3
_INDEPENDENT_TOL = 1e-6


def dependence(joint: np.ndarray) -> float:
    """TV between a joint distribution [a, b] and the product of its marginals."""
    joint = np.asarray(joint, dtype=np.float64)
    return float(0.5 * np.abs(joint - joint.sum(1, keepdims=True) * joint.sum(0)).sum())


def joint_distribution(
    a: np.ndarray, b: np.ndarray, weight: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """The joint [shape] of paired states a, b [n] with per-pair weights [n]."""
    out = np.zeros(shape)
    np.add.at(out, (np.asarray(a), np.asarray(b)), weight)
    return out


def factor_pairs(
    modes: np.ndarray, weights: np.ndarray, samples: np.ndarray, oracle: np.ndarray
) -> list[dict[str, float]]:
    """Figures of every truly independent pair of ambiguous regions of one image
    (:func:`region_pairs`' pairs that the truth leaves independent)."""
    return [p for p in region_pairs(modes, weights, samples, oracle) if not p["coupled"]]


def region_pairs(
    modes: np.ndarray, weights: np.ndarray, samples: np.ndarray, oracle: np.ndarray
) -> list[dict[str, float]]:
    """Figures of every pair of separate ambiguous regions of one image, coupled or not.

    ``modes`` [A, H, W] with ``weights`` [A] (zero = padding), ``samples`` [M, H, W] and
    ``oracle`` [M']: indices into ``modes`` of draws from the true distribution. Each pair
    has ``coupled`` (the truth's joint is not the product of its marginals), ``dependence``
    and ``joint_tv`` of G's samples and of the oracle, and ``agree`` / ``oracle_agree``: the
    share of samples whose pair of states is one the truth can show (for two objects that
    share one coin: both took the same side).
    """
    found = _region_states(modes, weights, samples, oracle)
    if found is None:
        return []
    w, true_states, sample_states, oracle = found
    out = []
    g_mass = np.full(len(samples), 1.0 / len(samples))
    o_mass = np.full(len(oracle), 1.0 / max(len(oracle), 1))
    for i in range(len(true_states)):
        for j in range(i + 1, len(true_states)):
            ti, tj = true_states[i], true_states[j]
            shape = (int(ti.max()) + 1, int(tj.max()) + 1)
            if min(shape) < 2:
                continue  # not two ambiguous regions
            truth = joint_distribution(ti, tj, w, shape)
            g = joint_distribution(sample_states[i], sample_states[j], g_mass, shape)
            o = joint_distribution(ti[oracle], tj[oracle], o_mass, shape)
            out.append(
                {
                    "coupled": dependence(truth) > _INDEPENDENT_TOL,
                    "dependence": dependence(g),
                    "oracle_dependence": dependence(o),
                    "joint_tv": float(0.5 * np.abs(g - truth).sum()),
                    "oracle_joint_tv": float(0.5 * np.abs(o - truth).sum()),
                    "agree": float(g[truth > 0].sum()),
                    "oracle_agree": float(o[truth > 0].sum()),
                }
            )
    return out


def ambiguous_regions(modes: np.ndarray) -> list[np.ndarray]:
    """Masks [H, W] of the separate regions where the (non-padding) modes [A, H, W] disagree:
    8-connected components of at least ``MIN_REGION`` pixels, in label order."""
    labels, count = ndimage.label((modes != modes[:1]).any(0), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)
    return [labels == i for i in range(1, count + 1) if sizes[i] >= MIN_REGION]


def _region_states(
    modes: np.ndarray, weights: np.ndarray, samples: np.ndarray, oracle: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray] | None:
    """(mode weights, each region's true state per mode, its state per sample, the oracle's
    draws as positions among the kept modes); None without two modes or samples."""
    modes, samples = np.asarray(modes), np.asarray(samples)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    oracle = np.asarray(oracle, dtype=np.intp).reshape(-1)
    keep = np.flatnonzero(weights > 0)
    if len(keep) < 2 or len(samples) == 0:
        return None
    position = np.full(len(weights), -1, dtype=np.intp)
    position[keep] = np.arange(len(keep))
    oracle = position[oracle]
    if (oracle < 0).any():
        raise ValueError("oracle draws must index non-padding modes")
    modes, w = modes[keep], weights[keep] / weights[keep].sum()
    true_states, sample_states = [], []
    for r in ambiguous_regions(modes):
        patterns, inverse = np.unique(modes[:, r], axis=0, return_inverse=True)
        true_states.append(inverse.reshape(-1))
        hamming = (samples[:, r][:, None, :] != patterns[None]).sum(-1)
        sample_states.append(hamming.argmin(1))
    return w, true_states, sample_states, oracle


def summarise(pairs: list[dict[str, float]]) -> dict:
    """Means over pairs as metrics.json's ``factor_dependence`` (None values: no pair)."""
    keys = {
        "g": "dependence",
        "oracle": "oracle_dependence",
        "joint_tv_g": "joint_tv",
        "joint_tv_oracle": "oracle_joint_tv",
    }
    out: dict = {
        k: (float(np.mean([p[src] for p in pairs])) if pairs else None) for k, src in keys.items()
    }
    out["n_pairs"] = len(pairs)
    return out


def summarise_regions(pairs: list[dict]) -> dict:
    """metrics.json's ``region_pairs``: :func:`region_pairs`' pairs split into those the
    truth couples and those it leaves independent, each with its means (None: no pair)."""
    keys = {
        "joint_tv_g": "joint_tv",
        "joint_tv_oracle": "oracle_joint_tv",
        "agree_g": "agree",
        "agree_oracle": "oracle_agree",
        "dependence_g": "dependence",
        "dependence_oracle": "oracle_dependence",
    }
    out = {}
    for name, coupled in (("coupled", True), ("independent", False)):
        some = [p for p in pairs if p["coupled"] == coupled]
        block: dict = {
            k: (float(np.mean([p[src] for p in some])) if some else None) for k, src in keys.items()
        }
        block["n_pairs"] = len(some)
        out[name] = block
    return out
