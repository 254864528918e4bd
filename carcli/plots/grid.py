"""The sample grid: per image, the input, its annotations, F, F's entropy, G's mean, samples.

Class maps use one fixed colour per class id (`class_palette`; ignore_index black). F's
probabilities and the mean of G's samples share one rendering: with two classes the
foreground probability (viridis), otherwise the argmax colour faded to white as the
maximum probability falls to 1/K.
"""

from __future__ import annotations

import math

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
    binary = k == 2
    fg = (eval_classes or [1])[0]
    n_modes = max([len(v.modes) for v in views] + [1])
    n_samp = max([len(v.samples) for v in views] + [1])
    ncols = 1 + n_modes + 3 + n_samp
    nrows = len(views)
    h, w = views[0].p.shape[1:] if views else (1, 1)
    panel_h = TWO_COLUMNS / ncols * 0.92 * h / w  # wspace takes ~8% of each column
    ent_norm = Normalize(0, math.log(k))
    n_ged = ged_key.split("_")[-1]
    bars: list[tuple[Normalize, str, str]] = [(ent_norm, "magma", "entropy of F (nats)")]
    if binary:
        bars.insert(0, (Normalize(0, 1), "viridis", f"p({class_names[fg]})"))
    handles = [
        Patch(facecolor=lut[c], edgecolor="0.5", lw=0.4, label=name)
        for c, name in enumerate(class_names)
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
    # Row heights in inches (hspace 0): header, then image rows separated by title gaps,
    # then the colour-bar row (its ticks and label below it), then the legend if on its own.
    heights = [HEADER_IN]
    for r in range(nrows):
        heights += ([ROW_GAP_IN] if r else []) + [panel_h]
    heights += [0.15, 0.1, 0.4]
    if own_row:
        heights += [leg_rows * 0.17 + 0.05]
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

        def show_prob(ax, p: np.ndarray) -> None:
            if binary:
                ax.imshow(p[fg], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(prob_rgb(p, lut), interpolation="nearest")

        for r, v in enumerate(views):
            axes = [fig.add_subplot(gs[1 + 2 * r, c]) for c in range(ncols)]
            for ax in axes:
                _blank(ax)
            axes[0].imshow(image_rgb(v.image)[0], interpolation="nearest")
            ged = v.figures.get(ged_key)
            head = "image\n" if r == 0 else ""
            axes[0].set_title(
                head + ("" if ged is None else f"GED{n_ged} {_short(ged)}"), linespacing=1.1
            )
            axes[0].set_ylabel(f"row {v.row}")
            for j in range(n_modes):
                ax = axes[1 + j]
                if j >= len(v.modes):
                    ax.set_axis_off()
                    continue
                ax.imshow(lut[v.modes[j]], interpolation="nearest")
                head = f"y{j + 1}\n" if r == 0 else ""
                ax.set_title(
                    f"{head}w {_short(v.mode_weights[j])}\nG {_short(v.mode_freq[j])}",
                    linespacing=1.1,
                )
            c = 1 + n_modes
            show_prob(axes[c], v.p)
            axes[c + 1].imshow(
                entr(v.p.astype(np.float64)).sum(axis=0),
                cmap="magma",
                norm=ent_norm,
                interpolation="nearest",
            )
            show_prob(axes[c + 2], v.g_mean)
            for j in range(n_samp):
                ax = axes[c + 3 + j]
                if j >= len(v.samples):
                    ax.set_axis_off()
                    continue
                ax.imshow(lut[v.samples[j]], interpolation="nearest")
                if r == 0:
                    ax.set_title(f"G #{v.sample_idx[j]}")
            if r == 0:
                for ax, title in zip(axes[c : c + 3], ("F", "H(F)", "G mean"), strict=True):
                    ax.set_title(title)
        bar_row = len(heights) - (3 if own_row else 2)
        _colour_bars(
            fig,
            [
                gs[
                    bar_row,
                    ncols - (len(bars) - i) * (bar_cols + 1) + 1 : ncols
                    - (len(bars) - 1 - i) * (bar_cols + 1),
                ]
                for i in range(len(bars))
            ],
            bars,
        )
        leg_ax = fig.add_subplot(gs[-1, :] if own_row else gs[bar_row, :left])
        leg_ax.set_axis_off()
        leg_ax.legend(
            handles=handles,
            loc="upper left" if own_row else "center left",
            ncol=leg_cols,
            frameon=False,
            handlelength=1.0,
            columnspacing=0.8,
            borderaxespad=0.0,
        )
        shown = f"p({class_names[fg]})" if binary else "argmax class, paler = lower max probability"
        fig.suptitle(
            "Most ambiguous images (highest label entropy) and an unambiguous one (last)."
            "\ny: annotations, most probable first; w: probability; G: share of all "
            f"samples nearest to it.\nF, G mean: {shown}; H(F): entropy (nats); "
            f"GED{n_ged}: per-image GED with {n_ged} samples.",
            y=1.0,
            va="top",
            linespacing=1.25,
            fontsize=8,
        )
        return fig


def _colour_bars(fig: Figure, cells: list, bars: list[tuple[Normalize, str, str]]) -> None:
    """Horizontal colour bars, one per grid cell, with at most 3 ticks."""
    for cell, (norm, cmap, label) in zip(cells, bars, strict=True):
        cax = fig.add_subplot(cell)
        cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
        cb.set_label(label, labelpad=1)
        cb.ax.xaxis.set_major_locator(ticker.MaxNLocator(3))
