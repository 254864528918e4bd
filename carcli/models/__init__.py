"""models: the calibration network F, the refinement network G and the discriminator D.

Build them by registry name (``build_calibrator``, ``build_refiner``,
``build_discriminator``); rebuild one from its saved ``model.config`` with ``build_model``.
"""

from carcli.models.calibrator import ConvNetCalibrator, MLPCalibrator, SegNetCalibrator
from carcli.models.discriminator import DCGANDiscriminator, MLPDiscriminator, PixelDiscriminator
from carcli.models.refiner import UNetRefiner
from carcli.models.refiner_mlp import MLPRefiner
from carcli.models.registry import (
    CALIBRATORS,
    DISCRIMINATORS,
    REFINERS,
    build_calibrator,
    build_discriminator,
    build_model,
    build_refiner,
    hparam_defaults,
)

__all__ = [
    "CALIBRATORS",
    "DISCRIMINATORS",
    "REFINERS",
    "ConvNetCalibrator",
    "DCGANDiscriminator",
    "MLPCalibrator",
    "MLPDiscriminator",
    "MLPRefiner",
    "PixelDiscriminator",
    "SegNetCalibrator",
    "UNetRefiner",
    "build_calibrator",
    "build_discriminator",
    "build_model",
    "build_refiner",
    "hparam_defaults",
]
