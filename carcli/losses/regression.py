"""Unit-variance Gaussian forms of L_ce and L_cal for the 1D regression task."""

from __future__ import annotations

from torch import Tensor


def gaussian_nll(pred: Tensor, target: Tensor) -> Tensor:
    """F's loss: (1/2)(y - F(x))^2, mean over all entries (the Gaussian NLL up to a constant)."""
    if pred.shape != target.shape:
        raise ValueError(
            f"gaussian_nll: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    return 0.5 * (target.float() - pred.float()).pow(2).mean()


def regression_calibration_loss(samples: Tensor, calib_mean: Tensor) -> Tensor:
    """L_cal for regression: (1/2)(mean_m G_m - F(x))^2, mean over batch and dims.

    ``samples`` [B, M, D] are G's samples, ``calib_mean`` [B, D] is F(x) (detached here).
    """
    if samples.dim() != 3 or samples.shape[:1] + samples.shape[2:] != calib_mean.shape:
        raise ValueError(
            f"regression_calibration_loss: samples {tuple(samples.shape)} do not match "
            f"F's mean {tuple(calib_mean.shape)} (expected [B, M, D] and [B, D])"
        )
    return regression_mean_calibration_loss(samples.float().mean(dim=1), calib_mean)


def regression_mean_calibration_loss(g_bar: Tensor, calib_mean: Tensor) -> Tensor:
    """L_cal for regression from G_bar [B, D], the samples' mean: (1/2)(G_bar - F(x))^2."""
    return 0.5 * (g_bar - calib_mean.detach().float()).pow(2).mean()
