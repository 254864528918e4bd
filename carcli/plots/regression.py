"""Figures of the 1D regression task: the paper's Fig. 2 (fit) and Fig. 7 (log-likelihood).

* :func:`fit_axes` draws one Fig. 2 panel: the data, G's samples, the mean of the samples
  against F's output (and the true E[y | x] when known).
* :func:`loglik_axes` draws one Fig. 7 panel: log-likelihood over training, median and
  inter-quartile range across runs, one band per group (lambda = 0 and lambda = 1).
* :func:`run_plot_regression` is `plot-reliability` for a regression split: ``fit.png`` and,
  when the run's refiner logged it, ``loglik.png``, each with its CSV.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from carcli.plots.figures import C_F, C_G, C_TRUE, DPI, ONE_COLUMN, TWO_COLUMNS, paper_style

GROUP_COLOURS = {"lambda = 0": "tab:blue", "lambda = 1": "tab:red"}
SAMPLES_SHOWN = 4  # samples per input drawn in a fit panel


def fit_axes(
    ax: Any,
    data_x: np.ndarray,
    data_y: np.ndarray,
    x: np.ndarray,
    samples: np.ndarray,
    calibrator: np.ndarray,
    true_mean: np.ndarray | None,
    title: str,
) -> None:
    """One Fig. 2 panel; x [N], samples [N, M], calibrator [N], true_mean [N] or None."""
    order = np.argsort(x)
    ax.scatter(data_x, data_y, s=1.0, c=C_TRUE, alpha=0.25, lw=0, label="data", rasterized=True)
    shown = samples[:, :SAMPLES_SHOWN]
    ax.scatter(
        np.repeat(x, shown.shape[1]),
        shown.reshape(-1),
        s=1.0,
        c=C_G,
        alpha=0.35,
        lw=0,
        label="G samples",
        rasterized=True,
    )
    ax.plot(x[order], samples.mean(1)[order], c="tab:red", lw=1.2, label="mean of samples")
    ax.plot(x[order], calibrator[order], c=C_F, lw=1.0, ls="--", label="F(x)")
    if true_mean is not None:
        ax.plot(x[order], true_mean[order], c="k", lw=0.8, ls=":", label="E[y | x]")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.8, 0.8)
    ax.set_title(title)


def loglik_axes(
    ax: Any, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylim=(-4, 2.5)
) -> None:
    """One Fig. 7 panel; curves maps a group name to (steps [T], values [runs, T])."""
    for name, (steps, values) in curves.items():
        colour = GROUP_COLOURS.get(name)
        med = np.median(values, axis=0)
        lo, hi = np.quantile(values, 0.25, axis=0), np.quantile(values, 0.75, axis=0)
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.3, lw=0)
        ax.plot(steps, med, color=colour, lw=1.0, label=f"{name} (median, IQR)")
    ax.set_ylim(*ylim)
    ax.set_xlabel("training step")
    ax.set_ylabel("log-likelihood")
    ax.set_title(title)
    ax.grid(True, lw=0.3)


def fit_figure(panels: list[dict[str, Any]]) -> Any:
    """Fig. 2: one panel per dict of fit_axes arguments, side by side."""
    from matplotlib.figure import Figure

    with paper_style():
        width = ONE_COLUMN if len(panels) == 1 else TWO_COLUMNS
        fig = Figure(figsize=(width, 2.6), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, panel in zip(axes, panels, strict=True):
            fit_axes(ax, **panel)
        axes[0].legend(loc="upper right", markerscale=4, frameon=False, fontsize=7)
    return fig


def loglik_figure(
    grid: dict[tuple[float, float], dict[str, tuple[np.ndarray, np.ndarray]]],
) -> Any:
    """Fig. 7: a panel per (pi, sigma), rows pi, columns sigma."""
    from matplotlib.figure import Figure

    pis = sorted({k[0] for k in grid})
    sigmas = sorted({k[1] for k in grid})
    with paper_style():
        fig = Figure(figsize=(TWO_COLUMNS, 2.0 * len(pis) + 0.4), dpi=DPI, layout="constrained")
        axes = fig.subplots(len(pis), len(sigmas), squeeze=False, sharex=True, sharey=True)
        for i, pi in enumerate(pis):
            for j, sigma in enumerate(sigmas):
                ax = axes[i][j]
                if (pi, sigma) in grid:
                    loglik_axes(ax, grid[(pi, sigma)], f"pi = {pi:g}, sigma = {sigma:g}")
                if i < len(pis) - 1:
                    ax.set_xlabel("")
                if j > 0:
                    ax.set_ylabel("")
        axes[0][0].legend(loc="lower right", frameon=False, fontsize=7)
    return fig


def read_loglik(metrics_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, val_ll) logged by train-refiner on a regression split."""
    steps, values = [], []
    with open(metrics_path) as fh:
        for line in fh:
            rec = json.loads(line)
            if "val_ll" in rec:
                steps.append(rec["step"])
                values.append(rec["val_ll"])
    return np.asarray(steps), np.asarray(values)


def _single_loglik_figure(steps: np.ndarray, values: np.ndarray, name: str) -> Any:
    from matplotlib.figure import Figure

    with paper_style():
        fig = Figure(figsize=(ONE_COLUMN, 2.4), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.plot(steps, values, lw=0.8, c=C_G)
        ax.set_ylim(max(-10.0, float(np.min(values)) - 0.5), float(np.max(values)) + 0.5)
        ax.set_xlabel("training step")
        ax.set_ylabel("log-likelihood of a sample")
        ax.set_title(f"{name}: exact log-likelihood on val")
        ax.grid(True, lw=0.3)
    return fig
