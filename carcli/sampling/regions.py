"""Independent regions: a sample set whose separate uncertain regions are drawn independently.

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

import numpy as np

from carcli.models.noise import region_ids


def linked_regions(calib: np.ndarray, threshold: float, link: int, max_regions: int) -> np.ndarray:
    """Region ids [B, H, W] (int64) of F's probabilities calib [B, K, H, W]: the uncertain
    mask (top class probability below ``threshold``) grown by ``link`` pixels, so uncertain
    parts at most 2 * ``link`` pixels apart (an object and its detached halo) are one region
    and each region carries a ``link``-pixel margin of certain pixels with it
    (:func:`carcli.models.noise.region_ids`)."""
    uncertain = np.asarray(calib, dtype=np.float32).max(1) < threshold
    return region_ids(uncertain, max_regions, link)


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
    steps = np.arange(m)[:, None]
    for i in range(b):
        offsets = np.append(region_offsets(seed, int(rows[i]), m), 0)  # id m: no region
        shift = offsets[ids[i].reshape(-1)]  # [H*W]
        source = (steps + shift[None, :]) % m  # [M, H*W]: which of G's samples each pixel takes
        flat = samples[i].reshape(m, -1)
        out[i] = np.take_along_axis(flat, source, axis=0).reshape(samples[i].shape)
    return out


@dataclass(frozen=True)
class IndependentRegions:
    """The recombination's settings (sample.region_threshold, sample.region_link)."""

    threshold: float = 0.9
    link: int = 1  # the recipe's default (sample.region_link)

    def __call__(
        self, samples: np.ndarray, calib: np.ndarray, rows: np.ndarray, seed: int
    ) -> np.ndarray:
        return independent_regions(samples, calib, rows, seed, self.threshold, self.link)


__all__ = ["IndependentRegions", "independent_regions", "linked_regions", "region_offsets"]
