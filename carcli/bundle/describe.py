"""What a model is, as model.json describes it: built from its two checkpoints' metadata
(``describe``; a recipe's run: ``recipe_description``), with the class colours, the stride
inputs are padded to and the DatasetInfo that stands for the training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carcli.artefacts.checkpoint import decode_meta, read_safetensors
from carcli.artefacts.run import RunLayout
from carcli.data.dataset import split_path
from carcli.data.preprocess import ATTR, dataset_spec
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.models.noise import eps_size

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


def weights_of(path: Path, what: str, make_cmd: str) -> dict[str, Any]:
    """Decoded metadata of a checkpoint (read fully, so a corrupt file is caught)."""
    _, raw = read_safetensors(path, what, make_cmd)
    return decode_meta(raw)
