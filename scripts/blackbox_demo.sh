#!/usr/bin/env bash
# Black-box conditioning on the synthetic set: a deterministic "black box" that always answers
# the most likely mode is imported through data.blackbox_dir, F is trained on image + black box,
# and evaluate reports how well F recovers the true class probabilities
# (class_calibration.max_calibrator_offset in runs/bbdemo/eval/test/metrics.json).
set -euo pipefail
recipe=${1:-recipes/blackbox_demo.yaml}
py=${PY:-.venv/bin/python}
carseg=${CARSEG:-.venv/bin/carseg}
$py scripts/blackbox_predictions.py "$recipe"
$carseg prepare "$recipe" --overwrite --quiet
scripts/cascade.sh "$recipe" bbdemo
$py - <<'PY'
import json
m = json.load(open("runs/bbdemo/eval/test/metrics.json"))
c = m["class_calibration"]
print("F (image + black box), per class: true probability, F's mean, offset")
for k, row in c["classes"].items():
    if row["calibrator_offset"] is not None:
        print(f"  class {k}: {row['true']:.4f} {row['calibrator']:.4f} {row['calibrator_offset']:.4f}")
print(f"max offset of F {c['max_calibrator_offset']:.4f}, mean {c['mean_calibrator_offset']:.4f}")
PY
