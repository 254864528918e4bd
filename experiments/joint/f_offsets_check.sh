#!/usr/bin/env bash
# Check experiments/joint/f_offsets.py against `carseg evaluate` itself, with no G: F's
# probabilities (f_offsets.py --save-probs) go into a bank with `carseg import-samples
# --calibration` (16 copies of F's argmax as the samples; they do not enter F's figures), then
# `carseg evaluate` scores it; its class_calibration.max_calibrator_offset must equal
# f_offsets.py's. Writes RUN/samples/test.h5 and RUN/eval/test (replaced with --overwrite).
#
#   experiments/joint/f_offsets_check.sh RUN DATA_DIR [data.source, default prepared]
set -euo pipefail
run=$1 data=$2 src=${3:-prepared}
py=${PY:-.venv/bin/python}
carseg=${CARSEG:-$py -m carcli}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$py experiments/joint/f_offsets.py "$run" "$data" --save-probs "$tmp/p.npy" --json "$tmp/o.json"
$py -c "import numpy as np, sys; p = np.load(sys.argv[1]); np.save(sys.argv[2], np.repeat(p.argmax(1)[:, None].astype(np.uint8), 16, 1))" "$tmp/p.npy" "$tmp/s.npy"
over=(data.source="$src" data.dir="$data" run_dir="$run" threads=1)
$carseg import-samples recipes/toy.yaml "$tmp/s.npy" --calibration "$tmp/p.npy" "${over[@]}" --split test --overwrite --quiet
$carseg evaluate recipes/toy.yaml "${over[@]}" 'evaluate.ged_counts=[16]' evaluate.hm_iou_samples=16 --overwrite --quiet
$py - "$run/eval/test/metrics.json" "$tmp/o.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["class_calibration"]
o = json.load(open(sys.argv[2]))["test"]
for name, r in (("carseg evaluate", m), ("f_offsets.py", o)):
    per = [r["classes"][k]["calibrator_offset"] for k in r["classes"]]
    print(f"{name:>16}: worst {r['max_calibrator_offset']!r}, per class {per}")
same = m["max_calibrator_offset"] == o["max_calibrator_offset"]
print("identical" if same else "DIFFERENT")
sys.exit(0 if same else 1)
PY
