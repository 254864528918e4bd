"""A model bundle's model.json: its schema and file names, how a folder is verified against
it (every weights file matches the sha256 it records; another schema version is refused),
and the settings it records of a recipe (speed options, region recombination), checked when
read back. Read through JSON and safetensors only, so checking a bundle never runs code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carcli.artefacts.run import sha256_file
from carcli.data.preprocess import check_spec
from carcli.errors import CarsegError

SCHEMA = "carseg.bundle/1"
MODEL_JSON = "model.json"
FILES = {"calibrator": "calibrator.safetensors", "refiner": "refiner.safetensors"}


def read_model_json(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_JSON
    if not path.is_file():
        raise CarsegError(
            f"{path}: missing; {folder} is not a model bundle",
            hint="make one with `carseg export RECIPE`, or pass a recipe",
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CarsegError(
            f"{path}: not readable JSON ({exc})", hint="export the bundle again"
        ) from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        got = meta.get("schema") if isinstance(meta, dict) else None
        raise CarsegError(
            f"{path}: schema is {got!r}, expected {SCHEMA!r}",
            hint="export the model again with this version of carseg",
        )
    return meta


def verify_bundle(folder: Path) -> dict[str, Any]:
    """model.json of a bundle whose files are all present and match their sha256."""
    meta = read_model_json(folder)
    for role, name in FILES.items():
        path = folder / name
        want = (meta.get(role) or {}).get("sha256")
        if not path.is_file():
            raise CarsegError(f"{path}: missing from the bundle", hint="export the bundle again")
        have = sha256_file(path)
        if have != want:
            raise CarsegError(
                f"{path}: sha256 {have[:12]}... does not match model.json's {str(want)[:12]}...",
                hint="the file was changed or damaged; export the bundle again",
            )
    try:
        if meta.get("preprocess") is not None:
            meta["preprocess"] = check_spec(meta["preprocess"], str(folder / MODEL_JSON))
    except ValueError as exc:
        raise CarsegError(str(exc), hint="export the bundle again") from None
    return meta


def check_independent_regions(value: Any, where: str) -> dict[str, Any] | None:
    """model.json's ``independent_regions``: null (absent in older bundles) or its settings."""
    if value is None:
        return None
    ok = isinstance(value, dict) and set(value) == {"threshold", "link"}
    if ok:
        t, link = value["threshold"], value["link"]
        ok = isinstance(t, (int, float)) and 0 < t <= 1 and isinstance(link, int) and link >= 0
    if not ok:
        raise CarsegError(
            f"{where}: independent_regions must be null or "
            f'{{"threshold": t in (0, 1], "link": int >= 0}}, got {value!r}',
            hint="re-export the bundle with `carseg export RECIPE`",
        )
    return {"threshold": float(value["threshold"]), "link": int(value["link"])}


INFERENCE_SPEED = ("amp", "channels_last", "compile", "fold_bn", "cpu_bf16", "sample_chunk")
"""The recipe's `speed` keys that apply to sampling and prediction (model.json ``speed``)."""


def inference_speed(recipe: Any) -> dict[str, Any]:
    """A recipe's speed options for sampling and prediction, as model.json records them."""
    return {k: getattr(recipe.speed, k) for k in INFERENCE_SPEED if hasattr(recipe.speed, k)}


def check_speed(speed: dict[str, Any], where: str) -> dict[str, Any]:
    """Speed options by name: only INFERENCE_SPEED keys, of the recipe's types."""
    from carcli.recipe.schema import Recipe

    default = inference_speed(Recipe())
    out = {}
    for key, value in speed.items():
        if key not in default:
            raise CarsegError(
                f"{where}: unknown speed option {key!r}",
                hint=f"one of {', '.join(sorted(default))}",
            )
        want = type(default[key])
        if want is bool and not isinstance(value, bool):
            raise CarsegError(f"{where}: speed option {key} must be true or false, got {value!r}")
        if want is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise CarsegError(f"{where}: speed option {key} must be an integer >= 0, got {value!r}")
        if want is str and value not in ("off", "bf16"):
            raise CarsegError(f"{where}: speed option {key} must be off or bf16, got {value!r}")
        out[key] = value
    return out


def independent_regions_of(recipe: Any) -> dict[str, Any] | None:
    """A recipe's sample.independent_regions settings as model.json records them, or None
    (off): `predict` recombines its samples as `sample` does."""
    s = recipe.sample
    if not s.independent_regions:
        return None
    return {"threshold": float(s.region_threshold), "link": int(s.region_link)}
