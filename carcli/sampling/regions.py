"""Recombining G's draws by region: declared independent regions, the learned coupling's
groups, and sampling from a pool (:class:`CoupledRegions`).

`sample.independent_regions` (beyond the paper, docs/method.md "Beyond the paper"). Under the
assumption that F's separate uncertain regions (8-connected, top class probability below
``sample.region_threshold``, the mask grown by ``sample.region_link`` pixels first) are
conditionally independent given the image, the joint
distribution of a map's answers is the product of the regions' marginals. G's M samples of an
image give each region's marginal; this step recombines them so that every output sample takes
each region's answer from a different one of G's samples:

    out[m] = samples[(m + o_r) mod M]  inside region r,   samples[m]  elsewhere,

with distinct offsets o_0, o_1, ... (a random permutation of 0..M-1, seeded per image like
the noise). So within one output sample the regions' answers come from independent draws of
G, and across the M outputs each region keeps exactly G's M answers: every per-pixel
frequency, hence F / G calibration and the per-class offsets, is unchanged. Regions past the
M-th (an image with more regions than samples) reuse offsets: region r shares its draw with
region r - M. Data whose separate regions are coupled by construction (the modified
Cityscapes flips a class everywhere in the image at once) must leave this off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from carcli.models.noise import region_ids

COUPLED_ABOVE = 1.0 / 3.0
"""A pair of regions is coupled when the head's probability exceeds this. Its targets are 0
on average for independent regions and 1 for two regions that always agree, exact modes or
as few as four raters (carcli.metrics.association); a third sits between, nearer the
independent side, because drawing coupled regions apart (a pair the labels never show) costs
more than keeping G's own joint for independent ones."""

TILT_BOUND = 30.0
"""Bound on :func:`tilt_weights`' parameters: weights at most e^30 apart from the prior's."""

MAX_REGIONS = 64
"""Region ids of the learned recombination wrap at this count (more regions in one image
share ids, hence answers)."""


def linked_regions(calib: np.ndarray, threshold: float, link: int, max_regions: int) -> np.ndarray:
    """Region ids [B, H, W] (int64) of F's probabilities calib [B, K, H, W]: the uncertain
    mask (top class probability below ``threshold``) grown by ``link`` pixels, so uncertain
    parts at most 2 * ``link`` pixels apart (an object and its detached halo) are one region
    and each region carries a ``link``-pixel margin of certain pixels with it
    (:func:`carcli.models.noise.region_ids`)."""
    return region_ids(uncertain_mask(calib, threshold), max_regions, link)


def uncertain_mask(calib: np.ndarray, threshold: float) -> np.ndarray:
    """F's uncertain pixels [B, H, W]: top class probability of calib [B, K, H, W] below
    ``threshold`` (every region of :func:`linked_regions` grows from them)."""
    return np.asarray(calib, dtype=np.float32).max(1) < threshold


def region_offsets(seed: int, row: int, m: int) -> np.ndarray:
    """The offsets o_r of image `row` (a permutation of 0..m-1), independent of batching."""
    rng = np.random.default_rng([int(seed) % 2**63, int(row) % 2**63, 0x1D5])
    return rng.permutation(m)


def independent_regions(
    samples: np.ndarray,
    calib: np.ndarray,
    rows: np.ndarray,
    seed: int,
    threshold: float,
    link: int = 0,
) -> np.ndarray:
    """Samples [B, M, H, W] recombined region by region (module docstring), for F's
    probabilities calib [B, K, H, W] of dataset (or noise-key) rows `rows`; regions as
    :func:`linked_regions` makes them."""
    b, m = samples.shape[:2]
    if m < 2:
        return samples
    ids = linked_regions(calib, threshold, link, m)
    out = np.empty_like(samples)
    for i in range(b):
        offsets = np.append(region_offsets(seed, int(rows[i]), m), 0)  # id m: no region
        out[i] = recombine(samples[i], ids[i], offsets)
    return out


@dataclass(frozen=True)
class IndependentRegions:
    """The recombination's settings (sample.region_threshold, sample.region_link)."""

    threshold: float = 0.9
    link: int = 1  # the recipe's default (sample.region_link)

    def __call__(
        self, samples: np.ndarray, calib: np.ndarray, rows: np.ndarray, seed: int, **_: Any
    ) -> np.ndarray:
        """As :func:`independent_regions`; the image and D's scores that the learned
        recombination reads are not needed."""
        return independent_regions(samples, calib, rows, seed, self.threshold, self.link)


def region_groups(count: int, pairs: np.ndarray, coupled: np.ndarray) -> np.ndarray:
    """Group id [count] of each region: regions joined by a coupled pair (directly or through
    others) share a group; groups numbered in order of their first region."""
    parent = list(range(count))

    def root(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for (r, s), c in zip(np.asarray(pairs).reshape(-1, 2), np.asarray(coupled), strict=True):
        if c:
            a, b = root(int(r)), root(int(s))
            parent[max(a, b)] = min(a, b)
    roots = [root(r) for r in range(count)]
    first: dict[int, int] = {}
    return np.array([first.setdefault(q, len(first)) for q in roots], dtype=np.int64)


def compositions(values: np.ndarray, k: int) -> np.ndarray:
    """[N, k] class fractions of each draw's values [N, P] (class ids 0..k-1)."""
    return np.stack([(values == c).mean(1) for c in range(k)], axis=1)


def reachable_target(comp: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target`` [k] moved to where the draws' class fractions comp [N, k] can reach: a class
    whose fraction is the same in every draw (one no draw shows, say, where F gives it 0.001)
    keeps that fraction, and the other classes share the rest in the target's proportions."""
    fixed = comp.std(0) < 1e-12
    t = np.where(fixed, comp[0], target).astype(np.float64)
    free = ~fixed
    if free.any():
        rest, total = 1.0 - t[fixed].sum(), t[free].sum()
        t[free] = t[free] * (rest / total) if total > 0 else rest / free.sum()
    return t


def tilt_weights(
    comps: list[np.ndarray], targets: list[np.ndarray], prior: np.ndarray, iters: int = 50
) -> np.ndarray:
    """Weights w [N] of the draws closest to ``prior`` [N] in KL (an exponential tilt,
    w_n proportional to prior_n exp(x_n . theta)) such that sum_n w_n comps[r][n] =
    targets[r] for every r, for class fractions comps[r] [N, k] (of one region, say) and
    targets[r] [k] (each summing to 1; first moved to what the draws can reach,
    :func:`reachable_target`). A target outside the draws' hull is approached as far as
    theta's bound allows; draws that all agree keep the prior."""
    targets = [reachable_target(c, t) for c, t in zip(comps, targets, strict=True)]
    x = np.concatenate([c[:, :-1] for c in comps], axis=1).astype(np.float64)
    t = np.concatenate([tt[:-1] for tt in targets])
    t = t - x.mean(0)
    x = x - x.mean(0)
    theta = np.zeros(x.shape[1])
    log_prior = np.log(np.maximum(prior, 1e-300))

    def dual(th: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ th + log_prior
        top = z.max()
        w = np.exp(z - top)
        return top + np.log(w.sum()) - th @ t, w / w.sum()

    f, w = dual(theta)
    for _ in range(iters):
        mean = w @ x
        grad = mean - t
        if np.abs(grad).max() < 1e-7:
            break
        cov = (x - mean).T @ ((x - mean) * w[:, None])
        step = np.linalg.lstsq(cov, grad, rcond=1e-10)[0]  # coupled regions: equal columns
        size = 1.0
        while size > 1e-4:
            new = np.clip(theta - size * step, -TILT_BOUND, TILT_BOUND)
            f_new, w_new = dual(new)
            if f_new <= f:
                break
            size /= 2
        else:
            break
        theta, f, w = new, f_new, w_new
    return w


def region_fractions(
    flat: np.ndarray, calib: np.ndarray, ids: np.ndarray, regions: np.ndarray, threshold: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For each region of ``regions``: the draws' class fractions over its uncertain pixels
    (flat [N, P] class ids, F's probabilities calib [K, P], ids [P]) and F's mean
    probabilities there, the moments `sample.pool_target: calibrator` tilts to."""
    k = calib.shape[0]
    uncertain = calib.max(0) < threshold
    comps, targets = [], []
    for r in regions:
        where = (ids == r) & uncertain
        if where.any():
            comps.append(compositions(flat[:, where], k))
            targets.append(calib[:, where].mean(1).astype(np.float64))
    return comps, targets


def stratified_pick(
    weights: np.ndarray, comp: np.ndarray, m: int, rng: np.random.Generator
) -> np.ndarray:
    """m draw indices by systematic resampling of ``weights`` over the draws sorted by their
    class fractions comp [N, k] (so each answer is picked within one of m times its weight),
    in random order."""
    order = np.lexsort(comp.T[::-1])
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    u = (rng.random() + np.arange(m)) / m
    pick = order[np.searchsorted(cum, u, side="right").clip(max=len(order) - 1)]
    return rng.permutation(pick)


def recombine(samples: np.ndarray, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One image's samples [M, H, W]: pixel of region id k (ids [H, W]) taken from sample
    (m + offsets[k]) mod M; ``offsets`` has one more entry (0) for the no-region id."""
    m = samples.shape[0]
    shift = offsets[ids.reshape(-1)]
    source = (np.arange(m)[:, None] + shift[None, :]) % m
    flat = samples.reshape(m, -1)
    return np.take_along_axis(flat, source, axis=0).reshape(samples.shape)


@dataclass(frozen=True)
class CoupledRegions:
    """Learned recombination (`sample.region_coupling: learned`): F's separate uncertain
    regions are grouped by the coupling head's calls (a pair whose predicted probability of
    co-varying exceeds ``COUPLED_ABOVE`` joins one group); each output sample takes every
    group's answer from a different one of G's draws, so G's joint is kept within a group
    and groups are drawn independently: output m takes group g from G's draw
    (m + o_g - o_0) mod M, o a random permutation seeded per image, so the first group (and
    all the map outside the regions) keeps draw m. Every per-pixel frequency is unchanged, as with
    :func:`independent_regions`; with every pair called coupled the samples are G's as drawn.

    With ``pool`` > 1 (`sample.region_pool`) G has drawn pool x M samples and each group
    picks its M answers from them (:meth:`_resample`): stratified over the answers, and
    weighted by D where ``critic`` is set (`sample.pool_critic`), the group's mean class
    fractions kept at the pool's (per-pixel frequencies are then the pool's, up to one M-th),
    or, with ``target`` "calibrator" (`sample.pool_target`), each region's moved to F's.
    """

    head: Any  # carcli.models.coupling.RegionCoupling, in eval mode
    threshold: float = 0.9
    link: int = 1
    pool: int = 1  # sample.region_pool
    critic: Any = None  # D (eval mode) where sample.pool_critic > 0
    sharpness: float = 0.0  # sample.pool_critic: draws weighted by exp(sharpness * D's logit)
    target: str = "pool"  # sample.pool_target: what each group's picks are tilted to

    def __call__(
        self,
        samples: np.ndarray,
        calib: np.ndarray,
        rows: np.ndarray,
        seed: int,
        image: Any = None,
        scores: np.ndarray | None = None,
    ) -> np.ndarray:
        import torch

        b, n = samples.shape[:2]
        m = n // self.pool
        if n < 2:
            return samples
        ids = linked_regions(calib, self.threshold, self.link, MAX_REGIONS)
        counts = [int(ids[i][ids[i] < MAX_REGIONS].max(initial=-1)) + 1 for i in range(b)]
        pairs = [
            (i, r, s) for i in range(b) for r in range(counts[i]) for s in range(r + 1, counts[i])
        ]
        coupled = np.zeros(0, dtype=bool)
        if pairs:
            with torch.inference_mode():
                logits = self.head(
                    torch.as_tensor(image, dtype=torch.float32),
                    torch.as_tensor(calib, dtype=torch.float32),
                    torch.from_numpy(ids),
                    torch.tensor(pairs, dtype=torch.int64),
                )
            coupled = (torch.sigmoid(logits) > COUPLED_ABOVE).numpy()
        table = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        out = np.empty((b, m, *samples.shape[2:]), dtype=samples.dtype)
        for i in range(b):
            mine = table[:, 0] == i
            groups = region_groups(counts[i], table[mine, 1:], coupled[mine])
            if self.pool > 1:
                base = None if scores is None else scores[i]
                out[i] = self._resample(
                    samples[i], calib[i], ids[i], groups, seed, int(rows[i]), base
                )
                continue
            offsets = np.zeros(MAX_REGIONS + 1, dtype=np.int64)  # id MAX_REGIONS: no region
            perm = region_offsets(seed, int(rows[i]), m)
            offsets[: counts[i]] = (perm[groups % m] - perm[0]) % m  # group 0 keeps its draw
            out[i] = recombine(samples[i], ids[i], offsets)
        return out

    def pooled(self, calib: np.ndarray) -> np.ndarray:
        """Which images [B] of F's probabilities calib [B, K, H, W] draw the pool: those with
        an uncertain region, i.e. an uncertain pixel (the others keep their first M draws,
        :meth:`__call__`)."""
        return uncertain_mask(calib, self.threshold).reshape(len(calib), -1).any(1)

    def _resample(
        self,
        draws: np.ndarray,
        calib: np.ndarray,
        ids: np.ndarray,
        groups: np.ndarray,
        seed: int,
        row: int,
        scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """One image's M outputs from its N = M * pool draws [N, H, W]: each group picks its
        M answers from the N draws by :func:`stratified_pick` (so each answer's count is within
        one of M times its share of the pool). Where ``scores`` (D's logits [N]) are given, the
        draws are weighted by exp(sharpness x D's logit), then tilted (:func:`tilt_weights`)
        so that the group's mean class fractions stay the whole pool's: D decides which draws
        of an answer are kept, not how often the answer comes. With ``target`` "calibrator"
        (`sample.pool_target`) the tilt instead moves each region's mean class fractions over
        its uncertain pixels to F's mean probabilities there (calib [K, H, W]), D's weights
        or none: how often an answer comes is F's. The groups' picks are shuffled apart
        (independent groups); outside the regions output m is draw m."""
        n = draws.shape[0]
        m = n // self.pool
        k = calib.shape[0]
        flat = draws.reshape(n, -1)
        calib_flat = np.asarray(calib, dtype=np.float32).reshape(k, -1)
        idsf = ids.reshape(-1)
        rng = np.random.default_rng([int(seed) % 2**63, row % 2**63, 0x7117])
        src = np.tile(np.arange(m)[:, None], (1, MAX_REGIONS + 1))
        prior = np.full(n, 1.0 / n)
        if scores is not None:
            z = self.sharpness * np.asarray(scores, dtype=np.float64)
            prior = np.exp(z - z.max())
            prior /= prior.sum()
        for g in range(int(groups.max(initial=-1)) + 1):
            regs = np.flatnonzero(groups == g)
            mask = np.isin(idsf, regs)
            comp = compositions(flat[:, mask], k)
            if self.target == "calibrator":
                comps, targets = region_fractions(flat, calib_flat, idsf, regs, self.threshold)
                w = tilt_weights(comps, targets, prior) if comps else prior
            else:
                w = prior if scores is None else tilt_weights([comp], [comp.mean(0)], prior)
            src[:, regs] = stratified_pick(w, comp, m, rng)[:, None]
        return np.take_along_axis(flat, src[:, idsf], axis=0).reshape(m, *draws.shape[1:])


__all__ = [
    "CoupledRegions",
    "IndependentRegions",
    "independent_regions",
    "linked_regions",
    "recombine",
    "region_groups",
    "region_offsets",
]
