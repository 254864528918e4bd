"""Write a few images of a prepared split as PNG files, as a user would have them, for the
demo's `carseg predict` (the end of `make demo`).

    python scripts/demo_images.py data/toy/test.h5 runs/toy/demo_images --count 4

The split's recorded preprocessing must be `to_float` then `normalize` (the synthetic
source's): the network input is mapped back to 0..255 and rounded to 8 bits, so `predict`
on these files sees each image up to that rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
from PIL import Image  # Pillow comes with matplotlib

from carcli.data.preprocess import read_attr


def write_pngs(split: Path, out: Path, count: int) -> list[Path]:
    with h5py.File(split, "r") as h5:
        spec = read_attr(h5)
        images = h5["image"][:count].astype(np.float32)
    if spec is None or [s["step"] for s in spec] != ["to_float", "normalize"]:
        raise SystemExit(f"{split}: preprocessing {spec} is not to_float + normalize")
    scale = float(spec[0].get("divide_by", 1.0))
    mean = np.asarray(spec[1]["mean"], np.float32)
    std = np.asarray(spec[1]["std"], np.float32)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, x in enumerate(images):
        raw = (x.transpose(1, 2, 0) * std + mean) * scale
        pix = np.clip(np.round(raw), 0, 255).astype(np.uint8)
        path = out / f"{split.stem}_{i:03d}.png"
        Image.fromarray(pix.squeeze(-1) if pix.shape[-1] == 1 else pix).save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=4)
    args = ap.parse_args(argv)
    paths = write_pngs(args.split, args.out, args.count)
    print(f"{len(paths)} PNG files written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
