"""Whole-answer frequencies: for the most ambiguous images, each true mode's probability
beside the share of G's samples nearest to it (the frequencies the paper promises to match).

The table's rows (one per image and mode) are written as ``mode_frequencies.csv``; the figure
draws one panel per image, modes by decreasing probability.
``experiments/joint/mode_figure.py`` draws two runs' tables side by side (before and after a
change)."""

from __future__ import annotations

from typing import Any

import numpy as np

from carcli.metrics.modes import mode_frequencies

MODE_COLUMNS = ["panel", "dataset_row", "num_modes", "mode_rank", "true_weight", "g_frequency"]
MAX_MODES_SHOWN = 8


def mode_rows(
    panel: int,
    row: int,
    samples: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    num_classes: int,
    eval_classes: list[int],
    ignore_index: int,
) -> list[dict[str, Any]]:
    """Rows of one image: its merged modes (most probable first, at most MAX_MODES_SHOWN)
    with their probability and the frequency of G's samples assigned to each."""
    mf = mode_frequencies(
        samples,
        labels,
        weights,
        num_classes=num_classes,
        eval_classes=eval_classes,
        ignore_index=ignore_index,
    )
    w, f = np.asarray(mf["weights"]), np.asarray(mf["frequencies"])
    order = np.argsort(-w, kind="stable")[:MAX_MODES_SHOWN]
    return [
        {
            "panel": panel,
            "dataset_row": row,
            "num_modes": len(w),
            "mode_rank": rank,
            "true_weight": float(w[i]),
            "g_frequency": float(f[i]),
        }
        for rank, i in enumerate(order)
    ]


def mode_frequency_figure(
    rows: list[dict[str, Any]], series: list[tuple[str, str, str]] | None = None
) -> Any:
    """One panel per image: bars of the true mode probabilities and of each series' sample
    frequencies. ``series``: (CSV column, colour, legend label); default: G's frequency."""
    from matplotlib.figure import Figure

    from carcli.plots.figures import C_G, C_TRUE, DPI, TWO_COLUMNS, paper_style

    series = series or [("g_frequency", C_G, "G: share of samples")]
    panels = sorted({r["panel"] for r in rows})
    cols = min(3, max(1, len(panels)))
    nrows = max(1, int(np.ceil(len(panels) / cols)))
    with paper_style():
        fig = Figure(figsize=(TWO_COLUMNS, 1.9 * nrows + 0.4), dpi=DPI, layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).reshape(-1)
        bars = [("true_weight", C_TRUE, "true probability"), *series]
        width = 0.8 / len(bars)
        for ax, panel in zip(axes, panels, strict=False):
            mine = sorted((r for r in rows if r["panel"] == panel), key=lambda r: r["mode_rank"])
            x = np.arange(len(mine))
            for j, (key, colour, label) in enumerate(bars):
                vals = [r.get(key, np.nan) for r in mine]
                ax.bar(
                    x + (j - (len(bars) - 1) / 2) * width, vals, width, color=colour, label=label
                )
            ax.set_xticks(x, [str(i + 1) for i in x])
            ax.set_title(f"row {mine[0]['dataset_row']} ({mine[0]['num_modes']} modes)")
            ax.set_ylim(0, 1)
            ax.grid(axis="y", color="0.9", lw=0.6)
            ax.set_axisbelow(True)
        for ax in axes[len(panels) :]:
            ax.set_axis_off()
        if not panels:
            axes[0].text(0.5, 0.5, "no image has several modes", ha="center", va="center")
        axes[0].set_ylabel("probability / share")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=len(bars), frameon=False)
        fig.suptitle("Frequencies of whole answers: modes by decreasing probability")
    return fig
