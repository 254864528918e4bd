"""`plot-reliability`: figures of F's calibration and G's samples, from the dataset and the bank.

Writes into ``run_dir/plots/<split>/`` (split = ``evaluate.split``), each PNG with a CSV of
the plotted numbers beside it, then ``manifest.json``:

* ``reliability``: F's reliability diagram (10 equal bins of max probability; accuracy = the
  label probability of F's argmax), the gap to the mean confidence, pixel histogram, ECE;
* ``class_calibration``: per class with ambiguous pixels (0 < q_k < 1), the true probability,
  F's mean probability and G's sample frequency there (the paper's Fig. 5);
* ``samples``: the most ambiguous images (mean entropy of the label distribution) and the
  least ambiguous one: input, annotations with weights, F, F's entropy, G's mean, samples.

Nothing is read from ``metrics.json``: the figures are recomputed from the bank, streamed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carcli.artefacts.run import (
    Manifest,
    RunLayout,
    atomic_path,
    check_not_finished,
    ensure_dir,
    write_text_atomic,
)
from carcli.data.dataset import DatasetFile, split_path
from carcli.errors import CarsegError
from carcli.metrics.calibration import ClassCalibration, ReliabilityBins
from carcli.recipe.load import recipe_to_dict
from carcli.recipe.schema import Recipe
from carcli.sampling.bank import Bank
from carcli.ui import Reporter

if TYPE_CHECKING:
    from carcli.plots.stats import ImageView

PLOTS = ("reliability", "class_calibration", "samples")
RELIABILITY_COLUMNS = [
    "bin",
    "lower",
    "upper",
    "count",
    "fraction",
    "confidence",
    "accuracy",
    "gap",
]
CLASS_COLUMNS = [
    "class_id",
    "class_name",
    "n_pixels",
    "true",
    "calibrator",
    "refiner",
    "calibrator_offset",
    "refiner_offset",
]


def output_names() -> list[str]:
    """Files written by the stage, in writing order (manifest.json last)."""
    return [f"{stem}.{ext}" for stem in PLOTS for ext in ("png", "csv")] + ["manifest.json"]


def reliability_table(bins: ReliabilityBins) -> list[dict[str, Any]]:
    """One row per bin: edges, pixel count and share, mean confidence, mean accuracy, gap."""
    res = bins.result()
    total = max(1, res["n_pixels"])
    rows = []
    for b in range(res["n_bins"]):
        conf, acc = res["confidence"][b], res["accuracy"][b]
        rows.append(
            {
                "bin": b,
                "lower": res["edges"][b],
                "upper": res["edges"][b + 1],
                "count": res["count"][b],
                "fraction": res["count"][b] / total,
                "confidence": conf,
                "accuracy": acc,
                "gap": None if conf is None else acc - conf,
            }
        )
    return rows


def class_table(cc: ClassCalibration, class_names: list[str]) -> list[dict[str, Any]]:
    """One row per class with ambiguous pixels: true q, F's mean p, G's frequency, offsets."""
    out = cc.result()
    res = out.get("classes") or out.get("per_class") or {}  # the key was renamed once
    rows = []
    for k in range(cc.num_classes):
        r = res[str(k)]
        if r["n_pixels"] > 0:
            name = class_names[k] if k < len(class_names) else str(k)
            rows.append({"class_id": k, "class_name": name, **r})
    return rows


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV text (None as an empty cell, floats at full precision)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def save_figure(fig: Any, path: Path) -> None:
    """Save a Figure as PNG atomically (temporary name, then rename)."""
    from carcli.plots.figures import DPI

    with atomic_path(path) as tmp:
        try:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.03)
        except OSError as exc:
            raise CarsegError(f"cannot write {path}: {exc.strerror or exc}") from None


def _samples_rows(views: list[ImageView], ged_key: str) -> list[dict[str, Any]]:
    """One CSV row per shown image: rows, shown modes and samples, per-image figures."""
    rows = []
    for i, v in enumerate(views):
        rows.append(
            {
                "panel_row": i,
                "bank_position": v.position,
                "dataset_row": v.row,
                "label_entropy": v.figures["label_entropy"],
                "num_modes": v.num_modes,
                "mode_weights_shown": ";".join(f"{w:.6g}" for w in v.mode_weights),
                "mode_sample_freq_shown": ";".join(f"{f:.6g}" for f in v.mode_freq),
                "sample_indices": ";".join(str(j) for j in v.sample_idx),
                ged_key: v.figures.get(ged_key),
                "diversity": v.figures.get("diversity"),
                "f_entropy": v.figures.get("f_entropy"),
            }
        )
    return rows


def run_plot_reliability(
    recipe: Recipe, overwrite: bool = False, *, n_images: int = 4, quiet: bool = False
) -> list[Path]:
    """Write the three figures (PNG + CSV each) and manifest.json; return the written paths."""
    from carcli.plots import figures, grid
    from carcli.plots.stats import GED_SAMPLES, accumulate, image_view, select_images

    rep = Reporter(quiet)
    split = recipe.evaluate.split
    layout = RunLayout(Path(recipe.run_dir))
    out_dir = layout.plots_dir(split)
    data_path, bank_path = split_path(recipe.data.dir, split), layout.bank(split)
    with DatasetFile(data_path) as ds:
        task = ds.info.task
    if task == "regression":
        from carcli.plots.regression import run_plot_regression

        return run_plot_regression(recipe, overwrite, quiet)
    names = output_names()
    for name in names:
        check_not_finished(out_dir / name, f"{split} plot file {name}", overwrite)
    manifest = Manifest("plot-reliability", recipe_to_dict(recipe), recipe.seed)
    with DatasetFile(data_path, validate=True) as ds, Bank(bank_path, ds.info) as bank:
        info = ds.info
        if bank.n == 0:
            raise CarsegError(
                f"{bank_path}: the sample bank holds no images",
                hint="sample the split again with `carseg sample RECIPE --overwrite`",
            )
        stats = accumulate(ds, bank, recipe.evaluate.chunk_size, rep)
        chosen = select_images(stats.label_entropy, stats.n_present, n_images)
        views = [image_view(ds, bank, pos) for pos in chosen]
        ged_key = f"ged_{min(GED_SAMPLES, bank.num_samples)}"
        n_bank, m = bank.n, bank.num_samples

    rel_rows = reliability_table(stats.reliability)
    rel = stats.reliability.result()
    cls_rows = class_table(stats.classes, info.class_names)
    smp_rows = _samples_rows(views, ged_key)
    smp_cols = [
        "panel_row",
        "bank_position",
        "dataset_row",
        "label_entropy",
        "num_modes",
        "mode_weights_shown",
        "mode_sample_freq_shown",
        "sample_indices",
        ged_key,
        "diversity",
        "f_entropy",
    ]
    ensure_dir(out_dir)
    built = {
        "reliability": (
            figures.reliability_figure(rel_rows, rel["ece"], rel["n_pixels"]),
            to_csv(rel_rows, RELIABILITY_COLUMNS),
        ),
        "class_calibration": (
            figures.class_calibration_figure(cls_rows),
            to_csv(cls_rows, CLASS_COLUMNS),
        ),
        "samples": (
            grid.samples_figure(
                views, info.class_names, info.eval_classes, info.ignore_index, ged_key
            ),
            to_csv(smp_rows, smp_cols),
        ),
    }
    written: list[Path] = []
    for stem in PLOTS:
        fig, text = built[stem]
        save_figure(fig, out_dir / f"{stem}.png")
        write_text_atomic(out_dir / f"{stem}.csv", text)
        written += [out_dir / f"{stem}.png", out_dir / f"{stem}.csv"]
    for p in (data_path, bank_path):
        manifest.add_input(p)
    manifest.extra = {
        "split": split,
        "n_images": n_bank,
        "num_samples": m,
        "ece": rel["ece"],
        "n_pixels": rel["n_pixels"],
        "ambiguous_classes": [r["class_id"] for r in cls_rows],
        "shown_rows": [v.row for v in views],
    }
    manifest.write(out_dir, names[:-1])
    written.append(out_dir / "manifest.json")
    ece_txt = "n/a" if rel["ece"] is None else f"{100 * rel['ece']:.2f}%"
    rep.line(f"plot-reliability: ECE of F {ece_txt}; wrote {len(written)} files to {out_dir}")
    return written
