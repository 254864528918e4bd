"""Distinct label proposals among an image's samples, with their frequencies.

Two class maps are *the same proposal* when their mean IoU over the eval classes is at least
``SAME`` (0.95); the IoU of a class absent from both maps is left out of the mean, and two
maps with no eval class at all count as identical (IoU 1). Grouping is greedy: the distinct
maps in order of decreasing count (ties: first drawn first), each joins the first proposal
whose representative it matches, else starts a new one (and is its representative). Each
proposal reports ``frequency`` (its share of the N samples; they sum to 1), ``sample`` (the
index of its representative among the samples), ``count``, and ``mean_iou_to_others`` (the
mean IoU of the representative to the samples outside the proposal; null when there are
none). Proposals are sorted by frequency, most frequent first.
"""

from __future__ import annotations

import numpy as np

SAME = 0.95


def pairwise_miou(maps: np.ndarray, classes: list[int]) -> np.ndarray:
    """Mean IoU over `classes` of every pair of maps [U, H, W] -> [U, U]."""
    u = maps.shape[0]
    flat = maps.reshape(u, -1)
    total = np.zeros((u, u), np.float64)
    present = np.zeros((u, u), np.float64)
    for c in classes:
        a = (flat == c).astype(np.float32)
        inter = a @ a.T
        cnt = a.sum(1)
        union = cnt[:, None] + cnt[None, :] - inter
        has = union > 0
        total[has] += inter[has] / union[has]
        present += has
    out = np.ones((u, u), np.float64)
    np.divide(total, present, out=out, where=present > 0)
    return out


def proposals(samples: np.ndarray, eval_classes: list[int]) -> list[dict]:
    """Proposals (module docstring) of samples uint8 [N, H, W]."""
    n = samples.shape[0]
    first: dict[bytes, int] = {}
    owner = np.empty(n, np.int64)
    for i in range(n):
        owner[i] = first.setdefault(samples[i].tobytes(), i)
    uniq, counts = np.unique(owner, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda j: (-counts[j], uniq[j]))
    uniq, counts = uniq[order], counts[order]
    miou = pairwise_miou(samples[uniq], eval_classes)
    reps: list[int] = []  # positions in uniq
    members: dict[int, list[int]] = {}
    for j in range(len(uniq)):
        for r in reps:
            if miou[j, r] >= SAME:
                members[r].append(j)
                break
        else:
            reps.append(j)
            members[j] = [j]
    out = []
    for r in reps:
        inside = set(members[r])
        count = int(sum(counts[j] for j in inside))
        others = [j for j in range(len(uniq)) if j not in inside]
        w = np.array([counts[j] for j in others], np.float64)
        to_others = float((miou[r, others] * w).sum() / w.sum()) if others else None
        out.append(
            {
                "frequency": count / n,
                "count": count,
                "sample": int(uniq[r]),
                "mean_iou_to_others": to_others,
            }
        )
    out.sort(key=lambda p: (-p["count"], p["sample"]))
    return out
