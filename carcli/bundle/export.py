"""`export`: copy a run's F and G into a model bundle folder with model.json and a card.

The bundle is assembled in a temporary folder beside the target and renamed into place, so
an interrupted export leaves no half bundle; an existing bundle is replaced only with
``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from carcli._version import __version__
from carcli.artefacts.run import RunLayout, sha256_file
from carcli.bundle.card import model_card
from carcli.bundle.coupling import COUPLING_FILE, CRITIC_FILE, region_coupling_of
from carcli.bundle.describe import recipe_description, weights_of
from carcli.bundle.model_json import (
    FILES,
    MODEL_JSON,
    SCHEMA,
    independent_regions_of,
    inference_speed,
)
from carcli.data.dataset import SPLITS, split_path
from carcli.data.preprocess import check_spec, read_attr
from carcli.errors import CarsegError
from carcli.recipe.load import recipe_to_dict
from carcli.recipe.schema import Recipe
from carcli.ui import Reporter

EXPORT_SPLIT = "test"
"""The split whose metrics the model card shows."""
METRIC_KEYS = ("split", "n_images", "num_samples", "ged", "hm_iou", "ece", "convention")


def _split_sizes(data_dir: Path) -> dict[str, int]:
    import h5py

    sizes = {}
    for split in SPLITS:
        p = split_path(data_dir, split)
        try:
            with h5py.File(p, "r") as h5:
                sizes[split] = int(h5["image"].shape[0])
        except (OSError, KeyError):
            continue
    return sizes


def _commands(layout: RunLayout) -> list[str]:
    """The command lines of the stages that made the weights (from their manifests)."""
    out = []
    for stage in ("calibrator", "refiner"):
        try:
            m = json.loads((layout.root / stage / "manifest.json").read_text())
            argv = [str(a) for a in m.get("argv") or []]
            if argv and Path(argv[0]).name in ("carseg", "__main__.py"):
                argv = ["carseg", *argv[1:]]  # the console script or `python -m carcli`
            if argv:
                out.append(f"{m.get('stage', stage)}: {' '.join(argv)}")
        except (OSError, ValueError):
            continue
    return out


def _metrics(layout: RunLayout) -> dict[str, Any] | None:
    try:
        return json.loads((layout.eval_dir(EXPORT_SPLIT) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _manifest_recipe(path: Path) -> dict[str, Any] | None:
    try:
        trained = json.loads(path.read_text(encoding="utf-8"))["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return trained if isinstance(trained, dict) else None


def _trained_recipe(layout: RunLayout, recipe: Recipe) -> tuple[dict[str, Any], str]:
    """The resolved recipe G was trained with (refiner/manifest.json, written when its
    training ended), its `calibrator` section as F was trained (calibrator/manifest.json), and
    where it came from; the recipe at export time only when those manifests are missing."""
    g_manifest, f_manifest = layout.refiner / "manifest.json", layout.calibrator / "manifest.json"
    trained = _manifest_recipe(g_manifest)
    if trained is None:
        return recipe_to_dict(recipe), f"the recipe at export time ({g_manifest} is missing)"
    source = f"as G was trained (from {g_manifest}"
    f_recipe = _manifest_recipe(f_manifest)
    if f_recipe is not None and f_recipe.get("calibrator") != trained.get("calibrator"):
        trained = {**trained, "calibrator": f_recipe.get("calibrator")}
        source += f"; the calibrator section as F was trained, from {f_manifest}"
    return trained, source + ")"


def _evaluation(
    recipe: Recipe, layout: RunLayout, files: dict[str, Path]
) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
    """The test metrics of exactly these weights (None and why not when there are none, or
    when the latest ones are of other weights), and the provenance records to keep."""
    from carcli.artefacts.provenance import record
    from carcli.runtime.staleness import Run, metrics_staleness

    records = {role: record(path) for role, path in files.items()}
    metrics_path = layout.eval_dir(EXPORT_SPLIT) / "metrics.json"
    metrics = _metrics(layout)
    if metrics is None:
        return None, "`carseg evaluate RECIPE` had not been run when this was exported", records
    why, _ = metrics_staleness(Run(recipe), EXPORT_SPLIT)
    if why:
        return None, f"the latest metrics are stale: {why}", records
    records["metrics"] = record(metrics_path)
    return metrics, None, records


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing bundle without ``overwrite``, and any other non-empty folder."""
    if (target / MODEL_JSON).exists() and not overwrite:
        raise CarsegError(f"{target}: a bundle is already there", hint="pass --overwrite")
    if target.exists() and not (target / MODEL_JSON).exists() and any(target.iterdir()):
        raise CarsegError(f"{target}: exists and is not a bundle", hint="choose another --out")


def _check_preprocess(
    meta: dict[str, Any], preprocess: list[dict[str, Any]] | None, train: Path
) -> None:
    """Record a given ``--preprocess`` spec in ``meta``; else check the train split's own."""
    if preprocess is not None:
        try:
            meta["preprocess"] = check_spec(preprocess, "--preprocess")
        except ValueError as exc:
            raise CarsegError(str(exc)) from None
    if preprocess is None and train.is_file():  # a malformed spec is an error, not "none"
        import h5py

        try:
            with h5py.File(train, "r") as h5:
                read_attr(h5)
        except ValueError as exc:
            raise CarsegError(
                str(exc), hint="fix the split files' 'preprocess' attribute, or pass --preprocess"
            ) from None
        except OSError:
            pass


def _model_json(recipe: Recipe, meta: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """model.json before the weights' file names and digests are filled in."""
    sizes = _split_sizes(data_dir)
    return {
        "schema": SCHEMA,
        "carseg_version": __version__,
        "name": recipe.name,
        **meta,
        "speed": inference_speed(recipe),  # what `predict` runs with (as `sample`)
        "independent_regions": independent_regions_of(recipe),  # predict recombines as sample
        "region_coupling": region_coupling_of(recipe),
        "trained_on": {
            "dataset": str(data_dir),
            "source": recipe.data.source,
            "sizes": sizes,
            "recipe": recipe.name,
        },
    }


def _write_bundle(
    target: Path,
    model: dict[str, Any],
    files: dict[str, Path],
    layout: RunLayout,
    card_parts: tuple[dict[str, Any] | None, str | None, str, str],
) -> None:
    """Assemble the bundle in a temporary folder beside ``target``, then rename it there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for role, name in FILES.items():
            shutil.copyfile(files[role], tmp / name)
            model[role]["file"] = name
            model[role]["sha256"] = sha256_file(tmp / name)
        if model.get("region_coupling") is not None:
            shutil.copyfile(layout.refiner / COUPLING_FILE, tmp / COUPLING_FILE)
            model["region_coupling"]["sha256"] = sha256_file(tmp / COUPLING_FILE)
            if "critic_file" in model["region_coupling"]:  # D weights the pool (pool_critic)
                shutil.copyfile(layout.refiner / CRITIC_FILE, tmp / CRITIC_FILE)
                model["region_coupling"]["critic_sha256"] = sha256_file(tmp / CRITIC_FILE)
        (tmp / MODEL_JSON).write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
        metrics, note, recipe_yaml, recipe_from = card_parts
        card = model_card(model, metrics, _commands(layout), recipe_yaml, note, recipe_from)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_export(
    recipe: Recipe,
    out: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    preprocess: list[dict[str, Any]] | None = None,
    allow_stale: bool = False,
) -> Path:
    """Write the bundle of a recipe's run (default ``run_dir/bundle``); returns its folder.
    Weights or test metrics whose recorded inputs have changed since are refused unless
    ``allow_stale`` (then the card says "not evaluated" where the metrics are stale)."""
    from carcli.artefacts.provenance import git_commit
    from carcli.runtime.staleness import require_fresh

    rep = Reporter(quiet)
    layout = RunLayout(Path(recipe.run_dir))
    target = Path(out) if out is not None else layout.root / "bundle"
    _check_target(target, overwrite)
    meta, files = recipe_description(recipe)
    if meta["task"] != "segmentation":
        raise CarsegError(f"{recipe.run_dir}: a {meta['task']} model; bundles hold segmenters")
    makes = {
        "calibrator": "carseg train-calibrator RECIPE",
        "refiner": "carseg train-refiner RECIPE",
    }
    for role, path in files.items():
        weights_of(path, f"{role} checkpoint", makes[role])  # readable through and through
    data_dir = Path(recipe.data.dir)
    _check_preprocess(meta, preprocess, split_path(data_dir, "train"))
    stale = require_fresh(recipe, "export", allow_stale)
    model = _model_json(recipe, meta, data_dir)
    metrics, note, records = _evaluation(recipe, layout, files)
    head = layout.refiner / COUPLING_FILE
    if model.get("region_coupling") is not None and head.is_file():
        from carcli.artefacts.provenance import record

        records["coupling"] = record(head)
    model["test_metrics"] = (
        {k: metrics[k] for k in METRIC_KEYS if k in metrics} if metrics is not None else None
    )
    model["provenance"] = {
        "inputs": records,
        "git_commit": git_commit(),
        "allow_stale": allow_stale,
        "stale_inputs": stale,
        "not_evaluated": note,
    }
    trained, recipe_from = _trained_recipe(layout, recipe)
    model["trained_on"]["resolved_recipe"] = trained
    model["trained_on"]["resolved_recipe_from"] = recipe_from
    recipe_yaml = yaml.safe_dump(trained, sort_keys=False, default_flow_style=None)
    _write_bundle(target, model, files, layout, (metrics, note, recipe_yaml, recipe_from))
    rep.line(f"bundle written: {target}")
    return target
