"""The mode-frequency table and figure of plot-reliability (true probability vs G's share)."""

from __future__ import annotations

import numpy as np

from carcli.plots.modes import mode_frequency_figure, mode_rows


def test_mode_rows_hand_counts_most_probable_first() -> None:
    a = np.zeros((4, 4), np.uint8)
    a[:, :2] = 1  # mode A: left half
    b = np.zeros((4, 4), np.uint8)
    b[:, 2:] = 1  # mode B: right half
    labels = np.stack([b, a, a * 0])  # weights .3 / .7, one padding row
    weights = np.array([0.3, 0.7, 0.0])
    samples = np.stack([a] * 6 + [b] * 4)
    rows = mode_rows(2, 17, samples, labels, weights, 2, [1], 255)
    assert [(r["mode_rank"], r["true_weight"], r["g_frequency"]) for r in rows] == [
        (0, 0.7, 0.6),
        (1, 0.3, 0.4),
    ]
    assert all(r["panel"] == 2 and r["dataset_row"] == 17 and r["num_modes"] == 2 for r in rows)
    fig = mode_frequency_figure(rows + [{**r, "panel": 3} for r in rows])
    assert len([ax for ax in fig.axes if ax.has_data()]) == 2


def test_mode_figure_without_ambiguous_images() -> None:
    fig = mode_frequency_figure([])
    assert fig.axes
