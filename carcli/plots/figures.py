"""Matplotlib figures of `plot-reliability`, sized for a paper (3.5 in or 7 in wide, >= 8 pt).

Figures are built as `matplotlib.figure.Figure` objects (no pyplot state); the Agg backend is
selected on import so that nothing ever needs a display.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib import colormaps, ticker
from matplotlib.colors import hsv_to_rgb, to_rgb
from matplotlib.figure import Figure

matplotlib.use("Agg")  # never a display; pyplot is not used (Figure objects only)

ONE_COLUMN, TWO_COLUMNS = 3.5, 7.0  # figure widths in inches
DPI = 200
FONT = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 9,
}
BACKGROUND = (0.85, 0.85, 0.85)  # class 0 when it is not scored (a background class)
IGNORE = (0.0, 0.0, 0.0)
C_TRUE, C_F, C_G = "0.35", "tab:blue", "tab:orange"


@contextmanager
def paper_style() -> Iterator[None]:
    """Font sizes of at least 8 pt for every figure built inside."""
    with matplotlib.rc_context(FONT):
        yield


def class_palette(num_classes: int, eval_classes: Sequence[int]) -> np.ndarray:
    """A fixed colour per class id: float [256, 3]; unknown ids and ignore_index are black.

    Class 0 is light grey when it is not scored (background); other classes take tab10 (grey
    left out), then the light tab20 shades, then evenly spread hues.
    """
    base = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
    base += list(colormaps["tab20"].colors[1::2])
    lut = np.zeros((256, 3))
    ids = list(range(num_classes))
    if 0 not in eval_classes:
        lut[0] = BACKGROUND
        ids = ids[1:]
    for j, c in enumerate(ids):
        if j < len(base):
            lut[c] = to_rgb(base[j])
        else:
            h = (j * 0.618033988749895) % 1.0
            lut[c] = hsv_to_rgb((h, 0.65, 0.9))
    return lut


def image_rgb(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """[C, H, W] -> (H, W, 3) RGB of the first 3 channels, min-max scaled (1-2 channels: grey)."""
    x = image[:3] if image.shape[0] >= 3 else image[:1]
    lo, hi = float(np.min(x)), float(np.max(x))
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    rgb = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    return np.moveaxis(rgb, 0, -1), (None if image.shape[0] >= 3 else "grey")


def prob_rgb(p: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """K > 2: argmax colour faded to white as max p falls from 1 to 1/K."""
    k = p.shape[0]
    top = p.max(axis=0)
    alpha = np.clip((top - 1.0 / k) / (1.0 - 1.0 / k), 0.0, 1.0)[..., None]
    return 1.0 - alpha * (1.0 - lut[p.argmax(axis=0)])


def reliability_figure(table: list[dict], ece: float | None, n_pixels: int) -> Figure:
    """Accuracy vs confidence per bin, the gap to the diagonal, and a histogram of pixels."""
    with paper_style():
        fig = Figure(figsize=(ONE_COLUMN, 3.7), dpi=DPI)
        gs = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
        ax, axh = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        lo = np.array([r["lower"] for r in table])
        width = float(table[0]["upper"] - table[0]["lower"]) if table else 0.1
        centre = lo + width / 2
        filled = [i for i, r in enumerate(table) if r["count"] > 0]
        acc = np.array([table[i]["accuracy"] for i in filled])
        conf = np.array([table[i]["confidence"] for i in filled])
        ax.bar(
            centre[filled], acc, width=width, color=C_F, edgecolor="white", lw=0.6, label="accuracy"
        )
        ax.bar(
            centre[filled],
            conf - acc,
            bottom=acc,
            width=width,
            color="tab:red",
            alpha=0.3,
            edgecolor="tab:red",
            hatch="///",
            lw=0.6,
            label="gap",
        )
        ax.plot(conf, conf, "o", ms=2.5, color="tab:red", zorder=3, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="0.2", lw=0.8, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
        ax.tick_params(labelbottom=False)
        ece_txt = "n/a" if ece is None else f"{100 * ece:.2f}%"
        ax.set_title(f"Reliability of F: ECE = {ece_txt} ({n_pixels:,} pixels)")
        frac = np.array([r["fraction"] for r in table])
        axh.bar(centre, frac, width=width, color="0.6", edgecolor="white", lw=0.6)
        axh.set(xlim=(0, 1), xlabel="confidence (max probability of F)", ylabel="pixels")
        axh.set_ylim(0, max(0.05, float(frac.max()) * 1.15) if frac.size else 1)
        axh.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        axh.yaxis.set_major_locator(ticker.MaxNLocator(2))
        handles, labels = ax.get_legend_handles_labels()
        axh.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.62),
            ncol=2,
            frameon=False,
            handlelength=1.5,
            columnspacing=1.0,
            borderaxespad=0.0,
        )
        return fig


def class_calibration_figure(table: list[dict]) -> Figure:
    """Grouped bars per ambiguous class: true probability, F's mean p, G's sample frequency."""
    n = len(table)
    with paper_style():
        fig = Figure(figsize=(ONE_COLUMN if n <= 4 else TWO_COLUMNS, 2.6), dpi=DPI)
        ax = fig.add_subplot()
        ax.set_title("Per-class calibration on ambiguous pixels (0 < q < 1)")
        if n == 0:
            ax.text(
                0.5,
                0.5,
                "no class has ambiguous pixels",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            return fig
        x, w = np.arange(n), 0.27
        for j, (key, colour, label) in enumerate(
            (
                ("true", C_TRUE, "true q"),
                ("calibrator", C_F, "F: mean p"),
                ("refiner", C_G, "G: sample frequency"),
            )
        ):
            vals = [np.nan if r[key] is None else r[key] for r in table]
            ax.bar(x + (j - 1) * w, vals, width=w, color=colour, label=label)
        names = [r["class_name"] for r in table]
        rotate = n > 6 or max(len(s) for s in names) * n > 48
        ax.set_xticks(x, names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        top = max(max((r[k] or 0.0) for k in ("true", "calibrator", "refiner")) for r in table)
        ax.set(
            ylabel="mean probability", xlim=(-0.6, n - 0.4), ylim=(0, min(1.0, top * 1.3 + 0.05))
        )
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12 if not rotate else -0.3),
            ncol=3,
            frameon=False,
            handlelength=1.2,
            columnspacing=1.0,
        )
        ax.grid(axis="y", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
        return fig
