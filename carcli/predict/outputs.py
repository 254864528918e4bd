"""The files `predict` writes (docs/using-a-model.md, "carseg predict").

Per input, a folder ``<out>/<name>/`` with ``samples/NNN.png`` (palette PNGs, pixel = class
id), ``probabilities.npy`` (float16 [K, H, W]), ``uncertainty.npy`` (F's entropy, nats,
float32 [H, W]) and ``uncertainty.png`` (viridis from 0 to ln K nats, the scale in
prediction.json), ``proposals.json``, ``overview.png`` and ``prediction.json`` (written
last). The folder is assembled under a temporary name and renamed: it appears complete or
not at all. For the whole call, ``<out>/predictions.h5`` (`carseg.predictions/1`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from carcli.artefacts.run import tmp_path_for
from carcli.predict.engine import Result
from carcli.predict.inputs import Item

SCHEMA = "carseg.predictions/1"
PREDICTION_JSON = "prediction.json"
PAD_ID = 255  # samples beyond an image's size in predictions.h5


@functools.cache
def _viridis() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colour(values: np.ndarray, vmax: float) -> np.ndarray:
    idx = np.clip(values / max(vmax, 1e-12) * 255, 0, 255).astype(np.uint8)
    return _viridis()[idx]


def palette_png(path: Path, ids: np.ndarray, flat_palette: list[int]) -> None:
    from PIL import Image

    im = Image.fromarray(ids, mode="P")
    im.putpalette(flat_palette)
    im.save(path, optimize=False, compress_level=1)


def _display(image: np.ndarray) -> np.ndarray:
    x = image[:3] if image.shape[0] >= 3 else image[:1].repeat(3, 0)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return (x.transpose(1, 2, 0) * 255).astype(np.uint8)


def overview(
    path: Path,
    item: Item,
    res: Result,
    vmax: float,
    pal: np.ndarray,
    top: int = 3,
    names: list[str] | None = None,
) -> None:
    """One PNG: the image, the uncertainty map and the most frequent proposals, above a
    legend of the classes (a swatch of each class's colour and its name)."""
    from PIL import Image, ImageDraw

    h, w = item.size
    z = max(1, 128 // max(h, w))
    tiles = [
        ("image", _display(item.image)),
        (f"entropy 0-{vmax:.2f} nats", colour(res.entropy, vmax)),
    ]
    for k, p in enumerate(res.proposals[:top]):
        tiles.append((f"#{k + 1} {p['frequency']:.0%}", pal[res.samples[p["sample"]]]))
    gap, cap = 4, 14
    tw, th = w * z, h * z
    width = len(tiles) * (tw + gap) + gap
    labels = list(names or [])[: len(pal)] + [str(c) for c in range(len(names or []), len(pal))]
    legend = _legend_layout(labels, width, gap)
    rows = 1 + max((y for _, y in legend), default=-1)
    height = th + cap + 2 * gap + rows * LEGEND_ROW
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, rgb) in enumerate(tiles):
        x0 = gap + i * (tw + gap)
        tile = Image.fromarray(rgb).resize((tw, th), Image.Resampling.NEAREST)
        canvas.paste(tile, (x0, cap + gap))
        draw.text((x0, 1), title, fill="black")
    top_y = th + cap + 2 * gap
    for c, (x, row) in enumerate(legend):
        y = top_y + row * LEGEND_ROW
        draw.rectangle(
            (x, y + 2, x + 9, y + 11), fill=tuple(int(v) for v in pal[c]), outline="grey"
        )
        draw.text((x + 13, y + 1), labels[c], fill="black")
    canvas.save(path, compress_level=1)


LEGEND_ROW = 14  # pixels per legend line
_CHAR_W = 6  # width of a character of Pillow's default bitmap font


def _legend_layout(labels: list[str], width: int, gap: int) -> list[tuple[int, int]]:
    """(x, row) of each class's legend entry, wrapped to the canvas width."""
    out, x, row = [], gap, 0
    for label in labels:
        entry = 13 + _CHAR_W * len(label) + 10
        if x > gap and x + entry > width:
            x, row = gap, row + 1
        out.append((x, row))
        x += entry
    return out


def expected_record(item: Item, num_samples: int, seed: int, model: dict[str, Any]) -> dict:
    """prediction.json (what a rerun compares to decide whether a folder can be kept)."""
    from carcli._version import __version__

    k = int(model["num_classes"])
    return {
        "schema": "carseg.prediction/1",
        "name": item.name,
        "input": item.path,
        "row": item.row,
        "sha256": item.sha256,
        "size": list(item.size),
        "num_samples": num_samples,
        "seed": seed,
        "noise_key": item.key,
        "independent_regions": model.get("independent_regions"),
        "region_coupling": model.get("region_coupling"),
        "bundle": {
            "calibrator_sha256": model["calibrator"].get("sha256"),
            "refiner_sha256": model["refiner"].get("sha256"),
        },
        "uncertainty_scale_nats": [0.0, math.log(k)],
        "carseg_version": __version__,
        **_speed_record(model),
    }


def _speed_record(model: dict[str, Any]) -> dict[str, Any]:
    """The speed options that applied, where any did (they may change samples' last bits or,
    with bf16, some pixels): a rerun with other options then makes the folder again. Absent
    with every option off, so records from before the options existed still match."""
    on = {k: v for k, v in (model.get("speed_applied") or {}).items() if v not in (False, "off")}
    return {"speed": on} if on else {}


def is_complete(folder: Path, record: dict) -> bool:
    try:
        return json.loads((folder / PREDICTION_JSON).read_text()) == record
    except (OSError, ValueError):
        return False


def write_folder(out: Path, item: Item, res: Result, record: dict, model: dict[str, Any]) -> Path:
    """Write one input's folder atomically (temporary folder, then rename)."""
    final = out / item.name
    tmp = out / f".{item.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "samples").mkdir(parents=True)
    try:
        pal = np.array(model["palette"], np.uint8)
        flat = [int(v) for rgb in model["palette"] for v in rgb]
        for i, s in enumerate(res.samples):
            palette_png(tmp / "samples" / f"{i:03d}.png", s, flat)
        np.save(tmp / "probabilities.npy", res.probabilities.astype(np.float16))
        np.save(tmp / "uncertainty.npy", res.entropy.astype(np.float32))
        vmax = record["uncertainty_scale_nats"][1]
        from PIL import Image

        Image.fromarray(colour(res.entropy, vmax)).save(tmp / "uncertainty.png", compress_level=1)
        (tmp / "proposals.json").write_text(
            json.dumps({"same_if_mean_iou_at_least": 0.95, "proposals": res.proposals}, indent=1)
        )
        overview(tmp / "overview.png", item, res, vmax, pal, names=model.get("class_names"))
        (tmp / PREDICTION_JSON).write_text(json.dumps(record, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_folder(folder: Path, num_samples: int) -> Result:
    """A complete folder's arrays back (for predictions.h5 on a rerun)."""
    from PIL import Image

    samples = np.stack(
        [np.asarray(Image.open(folder / "samples" / f"{i:03d}.png")) for i in range(num_samples)]
    )
    calib = np.load(folder / "probabilities.npy", allow_pickle=False)
    ent = np.load(folder / "uncertainty.npy", allow_pickle=False)
    props = json.loads((folder / "proposals.json").read_text())["proposals"]
    return Result(samples, calib, ent, props)


class PredictionsFile:
    """predictions.h5, filled row by row under a temporary name and renamed on close.

    Images of different sizes share one file: arrays are [N_img, ..., H_max, W_max], each
    row's own size is in ``size`` [N_img, 2] (height, width); beyond it samples hold 255 and
    probabilities and entropy 0."""

    def __init__(self, path: Path, items: list[Item], n: int, k: int, attrs: dict) -> None:
        import h5py

        self.path = path
        self.tmp = tmp = tmp_path_for(path)
        hmax = max(it.size[0] for it in items)
        wmax = max(it.size[1] for it in items)
        m = len(items)
        self.h5 = h5py.File(tmp, "w")
        h5 = self.h5
        h5.attrs["schema"] = SCHEMA
        for key, value in attrs.items():
            h5.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        chunk = lambda *s: (1, *s)  # noqa: E731 - one image per chunk
        h5.create_dataset(
            "samples", (m, n, hmax, wmax), np.uint8, fillvalue=PAD_ID, chunks=chunk(n, hmax, wmax)
        )
        h5.create_dataset(
            "probabilities", (m, k, hmax, wmax), np.float16, chunks=chunk(k, hmax, wmax)
        )
        h5.create_dataset("entropy", (m, hmax, wmax), np.float16, chunks=chunk(hmax, wmax))
        h5.create_dataset("size", data=np.array([it.size for it in items], np.int64))
        h5.create_dataset("names", data=[it.name.encode() for it in items])
        h5.create_dataset("inputs", data=[(it.path or "").encode() for it in items])
        h5.create_dataset("rows", data=np.array([-1 if it.row is None else it.row for it in items]))

    def put(self, i: int, res: Result) -> None:
        h, w = res.entropy.shape
        self.h5["samples"][i, :, :h, :w] = res.samples
        self.h5["probabilities"][i, :, :h, :w] = res.probabilities
        self.h5["entropy"][i, :h, :w] = res.entropy.astype(np.float16)

    def close(self, ok: bool) -> None:
        """Publish the file (ok) or remove the temporary one."""
        self.h5.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
