"""The tables behind the `plot-reliability` figures (the stage: carcli/stages/plot_reliability.py).

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

from typing import TYPE_CHECKING, Any

from carcli.metrics.calibration import ClassCalibration, ReliabilityBins

if TYPE_CHECKING:
    from carcli.plots.stats import ImageView

PLOTS = ("reliability", "class_calibration", "mode_frequencies", "samples")
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
