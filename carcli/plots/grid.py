"""The sample grid: per image, the input, its annotations, F, F's entropy, G's mean, samples.

Class maps use one fixed colour per class id (`class_palette`; ignore_index black). F's
probabilities and the mean of G's samples share one rendering: with two classes the
foreground probability (viridis), otherwise the argmax colour faded to white as the
maximum probability falls to 1/K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.special import entr

from carcli.plots.figures import (
    IGNORE,
    TWO_COLUMNS,
    class_palette,
    image_rgb,
    paper_style,
    prob_rgb,
)
from carcli.plots.stats import ImageView

HEADER_IN = 1.0  # inches above the first row: 3 caption lines and 3 title lines
ROW_GAP_IN = 0.36  # inches between image rows: two title lines
FONT_PT = 8


def _short(x: float) -> str:
    """0.29 -> '.29', 1.0 -> '1'."""
    return "1" if x >= 0.995 else f"{x:.2f}".lstrip("0")


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_layout(names: list[str], width_in: float) -> tuple[int, int]:
    """(columns, rows) of a class legend that fits ``width_in`` inches at 8 pt."""
    em = FONT_PT / 72
    entry = (2.2 + 0.6 * max(len(n) for n in names)) * em
    cols = max(1, min(len(names), int(width_in // entry)))
    return cols, math.ceil(len(names) / cols)


@dataclass(frozen=True)
class _Grid:
    """What every panel of a sample grid shares: colours and column counts."""

    class_names: list[str]
    lut: np.ndarray
    """Colour of each class id (ignore_index black)."""
    fg: int
    """The class shown as a probability when there are two classes."""
    n_modes: int
    n_samp: int
    ent_norm: Normalize
    ged_key: str

    @property
    def binary(self) -> bool:
        return len(self.class_names) == 2

    @property
    def ncols(self) -> int:
        return 1 + self.n_modes + 3 + self.n_samp

    @property
    def n_ged(self) -> str:
        return self.ged_key.split("_")[-1]


def samples_figure(
    views: list[ImageView],
    class_names: list[str],
    eval_classes: list[int],
    ignore_index: int,
    ged_key: str,
) -> Figure:
    """Rows of images: input, annotations (weights), F, H(F), G's mean, samples; a legend."""
    k = len(class_names)
    lut = class_palette(k, eval_classes)
    if 0 <= ignore_index < 256:
        lut[ignore_index] = IGNORE
    g = _Grid(
        class_names,
        lut,
        (eval_classes or [1])[0],
        max([len(v.modes) for v in views] + [1]),
        max([len(v.samples) for v in views] + [1]),
        Normalize(0, math.log(k)),
        ged_key,
    )
    ncols = g.ncols
    foot = _footer(views, g, ignore_index)
    heights = _row_heights(views, ncols, foot.leg_rows if foot.own_row else 0)
    with paper_style():
        fig = Figure(figsize=(TWO_COLUMNS, sum(heights)))
        gs = fig.add_gridspec(
            len(heights),
            ncols,
            height_ratios=heights,
            hspace=0.0,
            wspace=0.08,
            top=1.0,
            bottom=0.0,
            left=0.0,
            right=1.0,
        )
        for r, v in enumerate(views):
            _image_row(fig, [gs[1 + 2 * r, c] for c in range(ncols)], r, v, g)
        _draw_footer(fig, gs, len(heights) - (3 if foot.own_row else 2), ncols, foot)
        _caption(fig, g)
        return fig


@dataclass(frozen=True)
class _Footer:
    """The colour bars and the class legend below the image rows."""

    bars: list[tuple[Normalize, str, str]]
    handles: list[Patch]
    bar_cols: int
    """Grid columns per colour bar."""
    left: int
    """Grid columns left of the colour bars (the legend's, when beside them)."""
    leg_cols: int
    leg_rows: int
    own_row: bool
    """The legend has a full-width row of its own (too many classes beside the bars)."""


def _footer(views: list[ImageView], g: _Grid, ignore_index: int) -> _Footer:
    ncols = g.ncols
    bars: list[tuple[Normalize, str, str]] = [(g.ent_norm, "magma", "entropy of F (nats)")]
    if g.binary:
        bars.insert(0, (Normalize(0, 1), "viridis", f"p({g.class_names[g.fg]})"))
    handles = [
        Patch(facecolor=g.lut[c], edgecolor="0.5", lw=0.4, label=name)
        for c, name in enumerate(g.class_names)
    ]
    if any((v.modes == ignore_index).any() for v in views):
        handles.append(Patch(facecolor=IGNORE, label="ignore"))
    bar_cols = 2 if ncols >= 8 else 1
    left = max(1, ncols - len(bars) * (bar_cols + 1))
    leg_cols, leg_rows = _legend_layout(
        [x.get_label() for x in handles], TWO_COLUMNS * left / ncols
    )
    own_row = leg_rows > 2  # too many classes beside the colour bars: a full-width row
    if own_row:
        leg_cols, leg_rows = _legend_layout([x.get_label() for x in handles], TWO_COLUMNS)
    return _Footer(bars, handles, bar_cols, left, leg_cols, leg_rows, own_row)


def _draw_footer(fig: Figure, gs: Any, bar_row: int, ncols: int, f: _Footer) -> None:
    n, step = len(f.bars), f.bar_cols + 1
    _colour_bars(
        fig,
        [gs[bar_row, ncols - (n - i) * step + 1 : ncols - (n - 1 - i) * step] for i in range(n)],
        f.bars,
    )
    leg_ax = fig.add_subplot(gs[-1, :] if f.own_row else gs[bar_row, : f.left])
    leg_ax.set_axis_off()
    leg_ax.legend(
        handles=f.handles,
        loc="upper left" if f.own_row else "center left",
        ncol=f.leg_cols,
        frameon=False,
        handlelength=1.0,
        columnspacing=0.8,
        borderaxespad=0.0,
    )


def _row_heights(views: list[ImageView], ncols: int, legend_rows: int) -> list[float]:
    """Row heights in inches (hspace 0): header, then image rows separated by title gaps,
    then the colour-bar row (its ticks and label below it), then the legend if on its own
    (``legend_rows`` > 0)."""
    h, w = views[0].calib.shape[1:] if views else (1, 1)
    panel_h = TWO_COLUMNS / ncols * 0.92 * h / w  # wspace takes ~8% of each column
    heights = [HEADER_IN]
    for r in range(len(views)):
        heights += ([ROW_GAP_IN] if r else []) + [panel_h]
    heights += [0.15, 0.1, 0.4]
    if legend_rows:
        heights += [legend_rows * 0.17 + 0.05]
    return heights


def _show_prob(ax, calib: np.ndarray, g: _Grid) -> None:
    if g.binary:
        ax.imshow(calib[g.fg], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(prob_rgb(calib, g.lut), interpolation="nearest")


def _image_row(fig: Figure, cells: list, r: int, v: ImageView, g: _Grid) -> None:
    """Row ``r`` of the grid: the image, its annotations, F, H(F), G's mean, the samples."""
    axes = [fig.add_subplot(cell) for cell in cells]
    for ax in axes:
        _blank(ax)
    axes[0].imshow(image_rgb(v.image)[0], interpolation="nearest")
    ged = v.figures.get(g.ged_key)
    head = "image\n" if r == 0 else ""
    axes[0].set_title(
        head + ("" if ged is None else f"GED{g.n_ged} {_short(ged)}"), linespacing=1.1
    )
    axes[0].set_ylabel(f"row {v.row}")
    for j in range(g.n_modes):
        ax = axes[1 + j]
        if j >= len(v.modes):
            ax.set_axis_off()
            continue
        ax.imshow(g.lut[v.modes[j]], interpolation="nearest")
        head = f"y{j + 1}\n" if r == 0 else ""
        ax.set_title(
            f"{head}w {_short(v.mode_weights[j])}\nG {_short(v.mode_freq[j])}",
            linespacing=1.1,
        )
    c = 1 + g.n_modes
    _show_prob(axes[c], v.calib, g)
    axes[c + 1].imshow(
        entr(v.calib.astype(np.float64)).sum(axis=0),
        cmap="magma",
        norm=g.ent_norm,
        interpolation="nearest",
    )
    _show_prob(axes[c + 2], v.g_mean, g)
    for j in range(g.n_samp):
        ax = axes[c + 3 + j]
        if j >= len(v.samples):
            ax.set_axis_off()
            continue
        ax.imshow(g.lut[v.samples[j]], interpolation="nearest")
        if r == 0:
            ax.set_title(f"G #{v.sample_idx[j]}")
    if r == 0:
        for ax, title in zip(axes[c : c + 3], ("F", "H(F)", "G mean"), strict=True):
            ax.set_title(title)


def _caption(fig: Figure, g: _Grid) -> None:
    names = g.class_names
    shown = f"p({names[g.fg]})" if g.binary else "argmax class, paler = lower max probability"
    fig.suptitle(
        "Most ambiguous images (highest label entropy) and an unambiguous one (last)."
        "\ny: annotations, most probable first; w: probability; G: share of all "
        f"samples nearest to it.\nF, G mean: {shown}; H(F): entropy (nats); "
        f"GED{g.n_ged}: per-image GED with {g.n_ged} samples.",
        y=1.0,
        va="top",
        linespacing=1.25,
        fontsize=8,
    )


def _colour_bars(fig: Figure, cells: list, bars: list[tuple[Normalize, str, str]]) -> None:
    """Horizontal colour bars, one per grid cell, with at most 3 ticks."""
    for cell, (norm, cmap, label) in zip(cells, bars, strict=True):
        cax = fig.add_subplot(cell)
        cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
        cb.set_label(label, labelpad=1)
        cb.ax.xaxis.set_major_locator(ticker.MaxNLocator(3))
