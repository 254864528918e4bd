"""The 1D bimodal regression data of the paper's section 5.1, with its exact mixture.

x ~ U(0, 1); with b ~ Bernoulli(pi) choosing the upper branch:
  x in [0, 0.4):   y = +0.5 (upper) or -0.5 (lower)
  x in [0.4, 0.8): y = -1.25 x + 1 (upper) or 1.25 x - 1 (lower)
  x in [0.8, 1]:   y = 0
plus N(0, sigma) noise. For every row the split file also stores the true conditional
density p(y | x) as a Gaussian mixture (datasets `mixture_mean` [N, K, D], `mixture_weight`
[N, K], `mixture_std` [N, K]) so that exact log-likelihoods can be computed, and the attribute
`regions` (JSON list of [lo, hi) intervals of x) used to report figures per x-region.
Component 0 is the upper mode (weight pi).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

REGIONS = [[0.0, 0.4], [0.4, 0.8], [0.8, 1.0]]
MIXTURE_NAMES = ("mixture_mean", "mixture_weight", "mixture_std")
# The authors' code adds this to the density before the log (so one far-off sample scores
# log(1e-11) ~ -25.3 instead of -inf); we keep it, so log-likelihoods compare with theirs.
DENSITY_FLOOR = 1e-11


@dataclass
class RegressionData:
    x: np.ndarray  # [N, 1] float32
    y: np.ndarray  # [N, 1, 1] float32 (one observed annotation per x)
    mixture_mean: np.ndarray  # [N, 2, 1] float32
    mixture_weight: np.ndarray  # [N, 2] float32
    mixture_std: np.ndarray  # [N, 2] float32


def bimodal_mixture(x: np.ndarray, pi: float, sigma: float) -> tuple[np.ndarray, ...]:
    """The true p(y | x) for x [N]: means [N, 2, 1], weights [N, 2], stds [N, 2]."""
    x = np.asarray(x, dtype=np.float64)
    upper = np.where(x < 0.4, 0.5, np.where(x < 0.8, -1.25 * x + 1.0, 0.0))
    lower = np.where(x < 0.4, -0.5, np.where(x < 0.8, 1.25 * x - 1.0, 0.0))
    mean = np.stack([upper, lower], axis=1)[:, :, None]
    single = x >= 0.8  # one mode at 0: all weight on component 0
    weight = np.stack([np.where(single, 1.0, pi), np.where(single, 0.0, 1.0 - pi)], axis=1)
    std = np.full(weight.shape, sigma)
    return mean.astype(np.float32), weight.astype(np.float32), std.astype(np.float32)


def generate_bimodal(n: int, pi: float, sigma: float, seed: int) -> RegressionData:
    """n draws (x, y) with their true mixtures; deterministic in `seed`."""
    if not 0.0 <= pi <= 1.0:
        raise ValueError(f"pi must be in [0, 1], got {pi}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=n)
    mean, weight, std = bimodal_mixture(x, pi, sigma)
    lower = rng.random(n) >= weight[:, 0]
    y = mean[np.arange(n), lower.astype(np.int64), 0] + sigma * rng.standard_normal(n)
    return RegressionData(
        x[:, None].astype(np.float32),
        y[:, None, None].astype(np.float32),
        mean,
        weight,
        std,
    )


def mixture_log_likelihood(
    y: np.ndarray, mean: np.ndarray, weight: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """log(p(y | x) + DENSITY_FLOOR) for y [N, M, D] under per-row isotropic Gaussian
    mixtures (mean [N, K, D], weight [N, K], std [N, K]); returns [N, M]."""
    y = np.asarray(y, dtype=np.float64)[:, :, None, :]  # [N, M, 1, D]
    mu = np.asarray(mean, dtype=np.float64)[:, None]  # [N, 1, K, D]
    s = np.asarray(std, dtype=np.float64)[:, None, :]  # [N, 1, K]
    d = y.shape[-1]
    sq = ((y - mu) ** 2).sum(-1)  # [N, M, K]
    dens = np.exp(-0.5 * sq / s**2) / (np.sqrt(2 * np.pi) * s) ** d
    p = (np.asarray(weight, dtype=np.float64)[:, None, :] * dens).sum(-1)
    return np.log(p + DENSITY_FLOOR)


def mixture_mean_y(mean: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """E[y | x] per row: [N, D]."""
    w = np.asarray(weight, dtype=np.float64)
    w = w / w.sum(1, keepdims=True)
    return (w[:, :, None] * np.asarray(mean, dtype=np.float64)).sum(1)


def mixture_prob_positive(mean: np.ndarray, weight: np.ndarray, std: np.ndarray) -> np.ndarray:
    """P(y_0 > 0 | x) per row under the mixture (first output dimension): [N]."""
    from scipy.special import ndtr

    w = np.asarray(weight, dtype=np.float64)
    w = w / w.sum(1, keepdims=True)
    z = np.asarray(mean, dtype=np.float64)[:, :, 0] / np.asarray(std, dtype=np.float64)
    return (w * ndtr(z)).sum(1)


def check_mixture(h5: Any, n: int, d_out: int) -> list[str]:
    """Problems of the optional true mixture of a regression split (open HDF5 file `h5`)."""
    names = MIXTURE_NAMES
    present = [m for m in names if m in h5]
    if not present:
        return []
    if len(present) != len(names):
        missing = sorted(set(names) - set(present))
        return [f"mixture datasets are incomplete: {', '.join(missing)} missing"]
    mean, weight, std = (h5[m] for m in names)
    k = weight.shape[1] if weight.ndim == 2 else -1
    if mean.shape != (n, k, d_out) or weight.shape != (n, k) or std.shape != (n, k):
        return [
            f"mixture shapes {mean.shape}, {weight.shape}, {std.shape} do not match "
            f"[N, K, {d_out}], [N, K], [N, K] with N = {n}"
        ]
    w, sd, mu = weight[...].astype(np.float64), std[...], mean[...]
    if not (np.isfinite(w).all() and np.isfinite(sd).all() and np.isfinite(mu).all()):
        return ["mixture datasets hold NaN or infinite values"]
    if (w < 0).any() or (np.abs(w.sum(1) - 1) > 1e-5).any():
        return ["mixture_weight rows must be non-negative and sum to 1"]
    if (sd <= 0).any():
        return ["mixture_std must be positive"]
    return []
