"""Load a trained model from a bundle folder or from a recipe's run, checking everything.

A bundle is read through JSON (``model.json``) and safetensors only, so loading never runs
code; every weights file must match the sha256 that ``model.json`` records, and a bundle of
another schema version is refused (:mod:`carcli.bundle.model_json`). A recipe is resolved to
its run's checkpoints (the F that G was trained with), and the same description is built
from their metadata (:mod:`carcli.bundle.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from carcli.artefacts.run import sha256_file
from carcli.bundle.coupling import bundle_coupling, coupled_regions, recipe_coupling
from carcli.bundle.describe import bundle_info, recipe_description
from carcli.bundle.model_json import (
    FILES,
    MODEL_JSON,
    check_independent_regions,
    check_speed,
    independent_regions_of,
    inference_speed,
    verify_bundle,
)
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError


@dataclass
class LoadedModel:
    """F and G in eval mode, with what `predict` needs to know about them (`meta`, the
    content of model.json for a bundle, or the same built from a run's checkpoints)."""

    F: torch.nn.Module
    G: torch.nn.Module
    meta: dict[str, Any]
    source: Path
    files: dict[str, Path]
    speed: dict[str, Any] = field(default_factory=dict)
    """The recipe's `speed` options `predict` runs F and G with (those of the recipe for a
    recipe, model.json's ``speed`` for a bundle, then the caller's overrides)."""
    coupling: Any = None
    """The learned recombination (carcli.sampling.regions.CoupledRegions) where the model
    samples with sample.region_coupling=learned, else None."""

    @property
    def info(self) -> DatasetInfo:
        return bundle_info(self.meta, self.source)


def is_bundle(path: Path) -> bool:
    return path.is_dir()


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    speed: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> LoadedModel:
    """A bundle folder or a recipe file (with `key=value` ``overrides``) -> LoadedModel on
    `device`; ``speed`` overrides the model's speed options (`LoadedModel.speed`)."""
    from carcli.runtime.networks import load_network

    path = Path(path)
    if is_bundle(path):
        if overrides:
            raise CarsegError(
                f"{path}: a bundle takes no recipe overrides ({', '.join(overrides)})",
                hint="its recipe is fixed at export; pass the run's recipe instead of the bundle",
            )
        meta = verify_bundle(path)
        model_speed = check_speed(dict(meta.get("speed") or {}), str(path / MODEL_JSON))
        meta["independent_regions"] = check_independent_regions(
            meta.get("independent_regions"), str(path / MODEL_JSON)
        )
        files = {role: path / name for role, name in FILES.items()}
        coupling_files = bundle_coupling(meta, path)
        make = "carseg export RECIPE"
        makes = {"calibrator": make, "refiner": make}
        where = path
    else:
        from carcli.recipe.load import load_recipe

        if not path.is_file():
            raise CarsegError(
                f"{path}: neither a bundle folder nor a recipe file",
                hint="pass a folder made by `carseg export` or a recipe YAML",
            )
        recipe = load_recipe(path, overrides or [])
        meta, files = recipe_description(recipe)
        model_speed = inference_speed(recipe)
        meta["independent_regions"] = independent_regions_of(recipe)
        coupling_files = None
        if recipe.sample.region_coupling == "learned":
            meta["region_coupling"], coupling_files = recipe_coupling(
                recipe, files["refiner"].parent
            )
        for role, f in files.items():  # recorded in prediction.json, as a bundle's are
            if f.is_file():
                meta[role]["sha256"] = sha256_file(f)
        makes = {  # the command line puts in the recipe and its overrides
            "calibrator": "carseg train-calibrator RECIPE",
            "refiner": "carseg train-refiner RECIPE",
        }
        where = path
    if meta.get("task") != "segmentation":
        raise CarsegError(
            f"{path}: a {meta.get('task')} model; predict takes segmentation models only"
        )
    info = bundle_info(meta, where)
    nets = {
        role: load_network(files[role], role, role, info, makes[role]).to(device).eval()
        for role in FILES
    }
    model_speed.update(check_speed(dict(speed or {}), "speed"))
    coupling = coupled_regions(coupling_files, info, makes["refiner"])
    return LoadedModel(
        nets["calibrator"], nets["refiner"], meta, where, files, model_speed, coupling
    )
