"""Load a trained model from a bundle folder or from a recipe's run, checking everything.

A bundle is read through JSON (``model.json``) and safetensors only, so loading never runs
code; every weights file must match the sha256 that ``model.json`` records, and a bundle of
another schema version is refused. A recipe is resolved to its run's checkpoints (the F that
G was trained with), and the same description is built from their metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from carcli.artefacts.checkpoint import decode_meta, read_safetensors
from carcli.artefacts.run import RunLayout, sha256_file
from carcli.bundle.coupling import bundle_coupling, coupled_regions, recipe_coupling
from carcli.data.dataset import split_path
from carcli.data.preprocess import ATTR, check_spec, dataset_spec
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.models.noise import eps_size

SCHEMA = "carseg.bundle/1"
MODEL_JSON = "model.json"
FILES = {"calibrator": "calibrator.safetensors", "refiner": "refiner.safetensors"}
PADDING = "reflect"
"""How inputs are padded to a multiple of the networks' stride (cropped back afterwards)."""

# A fixed palette (class id -> RGB): the first 20 of matplotlib's tab20 order, then a spiral.
_BASE = [
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141),
]  # fmt: skip


def palette(k: int) -> list[list[int]]:
    """K distinct RGB colours, class 0 black."""
    out = [list(c) for c in _BASE[:k]]
    for i in range(len(out), k):
        out.append([(i * 67) % 256, (i * 151 + 80) % 256, (i * 29 + 160) % 256])
    return out


def _dataset_palette(train: Path | None, k: int) -> list[list[int]] | None:
    """The training split's class colours (attribute class_colors), where it defines them."""
    if train is None or not train.is_file():
        return None
    import h5py

    from carcli.data.schema import class_colors

    try:
        with h5py.File(train, "r") as h5:
            colours = class_colors(h5)
    except OSError:
        return None
    return colours if colours is not None and len(colours) == k else None


def stride_of(config: dict[str, Any]) -> int:
    """The factor H and W must be divisible by: 2**depth for the encoder-decoders."""
    encoder_decoder = config.get("arch") in ("unet", "car", "segnet")
    return 2 ** int(config.get("depth", 0)) if encoder_decoder else 1


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


def bundle_info(meta: dict[str, Any], where: Path) -> DatasetInfo:
    """A DatasetInfo standing for the training data, so library checks (load_network) apply."""
    bb = meta.get("blackbox") or {}
    return DatasetInfo(
        path=where,
        task=meta["task"],
        n=0,
        num_annotations=1,
        image_shape=(int(meta["in_channels"]),),
        label_shape=tuple(meta.get("label_shape") or ()),
        num_classes=int(meta["num_classes"]),
        ignore_index=int(meta.get("ignore_index", 255)),
        class_names=list(meta["class_names"]),
        eval_classes=[int(c) for c in meta["eval_classes"]],
        has_weights=False,
        blackbox_channels=int(bb.get("channels", 0)),
        blackbox_is_ids=bb.get("form") == "class_ids",
    )


def describe(
    f_meta: dict[str, Any], g_meta: dict[str, Any], data_dir: Path | None
) -> dict[str, Any]:
    """model.json's content (less hashes and provenance) from the two checkpoints' metadata;
    class facts and preprocessing fall back to the training split file when the checkpoints
    predate them."""
    ds = dict(f_meta.get("dataset") or {})
    k = int(ds.get("num_classes") or 0)
    classes = dict(f_meta.get("classes") or {})
    spec = f_meta.get(ATTR)
    train = split_path(data_dir, "train") if data_dir is not None else None
    if not classes and train is not None and train.is_file():
        from carcli.data.dataset import DatasetFile

        with DatasetFile(train) as d:
            i = d.info
            classes = {
                "class_names": i.class_names,
                "eval_classes": i.eval_classes,
                "ignore_index": i.ignore_index,
                "blackbox_channels": i.blackbox_channels,
                "blackbox_is_ids": i.blackbox_is_ids,
            }
    if spec is None and ATTR not in f_meta and train is not None and train.is_file():
        spec = dataset_spec(train)
    c_in, c_f = int(ds.get("in_channels", 0)), int(ds.get("calibrator_in_channels", 0))
    bb_ch = int(classes.get("blackbox_channels", c_f - c_in))
    blackbox = None
    if bb_ch:
        ids = bool(classes.get("blackbox_is_ids"))
        blackbox = {"form": "class_ids" if ids else "probabilities", "channels": bb_ch}
    f_cfg, g_cfg = dict(f_meta.get("config") or {}), dict(g_meta.get("config") or {})
    return {
        "task": ds.get("task", "segmentation"),
        "in_channels": c_in,
        "calibrator_in_channels": c_f,
        "num_classes": k,
        "label_shape": ds.get("label_shape"),
        "class_names": classes.get("class_names") or [str(i) for i in range(k)],
        "palette": _dataset_palette(train, k) or palette(k),
        "eval_classes": classes.get("eval_classes") or list(range(1, k)),
        "ignore_index": int(classes.get("ignore_index", 255)),
        "noise_dim": eps_size(g_cfg),  # what one sample draws (grid and region codes too)
        "stride": max(stride_of(f_cfg), stride_of(g_cfg)),
        "padding": PADDING,
        "calibrator": {"arch": f_cfg.get("arch"), "config": f_cfg, "step": f_meta.get("step")},
        "refiner": {"arch": g_cfg.get("arch"), "config": g_cfg, "step": g_meta.get("step")},
        "blackbox": blackbox,
        "preprocess": spec,
    }


def run_files(recipe: Any) -> dict[str, Path]:
    """The checkpoints of a recipe's run: the F that G was trained with, and G."""
    from carcli.runtime.networks import refiner_calibrator

    layout = RunLayout(Path(recipe.run_dir))
    g_path = layout.refiner / "model.safetensors"
    f_path = refiner_calibrator(g_path, layout.calibrator / "model.safetensors")
    return {"calibrator": f_path, "refiner": g_path}


def _meta(path: Path, what: str, make_cmd: str) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CarsegError(f"no {what} at {path}", hint=f"run `{make_cmd}` to make it")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return decode_meta(dict(fh.metadata() or {}))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CarsegError(
            f"{path}: not a readable safetensors file ({exc})",
            hint=f"it is truncated or corrupt; make it again with `{make_cmd}`",
        ) from None


def recipe_description(recipe: Any) -> tuple[dict[str, Any], dict[str, Path]]:
    files = run_files(recipe)
    f_meta = _meta(files["calibrator"], "calibrator checkpoint", "carseg train-calibrator RECIPE")
    g_meta = _meta(files["refiner"], "refiner checkpoint", "carseg train-refiner RECIPE")
    return describe(f_meta, g_meta, Path(recipe.data.dir)), files


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


def is_bundle(path: Path) -> bool:
    return path.is_dir()


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


def weights_of(path: Path, what: str, make_cmd: str) -> dict[str, Any]:
    """Decoded metadata of a checkpoint (read fully, so a corrupt file is caught)."""
    _, raw = read_safetensors(path, what, make_cmd)
    return decode_meta(raw)
