"""Plot a few synthetic images and every mode of their label distribution.

Usage: ``python scripts/plot_synthetic.py OUTPUT.png [--seed S] [--rows R]``

Each row shows one image (default generator settings) followed by its modes, each titled with
its probability; the row's left edge lists its ambiguity factors. Label maps use a fixed
discrete colour map (background dark, object classes in the colours the images use).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from carcli.data.synthetic import CLASS_RGB, SyntheticSplit, generate_synthetic  # noqa: E402

BACKGROUND_COLOUR = (0.12, 0.12, 0.12)


def pick_rows(split: SyntheticSplit, rows: int) -> list[int]:
    """Indices that show every mode count and every cue level, in a fixed order."""
    chosen: list[int] = []
    for m in sorted(set(split.num_modes.tolist())):
        chosen.append(int(np.flatnonzero(split.num_modes == m)[0]))
    cues = {
        (key, obj[key])
        for objs in split.objects
        for obj in objs
        for key in ("flip_prob", "halo_prob")
    }
    seen: set = set()
    for i in chosen:
        seen |= {(key, obj[key]) for obj in split.objects[i] for key in ("flip_prob", "halo_prob")}
    for i in range(len(split.objects)):
        if len(chosen) >= rows:
            break
        new = {(key, obj[key]) for obj in split.objects[i] for key in ("flip_prob", "halo_prob")}
        if i not in chosen and (new - seen or seen >= cues):
            chosen.append(i)
            seen |= new
    return sorted(chosen[:rows], key=lambda i: (split.num_modes[i], i))


def where(obj: dict, size: int) -> str:
    """A coarse position word for an object ("top-left", "centre", ...)."""
    third = size / 3
    row = ("top", "", "bottom")[min(int(obj["cy"] // third), 2)]
    col = ("left", "", "right")[min(int(obj["cx"] // third), 2)]
    return "-".join(w for w in (row, col) if w) or "centre"


def describe(objects: list[dict], size: int) -> str:
    """One line per object: where it is, its class or flip probability, its halo probability."""
    lines = []
    for obj in objects:
        name = f"{obj['shape']} {where(obj, size)}"
        if obj["flip_prob"] is None:
            text = f"{name}: class {obj['classes'][0]}"
        else:
            a, b = obj["classes"]
            text = f"{name}: P({a})={obj['flip_prob']:g}, else {b}"
        if obj["halo_prob"] is not None:
            text += f"\n  + halo with P={obj['halo_prob']:g}"
        lines.append(text)
    return "\n".join(lines)


def plot(split: SyntheticSplit, indices: list[int], output: Path) -> None:
    k = split.num_classes
    colours = [BACKGROUND_COLOUR] + [tuple(CLASS_RGB[c]) for c in range(1, k)]
    cmap = ListedColormap(colours)
    cols = 1 + int(split.num_modes[indices].max())
    fig, axes = plt.subplots(
        len(indices), cols, figsize=(1.35 * cols + 2.0, 1.45 * len(indices) + 0.6)
    )
    axes = np.atleast_2d(axes)
    for row, i in enumerate(indices):
        raw = split.image[i] * split.norm_std[:, None, None] + split.norm_mean[:, None, None]
        raw = np.clip(raw, 0.0, 1.0)
        ax = axes[row, 0]
        if raw.shape[0] == 3:
            ax.imshow(raw.transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(raw[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"image {i}", fontsize=9)
        ax.set_ylabel(
            describe(split.objects[i], split.image.shape[-1]),
            fontsize=7,
            rotation=0,
            ha="right",
            va="center",
        )
        for col in range(1, cols):
            ax = axes[row, col]
            j = col - 1
            if j < split.num_modes[i]:
                ax.imshow(
                    split.label[i, j], cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest"
                )
                ax.set_title(f"p = {split.label_weight[i, j]:.3f}", fontsize=9)
            else:
                ax.axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Patch(facecolor=colours[c], edgecolor="black", label=name)
        for c, name in enumerate(split.class_names)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(
        "Synthetic data: each image and its label modes (probability in each title)\n"
        "cues: object shade between red and blue = P(class 1)"
        " (reddish purple 0.7, bluish purple 0.3);"
        " grey halo brightness = P(halo belongs to the object) (dim 0.4, bright 0.7)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--rows", type=int, default=6, help="number of images (default 6)")
    args = parser.parse_args(argv)
    split = generate_synthetic(200, seed=args.seed)
    plot(split, pick_rows(split, args.rows), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
