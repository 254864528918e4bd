"""The energy score of G's M samples against the annotations: a strictly proper scoring rule
for the whole map's joint distribution (Gneiting & Raftery 2007), unlike any sum of per-pixel
terms.

    ES = sum_a w_a 1/M sum_m ||s_m - y_a|| - 1/(2 M (M - 1)) sum_{m != m'} ||s_m - s_m'||

with s_m each sample's per-pixel class probabilities and y_a the one-hot annotations (weights
``label_weight``, or 1/A), the norm Euclidean over the scored pixels and classes, divided by
sqrt(number of scored pixels) so that its scale does not grow with the image. Its expectation
is minimal when G's distribution of whole maps is the labels'. Known to be weak at detecting
wrong dependence between distant parts of a map (Pinson & Tastu 2013).
"""

from __future__ import annotations

from torch import Tensor

from carcli.losses.joint import _normalised, _onehot, straight_through

_EPS = 1e-8  # inside the square root: a finite gradient where two maps are equal


def energy_score(
    sample_logits: Tensor,
    modes: Tensor,
    weights: Tensor,
    valid: Tensor,
    temperature: float = 0.0,
) -> Tensor:
    """The batch mean of the energy score. ``sample_logits`` [B, M, K, H, W], ``modes``
    [B, A, H, W] with ``weights`` [B, A] (zero: padding), ``valid`` [B, H, W]."""
    b, m, k = sample_logits.shape[:3]
    if m < 2:
        raise ValueError("energy_score: needs M >= 2 samples")
    v = valid.reshape(b, 1, 1, -1).float()
    s = straight_through(sample_logits, temperature).reshape(b, m, k, -1) * v
    y = _onehot(modes, k).permute(0, 1, 4, 2, 3).reshape(b, modes.shape[1], k, -1) * v
    scale = v.sum((1, 2, 3)).clamp_min(1.0).sqrt()  # [B]
    s, y = s.reshape(b, m, -1), y.reshape(b, modes.shape[1], -1)
    to_labels = ((s[:, :, None] - y[:, None]).pow(2).sum(-1) + _EPS).sqrt()  # [B, M, A]
    fit = (to_labels.mean(1) * _normalised(weights)).sum(1)
    spread = ((s[:, :, None] - s[:, None]).pow(2).sum(-1) + _EPS).sqrt()  # [B, M, M]
    spread = (spread.sum((1, 2)) - spread.diagonal(dim1=1, dim2=2).sum(1)) / (2 * m * (m - 1))
    return ((fit - spread) / scale).mean()
