"""The prior term of the latent-code (cVAE-GAN) refiner: KL(q(z | x) || N(0, I))."""

from __future__ import annotations

from torch import Tensor


def latent_kl(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per image, summed over the code's dimensions and
    averaged over the batch: 0.5 * sum_d (mu_d^2 + sigma_d^2 - 1 - 2 log sigma_d).

    ``mu`` and ``log_sigma`` are [B, d] (the refiner's posterior head). Scaled by
    ``refiner.kl_beta`` it is the beta-VAE term of the paper's Eq. (20); like L_adv it is a
    per-image quantity.
    """
    if mu.shape != log_sigma.shape or mu.dim() != 2:
        raise ValueError(
            f"latent_kl: expected mu and log_sigma of shape [B, d], got {tuple(mu.shape)} "
            f"and {tuple(log_sigma.shape)}"
        )
    mu, log_sigma = mu.float(), log_sigma.float()
    kl = 0.5 * (mu.square() + (2 * log_sigma).exp() - 1.0 - 2 * log_sigma).sum(dim=1)
    return kl.mean()
