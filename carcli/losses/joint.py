"""The joint calibration loss: L_cal extended from single pixels to pairs of pixels.

L_cal makes the mean of G's samples match F at every pixel, which fixes each pixel's
marginal but leaves the *joint* answers free: one global noise vector may decide two
independent objects together and every marginal is still right. For a pair of pixels (i, j)
the labels give the joint distribution of their classes exactly,

    T_ij[k, l] = sum_a w_a [y_a(i) = k] [y_a(j) = l]      (w: label_weight, or 1/A)

and G's M samples give its estimate

    G_ij[k, l] = 1/M sum_m s_m(i)_k s_m(j)_l              (s: each sample's softmax)

whose marginals are G_bar at i and j. The loss is KL(G_ij || T_ij), the paper's direction of
L_cal, on P random pairs of *ambiguous* pixels per image (pixels whose label distribution is
not one class: elsewhere the pair's joint is the product of the marginals and L_cal already
holds it). Pairs inside one ambiguous region teach coherence (their T is diagonal), pairs in
two independent regions teach independence (their T is the product of the marginals). The
target is smoothed as (1 - eta) T + eta / K^2 with eta = 1e-3 (the authors clamp L_cal's
arguments to [1e-3, 1 - 1e-3] for the same reason: a finite penalty for an answer the labels
never give).
"""

from __future__ import annotations

import torch
from torch import Tensor

from carcli.losses.segmentation import masked_pixel_mean

TARGET_SMOOTHING = 1e-3
AMBIGUOUS_BELOW = 1.0 - 1e-4
"""A pixel is ambiguous when its most likely class has label probability below this."""


def _onehot(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot [..., K] of class ids; ids >= K (the ignore index) give all zeros."""
    return torch.nn.functional.one_hot(labels.long().clamp_max(num_classes), num_classes + 1)[
        ..., :-1
    ].float()


def _normalised(weights: Tensor) -> Tensor:
    """Mode weights [B, A] as probabilities (rows sum to 1; padding rows stay 0)."""
    return weights.float() / weights.float().sum(1, keepdim=True).clamp_min(1e-12)


def mode_label_probs(modes: Tensor, weights: Tensor, num_classes: int) -> Tensor:
    """The label distribution q [B, K, H, W] = sum_a w_a onehot(y_a) of modes [B, A, H, W]."""
    w = _normalised(weights)
    return torch.einsum("ba,bahwk->bkhw", w, _onehot(modes, num_classes))


def joint_term(
    sample_logits: Tensor,
    modes: Tensor,
    weights: Tensor,
    valid: Tensor,
    num_pairs: int,
    generator: torch.Generator | None,
    kind: str = "kl",
    temperature: float = 0.0,
    cross: float = 0.0,
    candidates: Tensor | None = None,
) -> Tensor:
    """The joint calibration loss of a batch: pairs drawn, targets built, loss averaged.
    ``candidates`` [B, H, W] (bool): the pixels pairs are drawn from (None: the ambiguous
    pixels of the labels, :func:`label_ambiguous`)."""
    k = sample_logits.shape[2]
    label_probs = mode_label_probs(modes, weights, k)
    pool = label_ambiguous(label_probs, valid) if candidates is None else candidates & valid.bool()
    i, j, mask = sample_pixel_pairs(pool, num_pairs, generator)
    if cross:
        j = cross_factor_partners(label_probs, modes, weights, valid, i, j, cross, generator)
    target = pair_targets(modes, weights, i, j, k)
    return joint_calibration_loss(sample_logits, i, j, target, mask, kind, temperature)


def label_ambiguous(label_probs: Tensor, valid: Tensor) -> Tensor:
    """[B, H, W] True where a scored pixel's label distribution is not one class."""
    return (label_probs.amax(1) < AMBIGUOUS_BELOW) & valid.bool()


def _ambiguous(label_probs: Tensor, valid: Tensor) -> Tensor:
    """[B, H*W] 1.0 where a scored pixel's label distribution is not one class, else 0.0."""
    return label_ambiguous(label_probs, valid).reshape(label_probs.shape[0], -1).float()


def sample_pixel_pairs(
    pool: Tensor, num_pairs: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``num_pairs`` random pairs of pixels of ``pool`` [B, H, W] (bool: e.g. the labels'
    ambiguous pixels, :func:`label_ambiguous`) per image (flat indices [B, P] each) and a mask
    [B, P] (False for images with fewer than two such pixels). Pixels are drawn uniformly,
    with replacement, from each image's pool."""
    b = pool.shape[0]
    weights = pool.reshape(b, -1).float()
    count = weights.sum(1)
    ok = count >= 2
    weights[~ok] = 1.0  # any pixel: those rows are masked out
    idx = torch.multinomial(weights, 2 * num_pairs, replacement=True, generator=generator)
    mask = ok[:, None].expand(b, num_pairs)
    return idx[:, :num_pairs], idx[:, num_pairs:], mask


CROSS_CANDIDATES = 8
"""Candidates per pair among which :func:`cross_factor_partners` looks for another factor."""


def cross_factor_partners(
    label_probs: Tensor,
    modes: Tensor,
    weights: Tensor,
    valid: Tensor,
    i: Tensor,
    j: Tensor,
    share: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Partners j [B, P] of the pairs' first pixels i [B, P], a ``share`` of them moved to
    another factor: an ambiguous pixel whose labels differ from i's in some annotation (a
    pixel of another region, or of the same region's other side). Uniform pairs land mostly
    inside one large region, whose labels always agree; these pairs carry what the labels say
    about separate regions (coupled: agreeing, independent: the product). ``label_probs``
    [B, K, H, W] as from :func:`mode_label_probs`. Among
    ``CROSS_CANDIDATES`` uniform ambiguous candidates the first such pixel is taken; where
    none differs the uniform partner stays."""
    b, a = modes.shape[:2]
    p = i.shape[1]
    ambiguous = _ambiguous(label_probs, valid)
    ambiguous[ambiguous.sum(1) < 1] = 1.0
    cand = torch.multinomial(ambiguous, p * CROSS_CANDIDATES, replacement=True, generator=generator)
    cand = cand.reshape(b, p, CROSS_CANDIDATES)
    flat = modes.reshape(b, a, -1).long()
    yi = flat.gather(2, i[:, None].expand(b, a, p))  # [B, A, P]
    yc = flat.gather(2, cand.reshape(b, 1, -1).expand(b, a, p * CROSS_CANDIDATES))
    yc = yc.reshape(b, a, p, CROSS_CANDIDATES)
    real = (weights > 0)[:, :, None, None]
    differs = ((yc != yi[..., None]) & real).any(1)  # [B, P, R]
    first = differs.float().argmax(2, keepdim=True)
    found = differs.gather(2, first)[..., 0]
    moved = torch.rand(b, p, generator=generator, device=i.device) < share
    return torch.where(found & moved, cand.gather(2, first)[..., 0], j)


def pair_targets(modes: Tensor, weights: Tensor, i: Tensor, j: Tensor, num_classes: int) -> Tensor:
    """T [B, P, K, K]: the labels' joint class distribution at the pixel pairs (i, j) [B, P]
    from the modes (or annotations) [B, A, H, W] with probabilities ``weights`` [B, A]
    (zero-weight padding rows count nothing). Ignore-index values count as no class."""
    b, a = modes.shape[:2]
    flat = modes.reshape(b, a, -1).long()
    yi = flat.gather(2, i[:, None].expand(b, a, i.shape[1]))  # [B, A, P]
    yj = flat.gather(2, j[:, None].expand(b, a, j.shape[1]))
    w = _normalised(weights)
    return torch.einsum("ba,bapk,bapl->bpkl", w, _onehot(yi, num_classes), _onehot(yj, num_classes))


JOINT_LOSSES = ("kl", "sq")
"""kl: KL(G_ij || T_ij) of the M-sample estimate; sq: an unbiased estimate of the squared
distance ||G_ij - T_ij||^2 (the cross-sample products m != m' estimate ||G_ij||^2), whose
expectation is minimal at G's true joint = T whatever the samples' crispness; the M-sample
KL instead favours soft samples a little (its estimate's spread costs ~ (K^2 - 1) / 2M)."""


def straight_through(sample_logits: Tensor, temperature: float) -> Tensor:
    """Per-sample probabilities [B, M, K, ...]: 0 -> the softmax; T > 0 -> the one-hot argmax
    (the answers the samples give) with the gradient of softmax(logits / T) (straight-through,
    Bengio et al. 2013). Crisp samples' softmax has a vanishing gradient, so once G's samples
    decide, a loss on their softmax can no longer move which answers they give together."""
    if not temperature:
        return sample_logits.float().softmax(2)
    tempered = (sample_logits.float() / temperature).softmax(2)
    hard = torch.zeros_like(tempered).scatter_(2, tempered.argmax(2, keepdim=True), 1.0)
    return hard + tempered - tempered.detach()


def joint_calibration_loss(
    sample_logits: Tensor,
    i: Tensor,
    j: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    kind: str = "kl",
    temperature: float = 0.0,
) -> Tensor:
    """KL(G_ij || T_ij) summed over the K x K classes (``kind="sq"``: the unbiased squared
    distance, see ``JOINT_LOSSES``), mean over the pairs where ``mask`` [B, P] is set (0 if
    none). ``sample_logits`` [B, M, K, H, W]; ``i``, ``j`` [B, P] flat pixel indices;
    ``target`` [B, P, K, K] from :func:`pair_targets`."""
    if kind not in JOINT_LOSSES:
        raise ValueError(f"unknown joint loss {kind!r}; valid: {', '.join(JOINT_LOSSES)}")
    if sample_logits.dim() != 5:
        raise ValueError(
            "joint_calibration_loss: expected sample logits [B, M, K, H, W], got "
            f"{tuple(sample_logits.shape)}"
        )
    b, m, k = sample_logits.shape[:3]
    if target.shape != (b, i.shape[1], k, k) or i.shape != j.shape:
        raise ValueError(
            f"joint_calibration_loss: target {tuple(target.shape)} and pairs {tuple(i.shape)}"
            f" / {tuple(j.shape)} do not match logits {tuple(sample_logits.shape)}"
        )
    s = straight_through(sample_logits, temperature).reshape(b, m, k, -1)
    si = s.gather(3, i[:, None, None].expand(b, m, k, i.shape[1]))  # [B, M, K, P]
    sj = s.gather(3, j[:, None, None].expand(b, m, k, j.shape[1]))
    g = torch.einsum("bmkp,bmlp->bpkl", si, sj) / m
    if kind == "sq":
        if m < 2:
            raise ValueError("joint_calibration_loss: kind 'sq' needs M >= 2 samples")
        # sum_{m != m'} <s_m(i) s_m(j)^T, s_m'(i) s_m'(j)^T> = (sum_m P_m)^2 - sum_m |P_m|^2,
        # with <P_m, P_m'> = <s_m(i), s_m'(i)> <s_m(j), s_m'(j)>
        same = ((si * si).sum(2) * (sj * sj).sum(2)).sum(1)  # [B, P]
        cross = ((g * m) ** 2).sum((2, 3)) - same
        per_pair = cross / (m * (m - 1)) - 2 * (g * target).sum((2, 3)) + (target**2).sum((2, 3))
        return masked_pixel_mean("joint_calibration_loss", per_pair, mask)
    t = (1 - TARGET_SMOOTHING) * target.float() + TARGET_SMOOTHING / (k * k)
    kl = (torch.xlogy(g, g) - g * t.log()).sum((2, 3))  # [B, P]
    return masked_pixel_mean("joint_calibration_loss", kl, mask)
