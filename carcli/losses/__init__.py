"""losses: named as in docs/method.md (L_ce, L_adv, L_D with R1, L_cal and their 1D forms)."""

from carcli.losses.adversarial import (
    adversarial_loss,
    discriminator_accuracy,
    discriminator_loss,
    r1_penalty,
)
from carcli.losses.calibration import (
    CALIBRATION_TERMS,
    calibration_loss,
    calibration_term,
    sample_mean,
)
from carcli.losses.calibrator import calibrator_loss
from carcli.losses.joint import joint_calibration_loss, joint_term
from carcli.losses.latent import latent_kl
from carcli.losses.regression import gaussian_nll, regression_calibration_loss
from carcli.losses.segmentation import (
    cross_entropy,
    expected_cross_entropy,
    sample_cross_entropy,
    sample_entropy,
)

__all__ = [
    "CALIBRATION_TERMS",
    "calibration_term",
    "calibrator_loss",
    "adversarial_loss",
    "calibration_loss",
    "cross_entropy",
    "discriminator_accuracy",
    "discriminator_loss",
    "expected_cross_entropy",
    "gaussian_nll",
    "joint_calibration_loss",
    "joint_term",
    "latent_kl",
    "r1_penalty",
    "regression_calibration_loss",
    "sample_mean",
    "sample_cross_entropy",
    "sample_entropy",
]
