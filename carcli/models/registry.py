"""Registries of the three network roles and their builders.

Every built model keeps ``model.config``: a JSON-serialisable dict with ``arch``, the
constructor arguments and every hyper-parameter resolved (defaults included), such that
``build_model(kind, model.config)`` rebuilds the same architecture (e.g. from checkpoint
metadata).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from carcli.models.calibrator import (
    ConvNetCalibrator,
    MLPCalibrator,
    SegNetCalibrator,
    UNetCalibrator,
)
from carcli.models.coupling import RegionCoupling
from carcli.models.discriminator import DCGANDiscriminator, MLPDiscriminator, PixelDiscriminator
from carcli.models.refiner import UNetRefiner
from carcli.models.refiner_car import CARRefiner
from carcli.models.refiner_mlp import MLPRefiner

CALIBRATORS: dict[str, type[nn.Module]] = {
    "convnet": ConvNetCalibrator,
    "mlp": MLPCalibrator,
    "segnet": SegNetCalibrator,
    "unet": UNetCalibrator,
}
"""Calibration networks F by registry name."""

REFINERS: dict[str, type[nn.Module]] = {
    "car": CARRefiner,
    "mlp": MLPRefiner,
    "unet": UNetRefiner,
}
"""Refinement networks G by registry name."""

DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "dcgan": DCGANDiscriminator,
    "mlp": MLPDiscriminator,
    "pixel": PixelDiscriminator,
}
"""Discriminators D by registry name."""

COUPLINGS: dict[str, type[nn.Module]] = {"conv": RegionCoupling}
"""Region coupling heads (carcli.models.coupling) by registry name."""

_REGISTRIES = {
    "calibrator": CALIBRATORS,
    "refiner": REFINERS,
    "discriminator": DISCRIMINATORS,
    "coupling": COUPLINGS,
}
_POSITIONAL = ("in_channels", "num_classes", "noise_dim")


def hparam_defaults(kind: str, arch: str) -> dict[str, Any]:
    """The hyper-parameters of ``arch`` (a ``kind`` = calibrator/refiner/discriminator) and
    their defaults, e.g. ``hparam_defaults("calibrator", "segnet")["width"] == 64``."""
    cls = _lookup(kind, arch)
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in params.items()
        if name != "self" and name not in _POSITIONAL and p.default is not inspect.Parameter.empty
    }


def _lookup(kind: str, arch: str) -> type[nn.Module]:
    registry = _REGISTRIES.get(kind)
    if registry is None:
        raise ValueError(f"unknown model kind {kind!r}; valid: {', '.join(sorted(_REGISTRIES))}")
    if arch not in registry:
        raise ValueError(f"unknown {kind} {arch!r}; valid: {', '.join(sorted(registry))}")
    return registry[arch]


def _check_hparams(kind: str, arch: str, hparams: dict[str, Any]) -> None:
    defaults = hparam_defaults(kind, arch)
    valid = ", ".join(sorted(defaults)) or "none"
    for name, value in hparams.items():
        if name not in defaults:
            raise ValueError(
                f"unknown hyper-parameter {name!r} for {kind} {arch!r}; valid: {valid}"
            )
        default = defaults[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"hyper-parameter {name!r} of {kind} {arch!r} must be "
                f"{type(default).__name__}, got {value!r}"
            )


def _build(kind: str, arch: str, hparams: dict[str, Any], **positional: int) -> nn.Module:
    cls = _lookup(kind, arch)
    _check_hparams(kind, arch, hparams)
    for name, value in positional.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} of {kind} {arch!r} must be int, got {value!r}")
    cast = {
        k: float(v) if isinstance(hparam_defaults(kind, arch)[k], float) else v
        for k, v in hparams.items()
    }
    return cls(**positional, **cast)


def build_calibrator(arch: str, in_channels: int, num_classes: int, **hparams: Any) -> nn.Module:
    """Build calibration network ``arch`` (``convnet``, ``mlp``, ``segnet``).

    ``in_channels``: input channels (1D task: D_in); ``num_classes``: K (1D task: D_out).
    Unknown names or hyper-parameters raise ``ValueError`` listing the valid ones.
    """
    return _build("calibrator", arch, hparams, in_channels=in_channels, num_classes=num_classes)


def build_refiner(
    arch: str, in_channels: int, num_classes: int, noise_dim: int, **hparams: Any
) -> nn.Module:
    """Build refinement network ``arch`` (``car``, ``mlp``, ``unet``) with noise dimension
    ``noise_dim``.

    ``in_channels`` counts the image channels only (F's K probabilities are added inside).
    """
    return _build(
        "refiner",
        arch,
        hparams,
        in_channels=in_channels,
        num_classes=num_classes,
        noise_dim=noise_dim,
    )


def build_discriminator(arch: str, in_channels: int, num_classes: int, **hparams: Any) -> nn.Module:
    """Build discriminator ``arch`` (``dcgan``, ``mlp``, ``pixel``).

    ``in_channels`` counts the image channels; ``num_classes`` the label-map channels.
    """
    return _build("discriminator", arch, hparams, in_channels=in_channels, num_classes=num_classes)


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``config`` (``model.config``, e.g. read from a checkpoint).

    ``kind`` is ``calibrator``, ``refiner`` or ``discriminator``.
    """
    config = dict(config)
    if "arch" not in config:
        raise ValueError(f"{kind} config has no 'arch' key: {config!r}")
    arch = config.pop("arch")
    _lookup(kind, arch)
    required = ("in_channels", "num_classes") + (("noise_dim",) if kind == "refiner" else ())
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{kind} config lacks {', '.join(missing)}: {config!r}")
    positional = {k: config.pop(k) for k in required}
    return _build(kind, arch, config, **positional)
