"""Preprocessing specs: how `prepare` turned a raw image file into the network's `image`.

A spec is a JSON list of steps, each ``{"step": NAME, **params}`` with NAME from ``STEPS``.
`prepare` records it in every split file's attribute ``preprocess`` (optional: a dataset
without it has preprocessing "none"), training copies it into the checkpoints' metadata and
`export` into the bundle, and `predict` applies exactly these steps to image files, so a
raw file gives the network the input `prepare` made from it, bit for bit.

The state starts as the Pillow image read from the file; a step that needs numbers turns it
into a numpy array (channels last: [H, W] or [H, W, C]); the result is float32 [C, H, W].

Steps
    ``grey``: Pillow ``convert("L")`` of RGB, RGBA, LA and palette images (others are kept).
    ``rgb``: Pillow ``convert("RGB")`` of any image that is not RGB.
    ``grey_to_rgb``: a one-channel image repeated into three channels.
    ``center_crop(size)``: the central size x size window (offset ``(H - size) // 2``); an
    image smaller than ``size`` along an axis keeps that axis whole.
    ``resize(size | scale, resample)``: Pillow resize to ``size`` = [H, W], or to
    ``round(W * scale) x round(H * scale)``; ``resample`` ``bilinear`` or ``nearest``.
    ``to_float(divide_by)``: float32 values divided by ``divide_by`` (e.g. 255).
    ``standardize_per_image``: ``(x - mean) / std`` over the whole image in float64, then
    float32; a constant image becomes zeros.
    ``normalize(mean, std)``: per channel ``(x - mean) / std`` with float32 constants.
    ``cast(dtype)``: round to ``float16`` (how some datasets store `image`), back to float32.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ATTR = "preprocess"
"""Dataset (and checkpoint metadata) key holding the spec as JSON."""

Spec = list[dict[str, Any]]


def _pil(state: Any) -> Any:
    from PIL import Image

    return state if isinstance(state, Image.Image) else Image.fromarray(np.asarray(state))


def _arr(state: Any) -> np.ndarray:
    return state if isinstance(state, np.ndarray) else np.asarray(state)


def _grey(state: Any) -> Any:
    im = _pil(state)
    return im.convert("L") if im.mode in ("RGB", "RGBA", "LA", "P") else im


def _rgb(state: Any) -> Any:
    im = _pil(state)
    return im if im.mode == "RGB" else im.convert("RGB")


def _grey_to_rgb(state: Any) -> np.ndarray:
    x = _arr(state)
    if x.ndim == 2:
        return np.repeat(x[..., None], 3, axis=2)
    if x.ndim == 3 and x.shape[2] == 1:
        return np.repeat(x, 3, axis=2)
    return x


def _center_crop(state: Any, size: int) -> np.ndarray:
    x = _arr(state)
    h, w = x.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[top : top + ch, left : left + cw]


def _resize(
    state: Any, size: list[int] | None = None, scale: float = 1.0, resample: str = "bilinear"
) -> Any:
    from PIL import Image

    im = _pil(state)
    method = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    if size is not None:
        h, w = int(size[0]), int(size[1])
    else:
        w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    return im.resize((w, h), method[resample])


def _to_float(state: Any, divide_by: float = 1.0) -> np.ndarray:
    return np.asarray(state, dtype=np.float32) / float(divide_by)


def _standardize(state: Any) -> np.ndarray:
    x = _arr(state).astype(np.float64)
    std = x.std()
    x = (x - x.mean()) / std if std > 1e-8 else np.zeros_like(x)
    return x.astype(np.float32)


def _normalize(state: Any, mean: list[float], std: list[float]) -> np.ndarray:
    x = _arr(state)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)


def _cast(state: Any, dtype: str) -> np.ndarray:
    return _arr(state).astype(dtype)


# name -> (function, {param: (type, required)})
STEPS: dict[str, tuple[Callable[..., Any], dict[str, tuple[type | tuple[type, ...], bool]]]] = {
    "grey": (_grey, {}),
    "rgb": (_rgb, {}),
    "grey_to_rgb": (_grey_to_rgb, {}),
    "center_crop": (_center_crop, {"size": (int, True)}),
    "resize": (
        _resize,
        {"size": (list, False), "scale": ((int, float), False), "resample": (str, False)},
    ),
    "to_float": (_to_float, {"divide_by": ((int, float), False)}),
    "standardize_per_image": (_standardize, {}),
    "normalize": (_normalize, {"mean": (list, True), "std": (list, True)}),
    "cast": (_cast, {"dtype": (str, True)}),
}
"""The registry of preprocessing steps (module docstring)."""


def check_spec(spec: Any, where: str) -> Spec:
    """The spec as a list of step dicts; ValueError naming `where` and the bad step."""
    if not isinstance(spec, list):
        raise ValueError(f"{where}: preprocess must be a list of steps, got {spec!r}")
    out = []
    for i, step in enumerate(spec):
        if not isinstance(step, dict) or step.get("step") not in STEPS:
            name = step.get("step") if isinstance(step, dict) else step
            raise ValueError(
                f"{where}: preprocess step {i} is {name!r}; valid: {', '.join(sorted(STEPS))}"
            )
        params = STEPS[step["step"]][1]
        for key, value in step.items():
            if key == "step":
                continue
            if key not in params or not isinstance(value, params[key][0]):
                raise ValueError(f"{where}: preprocess step {i} ({step['step']}): bad {key!r}")
        missing = [k for k, (_, req) in params.items() if req and k not in step]
        if missing:
            raise ValueError(f"{where}: preprocess step {i} ({step['step']}) lacks {missing}")
        if step["step"] == "resize":
            if step.get("resample", "bilinear") not in ("bilinear", "nearest"):
                raise ValueError(f"{where}: preprocess step {i}: resample is bilinear or nearest")
            if ("size" in step) == ("scale" in step):
                raise ValueError(f"{where}: preprocess step {i}: resize takes size or scale")
        if step["step"] == "cast" and step["dtype"] not in ("float16", "float32"):
            raise ValueError(f"{where}: preprocess step {i}: cast dtype is float16 or float32")
        out.append(dict(step))
    return out


def apply_spec(spec: Spec, image: Any) -> np.ndarray:
    """Run the steps on a Pillow image (or a channels-last array): float32 [C, H, W]."""
    state = image
    for step in spec:
        fn = STEPS[step["step"]][0]
        state = fn(state, **{k: v for k, v in step.items() if k != "step"})
    x = _arr(state)
    x = x[None] if x.ndim == 2 else np.moveaxis(x, 2, 0)
    return np.ascontiguousarray(x, dtype=np.float32)


def to_json(spec: Spec) -> str:
    return json.dumps(spec)


def read_attr(h5: Any) -> Spec | None:
    """The spec recorded in an open HDF5 file's attributes, or None (preprocessing "none")."""
    raw = h5.attrs.get(ATTR)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    return check_spec(json.loads(raw), str(getattr(h5, "filename", "dataset")))


def dataset_spec(path: str | Path) -> Spec | None:
    """The spec of a dataset split file, or None when absent or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return read_attr(h5)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------- the built-in sources' specs


def lidc_spec(crop: int) -> Spec:
    """LIDC (three formats): grey, centre crop, per-image standardisation (lidc.normalise)."""
    return [
        {"step": "grey"},
        {"step": "center_crop", "size": crop},
        {"step": "standardize_per_image"},
    ]


def cityscapes_spec(size: tuple[int, int], mean: np.ndarray, std: np.ndarray) -> Spec:
    """Cityscapes: RGB, resized (bilinear) to `size` (a quarter of 1024x2048), 0..1,
    per-channel normalise, float16."""
    return [
        {"step": "rgb"},
        {"step": "resize", "size": [int(size[0]), int(size[1])], "resample": "bilinear"},
        {"step": "to_float", "divide_by": 255.0},
        {"step": "normalize", "mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        {"step": "cast", "dtype": "float16"},
    ]


def synthetic_spec(mean: np.ndarray, std: np.ndarray) -> Spec:
    """The synthetic set: an 8-bit rendering (0..255) of the raw 0..1 image, normalised per
    channel. The generator's raw images are floats, so a PNG of one is 8-bit quantised; the
    normalise step itself is exactly prepare's."""
    return [
        {"step": "to_float", "divide_by": 255.0},
        {"step": "normalize", "mean": [float(m) for m in mean], "std": [float(s) for s in std]},
    ]


def checkpoint_extras(info: Any) -> dict[str, Any]:
    """What a checkpoint records beside its weights so that a model is usable without its
    dataset: the preprocessing spec and the class and black-box facts of `info`."""
    return {
        ATTR: dataset_spec(info.path),
        "classes": {
            "class_names": list(info.class_names),
            "eval_classes": list(info.eval_classes),
            "ignore_index": int(info.ignore_index),
            "blackbox_channels": int(info.blackbox_channels),
            "blackbox_is_ids": bool(info.blackbox_is_ids),
        },
    }
