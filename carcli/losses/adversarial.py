"""Adversarial losses on raw discriminator logits: L_adv for G, L_D and the R1 penalty for D.

With D(.) = sigmoid(l), -log D = softplus(-l) and -log(1 - D) = softplus(l), which is how
the formulas of docs/method.md are evaluated here (stable for any logit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor


def adversarial_loss(fake_logits: Tensor) -> Tensor:
    """L_adv = -E log D(x, G(...)): the non-saturating generator loss, softplus(-l).mean()."""
    return nnf.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D without R1: -E log D(x, y) - E log(1 - D(x, G)) = softplus(-real) + softplus(fake).

    Each term is a mean over its own batch, so the real and fake halves weigh the same even
    when D sees M fakes per real label.
    """
    return nnf.softplus(-real_logits.float()).mean() + nnf.softplus(fake_logits.float()).mean()


def r1_penalty(real_logits: Tensor, real_input: Tensor | Sequence[Tensor]) -> Tensor:
    """R1 / 2 = (1/2) E ||grad_input D||^2 on real data (zero-centred gradient penalty).

    ``real_input`` is the tensor (or tensors, e.g. the image and the one-hot label) that
    produced ``real_logits`` [N] and had ``requires_grad`` set; the squared gradient norms of
    all of them are summed per row, then averaged over the N rows. The graph is kept
    (``create_graph=True``) so the penalty trains D; the caller multiplies by gamma (recipe
    weight, paper: 10).

    We penalise the gradient of D's logit (Mescheder et al., 2018); the authors' code
    penalises the gradient of the sigmoid output, which vanishes as D saturates.
    """
    inputs = [real_input] if isinstance(real_input, Tensor) else list(real_input)
    grads = torch.autograd.grad(real_logits.sum(), inputs, create_graph=True)
    sq = sum(g.float().pow(2).reshape(g.shape[0], -1).sum(dim=1) for g in grads)
    return 0.5 * sq.mean()


@torch.no_grad()
def discriminator_accuracy(real_logits: Tensor, fake_logits: Tensor) -> float:
    """Fraction of correct calls (real > 0, fake < 0), the real and fake halves weighted
    equally; the official code skips D's update when this reaches 0.85."""
    real = (real_logits > 0).float().mean()
    fake = (fake_logits < 0).float().mean()
    return float(0.5 * (real + fake))
