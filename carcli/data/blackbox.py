"""Import a folder of per-image black-box predictions (`data.blackbox_dir`) into `blackbox`.

A prediction is either a single-channel PNG of class ids (uint8; 255 = ignore) or a `.npy`
array of class probabilities [K_b, H, W] (float; read with numpy's `allow_pickle=False`). It is
matched to its image by file stem, searched anywhere below the folder: for a Cityscapes image
`aachen_000000_000019_leftImg8bit.png` the stem `aachen_000000_000019_leftImg8bit` or the
frame id `aachen_000000_000019`; for the other sources the case id listed in
`<split>.cases.csv` (e.g. `train_000012` for the synthetic set). Every image of every split
needs one, all of one kind (all PNG or all `.npy`, one K_b). Class-id PNGs may have the
prepared size or the raw image's size (then resized with nearest neighbour, as labels are);
probabilities must have the prepared size.

PNG files are read with Pillow, which matplotlib already depends on (no extra dependency).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from carcli.errors import CarsegError

SUFFIXES = (".png", ".npy")


class BlackboxFolder:
    """An index of a prediction folder by file stem; `load` returns one image's prediction."""

    def __init__(self, root: str | Path, num_classes: int, ignore_index: int = 255) -> None:
        self.root = Path(root)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        if not self.root.is_dir():
            raise CarsegError(
                f"data.blackbox_dir {self.root} is not a folder",
                hint="point data.blackbox_dir at a folder of per-image predictions, or unset it",
            )
        self.index: dict[str, Path] = {}
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() not in SUFFIXES or not path.is_file():
                continue
            other = self.index.get(path.stem)
            if other is not None:
                raise CarsegError(
                    f"{path}: black-box prediction {path.stem!r} also exists as {other}",
                    hint="keep one prediction per image stem in data.blackbox_dir",
                )
            self.index[path.stem] = path
        if not self.index:
            raise CarsegError(
                f"data.blackbox_dir {self.root} holds no .png or .npy predictions",
                hint="see data/README.md, 'Black-box predictions'",
            )
        self.kind: str | None = None  # "ids" or "probs", fixed by the first file read
        self.channels = 0

    def find(self, stems: Sequence[str], image: str) -> Path:
        for stem in stems:
            if stem in self.index:
                return self.index[stem]
        raise CarsegError(
            f"{self.root / stems[0]}.png (or .npy): no black-box prediction for {image}",
            hint="every image of every split needs a prediction named by its stem",
        )

    def load(
        self,
        stems: Sequence[str],
        image: str,
        size: tuple[int, int],
        raw_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """uint8 [H, W] class ids or float16 [K_b, H, W] probabilities at `size` (H, W)."""
        path = self.find(stems, image)
        if path.suffix.lower() == ".npy":
            arr = _load_npy(path)
            kind = "probs"
            if arr.ndim != 3 or arr.shape[1:] != tuple(size):
                raise CarsegError(
                    f"{path}: black-box probabilities have shape {arr.shape}, expected "
                    f"[K_b, {size[0]}, {size[1]}]"
                )
            if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise CarsegError(f"{path}: black-box probabilities must be finite floats")
            out = arr.astype(np.float16)
        else:
            out = _load_ids(path, size, raw_size)
            kind = "ids"
            bad = (out >= self.num_classes) & (out != self.ignore_index)
            if bad.any():
                raise CarsegError(
                    f"{path}: class id {int(out[bad].max())} is not below {self.num_classes} "
                    f"(nor the ignore index {self.ignore_index})"
                )
        channels = out.shape[0] if kind == "probs" else 0
        if self.kind is None:
            self.kind, self.channels = kind, channels
        elif (kind, channels) != (self.kind, self.channels):
            raise CarsegError(
                f"{path}: a {kind} prediction"
                + (f" with {channels} channels" if channels else "")
                + f", but earlier ones were {self.kind}"
                + (f" with {self.channels} channels" if self.channels else ""),
                hint="use one kind of prediction for all images",
            )
        return out


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CarsegError(f"{path}: not a readable .npy array ({exc})") from None


def _load_ids(path: Path, size: tuple[int, int], raw_size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise CarsegError(
                    f"{path}: black-box PNG has mode {im.mode}, expected one channel of class ids"
                )
            hw = (im.height, im.width)
            if hw != tuple(size):
                if raw_size is None or hw != tuple(raw_size):
                    want = f"{size[0]}x{size[1]}" + (
                        f" or {raw_size[0]}x{raw_size[1]}" if raw_size else ""
                    )
                    raise CarsegError(
                        f"{path}: black-box prediction is {hw[0]}x{hw[1]}, expected {want}"
                    )
                im = im.resize((size[1], size[0]), Image.Resampling.NEAREST)
            arr = np.asarray(im)
    except OSError as exc:
        raise CarsegError(f"{path}: not a readable PNG ({exc})") from None
    if arr.max(initial=0) > 255:
        raise CarsegError(f"{path}: class id {int(arr.max())} does not fit uint8")
    return arr.astype(np.uint8)
