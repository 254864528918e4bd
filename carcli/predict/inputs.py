"""What `predict` reads: image files, `.npy` arrays, folders of them, dataset-schema HDF5.

Every input becomes an `Item`: a unique name (the file's stem; a repeated stem gets ``-2``,
``-3``, ... in the order given; an HDF5 row is ``<stem>_<row:06d>``), the network input
float32 [C, H, W], the sha256 of what was read, and the noise key that seeds its samples.

Noise keys: an HDF5 row's key is its row index, exactly as `sample` seeds a split's rows, so
`predict` on a split file reproduces `sample`'s bank; any other input's key is taken from its
sha256, so its samples depend on its content and the seed only (not on order or batching).

Image files are read with Pillow and turned into the network input by the model's
preprocessing spec (carcli/data/preprocess.py); `.npy` arrays ([C, H, W] or [H, W]) and HDF5
images are taken as already normalised. Nothing is written here: every input is read and
checked before `predict` writes anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carcli.data.preprocess import apply_spec
from carcli.errors import CarsegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy",)
HDF5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = IMAGE_SUFFIXES + ARRAY_SUFFIXES + HDF5_SUFFIXES
CONVERTS = ("grey", "rgb", "grey_to_rgb")  # steps that set the channel count
KEY_SPACE = 2**31


@dataclass
class Item:
    name: str
    path: str | None  # the file (None for arrays passed in memory)
    sha256: str
    key: int  # noise key (module docstring)
    image: np.ndarray  # float32 [C, H, W], the network input
    blackbox: np.ndarray | None = None  # uint8 [H, W] ids or float [K_b, H, W] (HDF5 rows)
    row: int | None = None  # row of an HDF5 input

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[2])


def key_of(digest: str) -> int:
    return int(digest[:8], 16) % KEY_SPACE


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expand(inputs: list[str | Path], recursive: bool = False) -> list[Path]:
    """Files named, and the files of folders (sorted; non-recursive unless `recursive`)."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            walk = p.rglob("*") if recursive else p.iterdir()
            found = sorted(
                f
                for f in walk
                if f.is_file() and f.suffix.lower() in SUFFIXES and not f.name.startswith(".")
            )
            if not found:
                raise CarsegError(
                    f"{p}: no inputs in this folder (looked for {', '.join(SUFFIXES)}"
                    + (")" if recursive else "; --recursive reads subfolders)"),
                    hint="point predict at a folder of images or arrays",
                )
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise CarsegError(
                    f"{p}: not an input predict reads", hint=f"use {', '.join(SUFFIXES)} files"
                )
            out.append(p)
        else:
            raise CarsegError(f"{p}: no such file or folder", hint="check the input path")
    return out


def not_inputs(inputs: list[str | Path], recursive: bool = False) -> list[Path]:
    """Files in the input folders that predict does not read (no input suffix; hidden files
    aside): they are reported, not skipped silently."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            walk = p.rglob("*") if recursive else p.iterdir()
            out += sorted(
                f
                for f in walk
                if f.is_file() and f.suffix.lower() not in SUFFIXES and not f.name.startswith(".")
            )
    return out


def _check_array(x: np.ndarray, where: str, channels: int) -> np.ndarray:
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise CarsegError(f"{where}: array has shape {x.shape}, expected [C, H, W] or [H, W]")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise CarsegError(f"{where}: array has dtype {x.dtype}, expected numbers")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise CarsegError(
            f"{where}: holds NaN or infinite values", hint="pass finite, normalised values"
        )
    if x.shape[0] != channels:
        raise CarsegError(
            f"{where}: has {x.shape[0]} channel(s), but the model takes {channels}",
            hint="pass arrays with the channels the model was trained on",
        )
    return np.ascontiguousarray(x)


def read_image(path: Path, spec: list[dict[str, Any]] | None, channels: int) -> np.ndarray:
    """An image file through the model's preprocessing: float32 [C, H, W]."""
    from PIL import Image, UnidentifiedImageError

    if spec is None:
        raise CarsegError(
            f"{path}: the model declares no preprocessing for image files (its dataset had "
            "no 'preprocess' attribute)",
            hint="pass .npy arrays normalised as the network takes them, or have the model "
            "exported with its steps declared (its maker runs carseg export RECIPE --preprocess "
            '\'[{"step": "to_float", "divide_by": 255}]\'; docs/using-a-model.md)',
        )
    try:
        im = Image.open(path)
        im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise CarsegError(
            f"{path}: not a readable image ({exc})", hint="replace or remove the file"
        ) from None
    im = drop_alpha(im, path)
    bands = len(im.getbands())
    if bands != channels and not any(s["step"] in CONVERTS for s in spec):
        _channel_error(path, bands, channels)
    try:
        x = apply_spec(spec, im)
    except (OSError, ValueError) as exc:
        raise CarsegError(
            f"{path}: the model's preprocessing failed on it ({exc})",
            hint="check that the image is of the kind the model was trained on",
        ) from None
    finally:
        im.close()
    if x.shape[0] != channels:
        _channel_error(path, x.shape[0], channels, after=True)
    if not np.isfinite(x).all():
        raise CarsegError(f"{path}: preprocessing gave NaN or infinite values")
    return x


def drop_alpha(im: Any, path: Path) -> Any:
    """The rule for an image with an alpha channel (RGBA, LA, or a palette with transparency):
    fully opaque, the alpha channel carries nothing and is dropped (RGBA -> RGB, LA -> L);
    any transparent pixel is refused, because what lies under it is unknown (the model was
    trained on opaque images), with the way to flatten it."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode not in ("RGBA", "LA", "PA"):
        return im
    if im.mode == "PA":
        im = im.convert("RGBA")
    alpha = np.asarray(im.getchannel("A"))
    transparent = int((alpha < 255).sum())
    if transparent:
        raise CarsegError(
            f"{path}: {transparent} of {alpha.size} pixels are (partly) transparent; the model "
            "takes opaque images",
            hint="flatten it onto the background its training images had, e.g. "
            "`magick IN -background white -alpha remove -alpha off OUT.png` (ImageMagick) or "
            "Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im).convert('RGB') "
            "(Pillow), then predict the flattened file",
        )
    return im.convert("RGB" if im.mode == "RGBA" else "L")


def _channel_error(path: Path, have: int, channels: int, after: bool = False) -> None:
    raise CarsegError(
        f"{path}: has {have} channel(s){' after preprocessing' if after else ''}, but the "
        f"model takes {channels}",
        hint=f"convert the image to {channels} channel(s) (e.g. grey to RGB), or have the "
        "model exported with a step that does (grey, rgb, grey_to_rgb in --preprocess)",
    )


def read_hdf5(path: Path, channels: int) -> list[Item]:
    """The rows of a dataset-schema HDF5 file (`label` optional)."""
    import h5py

    from carcli.data.dataset import SCHEMA

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise CarsegError(f"{path}: not a readable HDF5 file ({exc})") from None
    with h5:
        schema = h5.attrs.get("schema")
        schema = schema.decode() if isinstance(schema, bytes) else schema
        if schema != SCHEMA or "image" not in h5 or h5["image"].ndim != 4:
            raise CarsegError(
                f"{path}: not a {SCHEMA} file with image [N, C, H, W] (schema {schema!r})",
                hint="write it in the dataset schema (docs/guide.md, 'File formats'); label may "
                "be absent",
            )
        try:
            image = h5["image"][...]
            bb = h5["blackbox"][...] if "blackbox" in h5 else None
        except OSError as exc:
            raise CarsegError(f"{path}: unreadable data ({exc})") from None
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    items = []
    for row in range(image.shape[0]):
        where = f"{path} (row {row})"
        x = _check_array(image[row], where, channels)
        items.append(
            Item(
                f"{path.stem}_{row:06d}",
                str(path),
                digest,
                row,
                x,
                None if bb is None else bb[row],
                row,
            )
        )
    return items


def read_file(path: Path, spec: list[dict[str, Any]] | None, channels: int) -> list[Item]:
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return read_hdf5(path, channels)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CarsegError(f"{path}: cannot be read ({exc.strerror})") from None
    digest = _sha(data)
    if suffix in ARRAY_SUFFIXES:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CarsegError(f"{path}: not a readable .npy array ({exc})") from None
        x = _check_array(arr, str(path), channels)
    else:
        x = read_image(path, spec, channels)
    return [Item(path.stem, str(path), digest, key_of(digest), x)]


def from_array(x: np.ndarray, index: int, channels: int) -> Item:
    x = _check_array(np.asarray(x), f"input {index}", channels)
    digest = _sha(x.tobytes() + str(x.shape).encode())
    return Item(f"input_{index:06d}", None, digest, key_of(digest), x)


def unique_names(items: list[Item]) -> None:
    """Make names unique in order: a repeated name gets -2, -3, ..."""
    seen: dict[str, int] = {}
    taken = {it.name for it in items}
    for it in items:
        n = seen.get(it.name, 0) + 1
        seen[it.name] = n
        if n > 1:
            name = f"{it.name}-{n}"
            while name in taken:
                n += 1
                name = f"{it.name}-{n}"
            seen[it.name] = n
            taken.add(name)
            it.name = name


def collect(
    images: Any, spec: list[dict[str, Any]] | None, channels: int, recursive: bool = False
) -> list[Item]:
    """Items from a numpy array [B, C, H, W] / [C, H, W], a list of arrays, or paths."""
    if isinstance(images, np.ndarray):
        arrays = list(images) if images.ndim == 4 else [images]
        items = [from_array(a, i, channels) for i, a in enumerate(arrays)]
    else:
        seq = [images] if isinstance(images, (str, Path)) else list(images)
        items = []
        paths = [s for s in seq if isinstance(s, (str, Path))]
        if paths and len(paths) != len(seq):
            raise CarsegError("inputs: pass either arrays or paths, not a mix")
        if paths:
            for p in expand(paths, recursive):
                items.extend(read_file(p, spec, channels))
        else:
            items = [from_array(a, i, channels) for i, a in enumerate(seq)]
    if not items:
        raise CarsegError("no inputs given", hint="pass image files, .npy arrays or folders")
    unique_names(items)
    return items
