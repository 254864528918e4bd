"""`carseg plot-reliability`: F's calibration and G's samples as figures, each PNG with a
CSV of its numbers beside it, into ``run_dir/plots/<split>/`` (split = ``evaluate.split``),
then ``manifest.json``:

* ``reliability``: F's reliability diagram (10 equal bins of max probability; accuracy = the
  label probability of F's argmax), the gap to the mean confidence, pixel histogram, ECE;
* ``class_calibration``: per class with ambiguous pixels (0 < q_k < 1), the true probability,
  F's mean probability and G's sample frequency there (the paper's Fig. 5);
* ``samples``: the most ambiguous images (mean entropy of the label distribution) and the
  least ambiguous one: input, annotations with weights, F, F's entropy, G's mean, samples.

A regression split gets ``fit`` and ``loglik`` instead. Nothing is read from
``metrics.json``: the figures are recomputed from the bank, streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carcli.artefacts.run import (
    Manifest,
    RunLayout,
    check_not_finished,
    ensure_dir,
    write_text_atomic,
)
from carcli.data.dataset import DatasetFile, split_path
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.plots.files import save_figure, to_csv
from carcli.plots.modes import MODE_COLUMNS, mode_frequency_figure, mode_rows
from carcli.plots.regression import (
    SAMPLES_SHOWN,
    _single_loglik_figure,
    fit_figure,
    read_loglik,
)
from carcli.plots.reliability import (
    CLASS_COLUMNS,
    PLOTS,
    RELIABILITY_COLUMNS,
    _samples_rows,
    class_table,
    output_names,
    reliability_table,
)
from carcli.recipe.load import recipe_to_dict
from carcli.recipe.schema import Recipe
from carcli.runtime.staleness import require_fresh
from carcli.sampling.bank import Bank
from carcli.ui import Reporter


def _paths(recipe: Recipe) -> tuple[str, RunLayout, Path, Path, Path]:
    """The split plotted (``evaluate.split``), the run's layout, the plots folder, and the
    split's dataset file and sample bank."""
    split = recipe.evaluate.split
    layout = RunLayout(Path(recipe.run_dir))
    return (
        split,
        layout,
        layout.plots_dir(split),
        split_path(recipe.data.dir, split),
        layout.bank(split),
    )


def _manifest(recipe: Recipe, out_dir: Path, names: list[str], overwrite: bool) -> Manifest:
    """The stage's manifest, once no file of ``names`` in ``out_dir`` is a finished plot that
    ``overwrite`` does not allow to replace."""
    split = recipe.evaluate.split
    for name in names:
        check_not_finished(out_dir / name, f"{split} plot file {name}", overwrite)
    return Manifest("plot-reliability", recipe_to_dict(recipe), recipe.seed)


def run_plot_reliability(
    recipe: Recipe,
    overwrite: bool = False,
    *,
    n_images: int = 4,
    quiet: bool = False,
    allow_stale: bool = False,
) -> list[Path]:
    """Write the three figures (PNG + CSV each) and manifest.json; return the written paths.
    A bank drawn from weights that have changed since is refused unless ``allow_stale``."""
    rep = Reporter(quiet)
    split, layout, out_dir, data_path, bank_path = _paths(recipe)
    with DatasetFile(data_path) as ds:
        task = ds.info.task
    if task == "regression":
        return run_plot_regression(recipe, overwrite, quiet, allow_stale)
    names = output_names()
    manifest = _manifest(recipe, out_dir, names, overwrite)
    stale: list[str] = []
    read = _read_bank(
        data_path,
        bank_path,
        recipe.evaluate.chunk_size,
        n_images,
        rep,
        lambda: stale.extend(require_fresh(recipe, "plot-reliability", allow_stale)),
    )
    manifest.staleness(allow_stale, stale)
    ensure_dir(out_dir)
    built, extra = _segmentation_figures(read)
    written: list[Path] = []
    for stem in PLOTS:
        fig, text = built[stem]
        save_figure(fig, out_dir / f"{stem}.png")
        write_text_atomic(out_dir / f"{stem}.csv", text)
        written += [out_dir / f"{stem}.png", out_dir / f"{stem}.csv"]
    manifest.add_input(data_path, f"data.{split}")
    manifest.add_input(bank_path, "bank")
    manifest.extra.update({"split": split, **extra})
    manifest.write(out_dir, names[:-1])
    written.append(out_dir / "manifest.json")
    ece = extra["ece"]
    ece_txt = "n/a" if ece is None else f"{100 * ece:.2f}%"
    rep.line(f"plot-reliability: ECE of F {ece_txt}; wrote {len(written)} files to {out_dir}")
    return written


@dataclass
class _BankRead:
    """What the segmentation figures need from one pass over the dataset and the bank."""

    info: DatasetInfo
    stats: Any
    """`carcli.plots.stats.accumulate`'s pooled figures."""
    views: list[Any]
    """The images shown in the sample grid."""
    mode_table: list[dict[str, Any]]
    ged_key: str
    n_bank: int
    num_samples: int


def _read_bank(
    data_path: Path,
    bank_path: Path,
    chunk_size: int,
    n_images: int,
    rep: Reporter,
    check: Callable[[], None],
) -> _BankRead:
    """One pass over the split and its bank; `check` runs once both are open and valid."""
    from carcli.plots.stats import GED_SAMPLES, accumulate, image_view, select_images

    with DatasetFile(data_path, validate=True) as ds, Bank(bank_path, ds.info) as bank:
        check()
        if bank.n == 0:
            raise CarsegError(
                f"{bank_path}: the sample bank holds no images",
                hint="sample the split again with `carseg sample RECIPE --overwrite`",
            )
        stats = accumulate(ds, bank, chunk_size, rep)
        chosen = select_images(stats.label_entropy, stats.n_present, n_images)
        views = [image_view(ds, bank, pos) for pos in chosen]
        mode_table = _mode_table(ds, bank, stats.label_entropy)
        ged_key = f"ged_{min(GED_SAMPLES, bank.num_samples)}"
        return _BankRead(ds.info, stats, views, mode_table, ged_key, bank.n, bank.num_samples)


SAMPLES_COLUMNS = [
    "panel_row",
    "bank_position",
    "dataset_row",
    "label_entropy",
    "num_modes",
    "mode_weights_shown",
    "mode_sample_freq_shown",
    "sample_indices",
    "GED",  # the ged key of the bank, e.g. ged_16
    "diversity",
    "f_entropy",
]


def _segmentation_figures(r: _BankRead) -> tuple[dict[str, tuple[Any, str]], dict[str, Any]]:
    """Each figure with its CSV text, and the manifest's figures."""
    from carcli.plots import figures, grid

    info = r.info
    rel_rows = reliability_table(r.stats.reliability)
    rel = r.stats.reliability.result()
    cls_rows = class_table(r.stats.classes, info.class_names)
    smp_rows = _samples_rows(r.views, r.ged_key)
    smp_cols = [r.ged_key if c == "GED" else c for c in SAMPLES_COLUMNS]
    built = {
        "reliability": (
            figures.reliability_figure(rel_rows, rel["ece"], rel["n_pixels"]),
            to_csv(rel_rows, RELIABILITY_COLUMNS),
        ),
        "class_calibration": (
            figures.class_calibration_figure(cls_rows),
            to_csv(cls_rows, CLASS_COLUMNS),
        ),
        "mode_frequencies": (
            mode_frequency_figure(r.mode_table),
            to_csv(r.mode_table, MODE_COLUMNS),
        ),
        "samples": (
            grid.samples_figure(
                r.views, info.class_names, info.eval_classes, info.ignore_index, r.ged_key
            ),
            to_csv(smp_rows, smp_cols),
        ),
    }
    extra = {
        "n_images": r.n_bank,
        "num_samples": r.num_samples,
        "ece": rel["ece"],
        "n_pixels": rel["n_pixels"],
        "ambiguous_classes": [row["class_id"] for row in cls_rows],
        "shown_rows": [v.row for v in r.views],
    }
    return built, extra


FIT_COLUMNS = ["index", "x", "calibrator", "sample_mean", "true_mean", "samples_shown"]


MODE_PANELS = 6  # images in the mode-frequency figure


def _mode_table(ds: DatasetFile, bank: Bank, label_entropy: np.ndarray) -> list[dict[str, Any]]:
    """Mode rows of the MODE_PANELS most ambiguous images (highest label entropy)."""
    info = ds.info
    order = np.lexsort((np.arange(len(label_entropy)), -label_entropy))
    rows: list[dict[str, Any]] = []
    for panel, pos in enumerate(int(p) for p in order[:MODE_PANELS] if label_entropy[p] > 0):
        row = int(bank.index[pos])
        labels, weights = ds.read_rows("label", np.array([row]))[0], ds.weights(np.array([row]))[0]
        samples = bank.read("samples", slice(pos, pos + 1))[0]
        rows += mode_rows(
            panel,
            row,
            samples,
            labels,
            weights.astype(np.float64),
            info.num_classes,
            info.eval_classes,
            info.ignore_index,
        )
    return rows


def run_plot_regression(
    recipe: Any, overwrite: bool, quiet: bool, allow_stale: bool = False
) -> list[Path]:
    """`plot-reliability` on a regression split: fit.png (+ csv) and, when the refiner's
    metrics.jsonl logged it, loglik.png (+ csv); then manifest.json."""
    rep = Reporter(quiet)
    split, layout, out_dir, data_path, bank_path = _paths(recipe)
    metrics_path = layout.refiner / "metrics.jsonl"
    names = ["fit.png", "fit.csv", "loglik.png", "loglik.csv", "manifest.json"]
    manifest = _manifest(recipe, out_dir, names, overwrite)
    stale: list[str] = []
    fit = _read_fit(
        data_path,
        bank_path,
        lambda: stale.extend(require_fresh(recipe, "plot-reliability", allow_stale)),
    )
    manifest.staleness(allow_stale, stale)
    ensure_dir(out_dir)
    written: list[Path] = []
    samples = fit["samples"]
    title = f"{recipe.name}: {split}, {samples.shape[1]} samples per x"
    fig = fit_figure([{**{k: v for k, v in fit.items() if k != "index"}, "title": title}])
    save_figure(fig, out_dir / "fit.png")
    write_text_atomic(out_dir / "fit.csv", to_csv(_fit_rows(fit), FIT_COLUMNS))
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
            manifest.add_input(metrics_path, "refiner.metrics")
    manifest.add_input(data_path, f"data.{split}")
    manifest.add_input(bank_path, "bank")
    n_inputs = int(len(fit["x"]))
    manifest.extra.update({"split": split, "n_inputs": n_inputs, "num_samples": samples.shape[1]})
    manifest.write(out_dir, [p.name for p in written])
    written.append(out_dir / "manifest.json")
    rep.line(f"plot-reliability (regression): wrote {len(written)} files to {out_dir}")
    return written


def _read_fit(data_path: Path, bank_path: Path, check: Callable[[], None]) -> dict[str, Any]:
    """The arrays of fit.png: the data points, each input's samples, F and the true mean;
    `check` runs once both files are open."""
    from carcli.data.regression import MIXTURE_NAMES, mixture_mean_y

    with DatasetFile(data_path) as ds, Bank(bank_path, ds.info) as bank:
        check()
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
    return {
        "data_x": data_x,
        "data_y": data_y,
        "x": x,
        "samples": samples,
        "calibrator": calib,
        "true_mean": truth,
        "index": index,
    }


def _fit_rows(fit: dict[str, Any]) -> list[dict[str, Any]]:
    x, samples, calib, truth = fit["x"], fit["samples"], fit["calibrator"], fit["true_mean"]
    return [
        {
            "index": int(fit["index"][i]),
            "x": float(x[i]),
            "calibrator": float(calib[i]),
            "sample_mean": float(samples[i].mean()),
            "true_mean": None if truth is None else float(truth[i]),
            "samples_shown": " ".join(f"{v:.4f}" for v in samples[i, :SAMPLES_SHOWN]),
        }
        for i in np.argsort(x)
    ]
