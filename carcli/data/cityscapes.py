"""The modified Cityscapes of Kohl et al. (2018), as used in the paper.

Reads the official layout below ``data.raw``::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Splits: ``train`` = official train without darmstadt, monchengladbach and ulm (2701 images);
``val`` = those three cities (274); ``test`` = the official val set (500).

Per image: quarter resolution 256x512 (images bilinear, labels nearest neighbour, with Pillow,
which matplotlib already depends on), labelId -> trainId with the official table
(``LABELS``; unlabelled and void classes -> 255, ignored), image ``(x / 255 - mean) / std``
per RGB channel with the Cityscapes training-set statistics (``MEAN``, ``STD``), stored as
float16 (its rounding, < 2e-3, is far below one 8-bit grey step, 0.02 after scaling).

24 classes: the 19 trainIds plus five flipped copies (``FLIPS``): with probability p all pixels
of a class in an image take the copy's id, one Bernoulli draw per class per image
(sidewalk -> sidewalk2 8/17, person -> person2 7/17, car -> car2 6/17,
vegetation -> vegetation2 5/17, road -> road2 4/17), hence 2^5 = 32 modes per image.

* ``val`` / ``test`` store the 32 modes as ``label`` [N, 32, 256, 512] and their probabilities
  (products of the flip probabilities) as ``label_weight``; ``eval_classes`` are the 10
  switchable classes. Mode m flips class ``FLIPS[j]`` when bit ``4 - j`` of m is set (mode 0:
  nothing flipped, mode 31: everything flipped); a mode identical to another (its class absent
  from the image) keeps its own row and weight.
* ``train`` stores the unflipped trainId map (``label`` [N, 1, 256, 512]) and the flips as the
  file attribute ``class_flips`` (JSON ``[[class, flipped class, p], ...]``); training draws
  them afresh per image per step (``carcli.data.batches``), so they are not baked in.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carcli.data.blackbox import BlackboxFolder
from carcli.data.preprocess import ATTR, cityscapes_spec, to_json
from carcli.data.writer import SplitWriter, StagedSplits
from carcli.errors import CarsegError
from carcli.ui import Reporter

# (name, labelId, trainId) for every labelId of the official table (cityscapesscripts
# helpers/labels.py, public and fixed since the dataset's release). Keeping these 34 rows here
# avoids a dependency on cityscapesscripts, which pulls in GUI and plotting packages for one
# table. 255 = not trained on (ignored); 'license plate' (id -1) never occurs in labelIds PNGs.
LABELS: list[tuple[str, int, int]] = [
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
]
IGNORE = 255
TRAIN_NAMES = [name for name, _, t in sorted(LABELS, key=lambda r: r[2]) if t != IGNORE]
FLIPS: list[tuple[int, int, float]] = [
    (1, 19, 8 / 17),  # sidewalk -> sidewalk2
    (11, 20, 7 / 17),  # person -> person2
    (13, 21, 6 / 17),  # car -> car2
    (8, 22, 5 / 17),  # vegetation -> vegetation2
    (0, 23, 4 / 17),  # road -> road2
]
CLASS_NAMES = TRAIN_NAMES + [f"{TRAIN_NAMES[src]}2" for src, _, _ in FLIPS]
# Cityscapes' own colours of the 19 trainIds (cityscapesScripts labels.py); a flipped copy is
# its source class's colour halfway to white.
TRAIN_COLORS = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]  # fmt: skip
CLASS_COLORS = TRAIN_COLORS + [
    [(v + 255 + 1) // 2 for v in TRAIN_COLORS[src]] for src, _, _ in FLIPS
]
NUM_CLASSES = len(CLASS_NAMES)  # 24
EVAL_CLASSES = [0, 1, 8, 11, 13, 19, 20, 21, 22, 23]
VAL_CITIES = ("darmstadt", "monchengladbach", "ulm")
SIZE = (256, 512)  # (H, W), a quarter of 1024x2048
# Per-channel mean and std of the Cityscapes training images on a 0..1 scale (the constants
# published with the dataset's common loaders, e.g. pl_bolts' CityscapesDataModule).
MEAN = np.array([0.28689554, 0.32513303, 0.28389177], dtype=np.float32)
STD = np.array([0.18696375, 0.19017339, 0.18720214], dtype=np.float32)
BLOCK = 16  # images per written block (32 modes of 256x512 = 4 MB each)

_LUT = np.full(256, IGNORE, dtype=np.uint8)
for _, _label_id, _train_id in LABELS:
    _LUT[_label_id] = _train_id
_VALID_IDS = len(LABELS)  # labelIds 0..33

_IMAGE_SUFFIX = "_leftImg8bit"
_LABEL_SUFFIX = "_gtFine_labelIds"
_FRAME = re.compile(r"^(?P<city>.+)_\d+_\d+$")


def to_train_ids(label_ids: np.ndarray, where: str) -> np.ndarray:
    """labelId map -> trainId map (255 = ignore); ids outside the table are an error."""
    if label_ids.size and int(label_ids.max()) >= _VALID_IDS:
        raise CarsegError(
            f"{where}: labelId {int(label_ids.max())} is not in the Cityscapes table (0..33)"
        )
    return _LUT[label_ids]


def mode_weights() -> np.ndarray:
    """float64 [32]: probability of each mode (bit 4 - j of m: class FLIPS[j] flipped)."""
    out = np.empty(2 ** len(FLIPS))
    for m, bits in enumerate(itertools.product((0, 1), repeat=len(FLIPS))):
        out[m] = np.prod([p if b else 1 - p for (_, _, p), b in zip(FLIPS, bits, strict=True)])
    return out


def modes(train_ids: np.ndarray) -> np.ndarray:
    """uint8 [32, H, W]: every combination of the five class flips of one trainId map."""
    out = np.empty((2 ** len(FLIPS), *train_ids.shape), dtype=np.uint8)
    masks = [train_ids == src for src, _, _ in FLIPS]
    for m, bits in enumerate(itertools.product((0, 1), repeat=len(FLIPS))):
        lab = train_ids.copy()
        for (_, dst, _), mask, b in zip(FLIPS, masks, bits, strict=True):
            if b:
                lab[mask] = dst
        out[m] = lab
    return out


# ----------------------------------------------------------------------------- layout


@dataclass
class Frame:
    stem: str  # <city>_<seq>_<frame>_leftImg8bit
    city: str
    image: Path
    label: Path

    @property
    def frame_id(self) -> str:
        return self.stem[: -len(_IMAGE_SUFFIX)]


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise CarsegError(
            f"{path}: missing; expected the official Cityscapes layout "
            "leftImg8bit/{train,val}/<city>/ and gtFine/{train,val}/<city>/",
            hint="set data.raw to the folder holding leftImg8bit/ and gtFine/ "
            "(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unpacked)",
        )


def official_frames(raw: Path, split: str) -> list[Frame]:
    """Frames of an official split, sorted by city and name, each with its labelIds file."""
    img_root, lab_root = raw / "leftImg8bit" / split, raw / "gtFine" / split
    _check_dir(img_root)
    _check_dir(lab_root)
    frames = []
    for city in sorted(p for p in img_root.iterdir() if not p.name.startswith(".")):
        if not city.is_dir():
            raise CarsegError(
                f"{city}: unknown city layout; expected {img_root}/<city>/*{_IMAGE_SUFFIX}.png"
            )
        files = sorted(p for p in city.iterdir() if not p.name.startswith("."))
        if not files:
            raise CarsegError(f"{city}: unknown city layout; the city folder is empty")
        for img in files:
            stem = img.stem
            m = _FRAME.match(stem[: -len(_IMAGE_SUFFIX)]) if stem.endswith(_IMAGE_SUFFIX) else None
            if not img.is_file() or img.suffix != ".png" or m is None or m["city"] != city.name:
                raise CarsegError(
                    f"{img}: unknown city layout; expected "
                    f"{city}/{city.name}_<seq>_<frame>{_IMAGE_SUFFIX}.png"
                )
            frame_id = stem[: -len(_IMAGE_SUFFIX)]
            label = lab_root / city.name / f"{frame_id}{_LABEL_SUFFIX}.png"
            if not label.is_file():
                raise CarsegError(f"{label}: missing label for {img}")
            frames.append(Frame(stem, city.name, img, label))
    if not frames:
        raise CarsegError(f"{img_root}: no images", hint="check data.raw and the download")
    return frames


def cityscapes_splits(raw: Path) -> dict[str, list[Frame]]:
    """The paper's splits: official train minus VAL_CITIES, VAL_CITIES, official val."""
    if not raw.is_dir():
        raise CarsegError(
            f"data.raw {raw} is not a folder",
            hint="point data.raw at the folder holding leftImg8bit/ and gtFine/",
        )
    train = official_frames(raw, "train")
    out = {
        "train": [f for f in train if f.city not in VAL_CITIES],
        "val": [f for f in train if f.city in VAL_CITIES],
        "test": official_frames(raw, "val"),
    }
    for split, frames in out.items():
        if not frames:
            what = (
                f"no images of the validation cities {', '.join(VAL_CITIES)}"
                if split == "val"
                else "no images outside the validation cities"
            )
            raise CarsegError(f"{raw / 'leftImg8bit' / 'train'}: {what}")
    return out


# ----------------------------------------------------------------------------- reading


def _read(path: Path, mode: str) -> tuple[Any, tuple[int, int]]:
    from PIL import Image  # Pillow ships with matplotlib; it reads and resizes the PNGs

    try:
        im = Image.open(path)
        im.load()
    except OSError as exc:
        raise CarsegError(f"{path}: not a readable PNG ({exc})") from None
    if mode == "RGB" and im.mode != "RGB":
        im = im.convert("RGB")
    if mode == "L" and im.mode not in ("L", "P"):
        raise CarsegError(f"{path}: labelIds PNG has mode {im.mode}, expected 8-bit single channel")
    return im, (im.height, im.width)


def load_frame(frame: Frame) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Normalised float16 image [3, 256, 512], trainId map [256, 512], raw (H, W)."""
    from PIL import Image

    img, hw = _read(frame.image, "RGB")
    lab, lhw = _read(frame.label, "L")
    if hw[1] != 2 * hw[0]:
        raise CarsegError(f"{frame.image}: image is {hw[0]}x{hw[1]}, expected H x 2H (1024x2048)")
    if lhw != hw:
        raise CarsegError(
            f"{frame.label}: label is {lhw[0]}x{lhw[1]} but its image is {hw[0]}x{hw[1]}"
        )
    h, w = SIZE
    x = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    x = ((x - MEAN) / STD).transpose(2, 0, 1).astype(np.float16)
    y = np.asarray(lab.resize((w, h), Image.Resampling.NEAREST))
    return x, to_train_ids(y, str(frame.label)), hw


# ----------------------------------------------------------------------------- writing


def write_cityscapes_split(
    staged: StagedSplits,
    split: str,
    frames: list[Frame],
    blackbox: BlackboxFolder | None,
    rep: Reporter,
) -> int:
    """Write one split in blocks of BLOCK images (train: 1 map + flips attribute; val/test:
    32 modes and their weights)."""
    train = split == "train"
    attrs: dict[str, object] = {"source": "cityscapes", "split": split, "size": list(SIZE)}
    attrs["class_colors"] = json.dumps(CLASS_COLORS)
    attrs[ATTR] = to_json(cityscapes_spec(SIZE, MEAN, STD))
    if train:
        attrs["class_flips"] = json.dumps([[s, d, p] for s, d, p in FLIPS])
    weights = mode_weights().astype(np.float32)
    tmp = staged.path(f"{split}.h5")
    with (
        SplitWriter(
            tmp,
            num_classes=NUM_CLASSES,
            class_names=CLASS_NAMES,
            eval_classes=EVAL_CLASSES,
            ignore_index=IGNORE,
            image_dtype=np.float16,
            attrs=attrs,
        ) as w,
        rep.progress(len(frames), f"prepare {split}") as bar,
    ):
        for start in range(0, len(frames), BLOCK):
            block = frames[start : start + BLOCK]
            imgs, labs, bbs = [], [], []
            for f in block:
                x, y, hw = load_frame(f)
                imgs.append(x)
                labs.append(y[None] if train else modes(y))
                if blackbox is not None:
                    bbs.append(blackbox.load([f.stem, f.frame_id], str(f.image), SIZE, raw_size=hw))
            w.append(
                np.stack(imgs),
                np.stack(labs),
                label_weight=None if train else np.tile(weights, (len(block), 1)),
                blackbox=np.stack(bbs) if bbs else None,
            )
            bar.advance(len(block))
    staged.write_cases(split, [(f.frame_id, f.city) for f in frames])
    return len(frames)


def prepare_cityscapes(
    raw: Path, staged: StagedSplits, blackbox: BlackboxFolder | None, rep: Reporter
) -> None:
    """Stage train/val/test.h5 (and cases CSVs) from the official layout."""
    splits = cityscapes_splits(raw)  # the whole layout is checked before anything is written
    for split, frames in splits.items():
        n = write_cityscapes_split(staged, split, frames, blackbox, rep)
        rep.line(f"  {split}: {n} images")
