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


FIT_COLUMNS = ["index", "x", "calibrator", "sample_mean", "true_mean", "samples_shown"]


def run_plot_regression(recipe: Any, overwrite: bool, quiet: bool) -> list[Path]:
    """`plot-reliability` on a regression split: fit.png (+ csv) and, when the refiner's
    metrics.jsonl logged it, loglik.png (+ csv); then manifest.json."""
    from carcli.artefacts.run import (
        Manifest,
        RunLayout,
        check_not_finished,
        ensure_dir,
        write_text_atomic,
    )
    from carcli.data.dataset import DatasetFile, split_path
    from carcli.data.regression import MIXTURE_NAMES, mixture_mean_y
    from carcli.errors import CarsegError
    from carcli.plots.reliability import save_figure, to_csv
    from carcli.recipe.load import recipe_to_dict
    from carcli.sampling.bank import Bank
    from carcli.ui import Reporter

    rep = Reporter(quiet)
    split = recipe.evaluate.split
    layout = RunLayout(Path(recipe.run_dir))
    out_dir = layout.plots_dir(split)
    data_path, bank_path = split_path(recipe.data.dir, split), layout.bank(split)
    metrics_path = layout.refiner / "metrics.jsonl"
    for name in ("fit.png", "fit.csv", "loglik.png", "loglik.csv", "manifest.json"):
        check_not_finished(out_dir / name, f"{split} plot file {name}", overwrite)
    manifest = Manifest("plot-reliability", recipe_to_dict(recipe), recipe.seed)
    with DatasetFile(data_path) as ds, Bank(bank_path, ds.info) as bank:
        if bank.n == 0:
            raise CarsegError(
                f"{bank_path}: the sample bank holds no inputs",
                hint="sample the split again with `carseg sample RECIPE --overwrite`",
            )
        index = bank.index
        samples = bank.read("samples", slice(0, bank.n))[:, :, 0]
        calib = bank.read("calibration", slice(0, bank.n))[:, 0]
        x = ds.read_rows("image", index)[:, 0]
        labels = ds.h5["label"][...]  # small: [N, A, 1]
        data_x = np.repeat(ds.h5["image"][:, 0], labels.shape[1])
        data_y = labels[:, :, 0].reshape(-1)
        truth = None
        if all(m in ds.h5 for m in MIXTURE_NAMES):
            mean, weight = (ds.read_rows(m, index) for m in MIXTURE_NAMES[:2])
            truth = mixture_mean_y(mean, weight)[:, 0]
    ensure_dir(out_dir)
    written: list[Path] = []
    fig = fit_figure(
        [
            {
                "data_x": data_x,
                "data_y": data_y,
                "x": x,
                "samples": samples,
                "calibrator": calib,
                "true_mean": truth,
                "title": f"{recipe.name}: {split}, {samples.shape[1]} samples per x",
            }
        ]
    )
    rows = [
        {
            "index": int(index[i]),
            "x": float(x[i]),
            "calibrator": float(calib[i]),
            "sample_mean": float(samples[i].mean()),
            "true_mean": None if truth is None else float(truth[i]),
            "samples_shown": " ".join(f"{v:.4f}" for v in samples[i, :SAMPLES_SHOWN]),
        }
        for i in np.argsort(x)
    ]
    save_figure(fig, out_dir / "fit.png")
    write_text_atomic(out_dir / "fit.csv", to_csv(rows, FIT_COLUMNS))
    written += [out_dir / "fit.png", out_dir / "fit.csv"]
    if metrics_path.exists():
        steps, values = read_loglik(metrics_path)
        if len(steps):
            fig = _single_loglik_figure(steps, values, recipe.name)
            save_figure(fig, out_dir / "loglik.png")
            ll_rows = [
                {"step": int(s), "val_ll": float(v)} for s, v in zip(steps, values, strict=True)
            ]
            write_text_atomic(out_dir / "loglik.csv", to_csv(ll_rows, ["step", "val_ll"]))
            written += [out_dir / "loglik.png", out_dir / "loglik.csv"]
            manifest.add_input(metrics_path)
    for p in (data_path, bank_path):
        manifest.add_input(p)
    manifest.extra = {"split": split, "n_inputs": int(len(x)), "num_samples": samples.shape[1]}
    manifest.write(out_dir, [p.name for p in written])
    written.append(out_dir / "manifest.json")
    rep.line(f"plot-reliability (regression): wrote {len(written)} files to {out_dir}")
    return written


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
