"""Build fresh F, G and D from a recipe and a dataset (saving and loading them:
`carcli.runtime.networks`).

Input channels and class counts always come from the dataset file, so a recipe works on any
schema-valid dataset with only data.dir changed.
"""

from __future__ import annotations

from typing import Any

import torch

from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.models.registry import build_calibrator, build_discriminator, build_refiner
from carcli.recipe.schema import Recipe


def _hparams(section: Any, *names: str) -> dict[str, Any]:
    return {n: getattr(section, n) for n in names if getattr(section, n, None) is not None}


def _registry_call(fn: Any, *args: Any, **kwargs: Any) -> torch.nn.Module:
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise CarsegError(str(exc)) from None


def new_calibrator(recipe: Recipe, info: DatasetInfo) -> torch.nn.Module:
    c = recipe.calibrator
    out = info.num_classes if info.task == "segmentation" else info.label_shape[0]
    hp = _hparams(c, "width", "depth") if c.arch != "mlp" else {}
    if c.arch != "mlp":
        hp["dropout"] = c.dropout
    return _registry_call(build_calibrator, c.arch, info.calibrator_in_channels, out, **hp)


def new_refiner(recipe: Recipe, info: DatasetInfo) -> torch.nn.Module:
    r = recipe.refiner
    out = info.num_classes if info.task == "segmentation" else info.label_shape[0]
    hp: dict[str, Any] = {}
    if r.arch != "mlp":
        hp = _hparams(r, "width", "depth")
        hp["dropout"] = r.dropout
        hp["residual_logits"] = r.residual_logits
        hp["noise"] = r.noise
        if r.noise_grid:
            hp["noise_grid"] = r.noise_grid
        if r.noise_regions:
            hp["noise_regions"] = r.noise_regions
            hp["region_dim"] = r.region_dim
            hp["region_threshold"] = r.region_threshold
            if r.region_levels:
                hp["region_levels"] = r.region_levels
    return _registry_call(build_refiner, r.arch, info.in_channels, out, r.noise_dim, **hp)


def new_discriminator(recipe: Recipe, info: DatasetInfo) -> torch.nn.Module:
    d = recipe.discriminator
    out = info.num_classes if info.task == "segmentation" else info.label_shape[0]
    hp = _hparams(d, "width") if d.arch != "mlp" else {}
    return _registry_call(build_discriminator, d.arch, info.in_channels, out, **hp)


def new_set_discriminator(recipe: Recipe, info: DatasetInfo) -> torch.nn.Module:
    """D of discriminator.set_size packed label maps (k * K channels beside the image)."""
    d = recipe.discriminator
    hp = _hparams(d, "width")
    k = d.set_size * info.num_classes
    return _registry_call(build_discriminator, d.arch, info.in_channels, k, **hp)
